"""NodeClassifier: the classify-nodes recipe (semi-supervised node classification)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from matplotlib import colormaps
from matplotlib.figure import Figure

from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.export import Signature
from dltoolkit.core.metrics import classification_metrics
from dltoolkit.core.optim import build_optimizer
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.replicas import per_replica_dataset
from dltoolkit.core.report import Report, plot_confusion_matrix
from dltoolkit.core.training import Plan
from dltoolkit.data.graph_batches import NeighbourSampler, full_batch, replica_share
from dltoolkit.data.graphs import (
    Graph,
    check_trainable,
    from_networkx,
    is_networkx,
    load_planetoid,
    load_tables,
    with_split,
)
from dltoolkit.data.samples import SAMPLES
from dltoolkit.models.graph import RawGraphModel, RowNormalize, build_node_model
from dltoolkit.specs.classify_nodes import SPEC


@dataclass
class _Prepared:
    graph: Graph
    sampled: bool
    held_out: str = "test"
    probabilities: np.ndarray | None = None


class NodeClassifier(Recipe):
    """Classify the nodes of a graph with a GCN, GAT, GraphSAGE, GCNII or APPNP model.

    >>> NodeClassifier(model="gat").fit("planetoid:./planetoid").predict()
    """

    spec = SPEC
    learned = ("class_names_", "num_features_")

    def __init__(self, **params):
        super().__init__(**params)
        self.class_names_: list[str] = []
        self.num_features_: int = 0
        self.graph_: Graph | None = None

    # -- data -----------------------------------------------------------------------------

    def load_graph(self, data, class_names=None, labelled=True) -> Graph:
        """Read `data` (see the README) into a Graph; `class_names` fixes the label vocabulary."""
        c = self.config
        if isinstance(data, Graph):
            return data
        if is_networkx(data):
            return from_networkx(data, c.label_col, class_names)
        if isinstance(data, tuple | list) and len(data) == 2:
            return load_tables(
                *data,
                id_col=c.id_col,
                label_col=c.label_col,
                directed=c.directed,
                class_names=class_names,
                labelled=labelled,
            )
        if not isinstance(data, str | Path):
            raise DataError(
                f"cannot read graph data of type {type(data).__name__}; pass a node "
                "table path (with edges=...), planetoid:DIR, a networkx graph or a sample name"
            )
        text, table = str(data), _node_table(data)
        if table is not None and c.edges is None:
            raise ConfigError(
                f"'{table}' is a node table: --nodes and --edges go together; pass the edge "
                "table too (--edges FILE, edges=...)"
            )
        if text.startswith("planetoid:"):
            return load_planetoid(text.removeprefix("planetoid:"), c.name, class_names)
        if text in SAMPLES and SAMPLES[text].kind == "graph":
            return from_networkx(
                SAMPLES[text].loader(), "label", class_names, SAMPLES[text].description
            )
        folder = Path(text)
        return load_tables(
            table or folder / "nodes.csv",
            c.edges if table else folder / "edges.csv",
            id_col=c.id_col,
            label_col=c.label_col,
            directed=c.directed,
            class_names=class_names,
            labelled=labelled,
        )

    def _prepare(self, data, console) -> _Prepared:
        c = self.config
        if c.edges is not None and _node_table(data) is None:
            raise ConfigError(
                "--edges goes with a node table as the data (--nodes FILE --edges FILE); "
                "pass the node table too, or drop --edges"
            )
        graph = with_split(self.load_graph(data), c.val_split, c.test_split, c.seed)
        check_trainable(graph)
        sampled = c.batching == "sampled" or (
            c.batching == "auto" and graph.num_nodes > c.full_batch_max_nodes
        )
        if console is not None:
            counts = ", ".join(f"{k} {int(m.sum())}" for k, m in graph.masks.items())
            console.print(
                f"data: {graph.description}; {graph.num_nodes} nodes, {len(graph.edges)} "
                f"directed edges, {graph.features.shape[1]} features, "
                f"{len(graph.class_names)} classes; {counts}; "
                f"{'sampled mini-batches' if sampled else 'full batch'}"
            )
        return _Prepared(graph, sampled)

    # -- training -------------------------------------------------------------------------

    def _feature_norm(self, features: np.ndarray):
        kind = self.config.feature_norm
        if kind == "auto":
            counts = (features >= 0).all() and np.array_equal(features, np.round(features))
            kind = "row" if counts else "standard"
        if kind == "row":
            return RowNormalize(name="row_normalize")
        if kind == "standard":
            layer = keras.layers.Normalization(name="standardize")
            layer.adapt(features)
            return layer
        return None

    def _adopt(self, prepared: _Prepared, run) -> None:
        graph = prepared.graph
        self.graph_, self.class_names_ = graph, graph.class_names
        self.num_features_ = graph.features.shape[1]

    def _plan(self, prepared: _Prepared, rt, run) -> Plan:
        c, graph = self.settings, prepared.graph
        labelled = graph.labels >= 0
        train, val = (
            graph.masks["train"] & labelled,
            graph.masks.get("val", np.zeros_like(labelled)) & labelled,
        )
        hops = c.propagation_steps if c.model == "appnp" else c.layers  # the model's reach
        sampler = NeighbourSampler(graph, c.fanout, hops) if prepared.sampled else None

        def nodes(mask: np.ndarray, shuffle: bool):
            """Replicas split the nodes of `mask`: each runs the whole graph (or its own
            sampled subgraphs) with the loss over its share; gradients are summed."""

            def make(replica: int, replicas: int) -> tf.data.Dataset:
                share = replica_share(mask, replica, replicas)
                if sampler is not None:
                    return sampler.dataset(
                        share, max(1, c.batch_size // replicas), c.seed, shuffle
                    ).repeat()
                return full_batch(graph, share, mask.sum() / replicas).repeat()

            return per_replica_dataset(rt.strategy, make)

        steps, val_steps = (
            math.ceil(m.sum() / c.batch_size) if sampler else 1 for m in (train, val)
        )
        return Plan(
            train=nodes(train, True),
            val=nodes(val, False) if val.any() else None,
            steps=steps,
            epochs=c.epochs,
            validation_steps=val_steps,
            repeating=True,
            # the loss holds the layers' L2 penalty, which grows with depth (GCNII's 64
            # layers): epochs are ranked and stopped on cross-entropy, as the papers and PyG do
            best_by="cross_entropy",
        )

    def _build(self, prepared: _Prepared, plan: Plan) -> keras.Model:
        """The network on canonical edge lists (whole graph or sampled subgraphs); after
        training it is wrapped for raw edges (`_fitted`)."""
        c = self.settings
        return build_node_model(
            c.model,
            self.num_features_,
            len(self.class_names_),
            hidden=c.hidden,
            layers=c.layers,
            heads=c.heads,
            dropout=c.dropout,
            attention_dropout=c.attention_dropout,
            weight_decay=c.weight_decay,
            conv_weight_decay=c.conv_weight_decay,
            alpha=c.alpha,
            identity_lambda=c.identity_lambda,
            propagation_steps=c.propagation_steps,
            propagation_dropout=c.propagation_dropout,
            feature_norm=self._feature_norm(prepared.graph.features),
        )

    def _optimizer(self, plan: Plan, epochs: int, lr_scale: float):
        # weight decay is the layers' L2 penalty, so the optimizer adds none
        config = dataclasses.replace(self.settings, weight_decay=0.0)
        return build_optimizer(config, plan.steps, epochs, scale=lr_scale)

    def _compile_args(self) -> dict:
        return {
            "loss": keras.losses.SparseCategoricalCrossentropy(),
            "weighted_metrics": [
                keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                keras.metrics.SparseCategoricalCrossentropy(name="cross_entropy"),
            ],
        }

    def _fitted(self, prepared: _Prepared) -> None:
        self.model_ = RawGraphModel(self.model_, self.config.directed, name="node_classifier")

    # -- evaluation and prediction ----------------------------------------------------------

    def predict_proba(self, graph: Graph) -> np.ndarray:
        """Class probabilities (N, classes) for every node of `graph` (one full-graph pass)."""
        self._require_model()
        if graph.features.shape[1] != self.num_features_:
            raise DataError(
                f"the nodes have {graph.features.shape[1]} features but the model was "
                f"trained on {self.num_features_}; use the training graph's feature columns"
            )
        raw = {"node_features": graph.features, "edges": graph.edges, "edge_weights": graph.weights}
        return keras.ops.convert_to_numpy(self.model_(raw, training=False))

    def _metrics(self, graph: Graph, probabilities: np.ndarray, split: str) -> dict:
        mask = graph.masks.get(split, np.ones(graph.num_nodes, bool)) & (graph.labels >= 0)
        metrics = classification_metrics(
            graph.labels[mask], probabilities[mask], self.class_names_, top_k=3
        )
        return {**metrics, "split": split}

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        graph = prepared.graph
        labelled = [s for s in ("test", "val") if graph.masks.get(s, np.zeros(1)).any()]
        prepared.held_out = self._held_out([*labelled, "train"])
        prepared.probabilities = self.predict_proba(graph)
        return self._metrics(graph, prepared.probabilities, prepared.held_out)

    def evaluate(self, data) -> dict:
        """Metrics (accuracy, macro-F1, per-class, confusion matrix) on the test nodes of `data`
        (all labelled nodes when it has no split)."""
        graph = self.load_graph(data, class_names=self.class_names_)
        split = "test" if "test" in graph.masks else "all"
        return self._metrics(graph, self.predict_proba(graph), split)

    def predict(self, inputs=None, *, nodes=None, edges=None) -> list[dict]:
        """Labels for nodes: with no inputs, every unlabelled node of the training graph (every
        node when all have labels); else every node of the given graph (inductive), e.g.
        `predict(nodes="new_nodes.csv", edges="new_edges.csv")`."""
        self._require_model()
        if isinstance(inputs, list | tuple) and len(inputs) == 1:
            inputs = inputs[0]
        if nodes is not None or edges is not None:
            if nodes is None and inputs is None or edges is None:
                raise DataError(
                    "inductive prediction needs both a node table and an edge table "
                    "(--nodes and --edges)"
                )
            graph = self.load_graph(
                (nodes or inputs, edges), class_names=self.class_names_, labelled=False
            )
            rows = np.arange(graph.num_nodes)
        else:
            graph = (
                self._training_graph()
                if inputs is None
                else self.load_graph(inputs, class_names=self.class_names_, labelled=False)
            )
            unlabelled = np.flatnonzero(graph.labels < 0)
            rows = unlabelled if inputs is None and len(unlabelled) else np.arange(graph.num_nodes)
        probabilities = self.predict_proba(graph)[rows]
        k = min(3, len(self.class_names_))
        results = []
        for node, probs in zip(graph.ids[rows], probabilities, strict=True):
            order = np.argsort(-probs)[:k]
            results.append(
                {
                    "node": str(node),
                    "label": self.class_names_[order[0]],
                    "probability": float(probs[order[0]]),
                    "top_k": [
                        {"label": self.class_names_[i], "probability": float(probs[i])}
                        for i in order
                    ],
                }
            )
        return results

    def _training_graph(self) -> Graph:
        if self.graph_ is None:
            if not isinstance(self.data_, str):
                raise DataError("this run was trained on in-memory data; pass the graph to predict")
            self.graph_ = self.load_graph(self.data_, class_names=self.class_names_)
        return self.graph_

    def embed(self, graph: Graph) -> np.ndarray:
        """The learned node embeddings (the input of the output layer), (N, hidden)."""
        self._require_model()
        network = self.model_.network
        embedder = keras.Model(network.inputs, network.get_layer("embedding").output)
        return keras.ops.convert_to_numpy(embedder(graph.inputs(), training=False))

    # -- persistence and export ---------------------------------------------------------------

    def _outputs(self, probabilities) -> dict:
        probabilities = tf.cast(probabilities, tf.float32)
        best = tf.argmax(probabilities, axis=1)
        return {
            "label": tf.gather(tf.constant(self.class_names_), best),
            "score": tf.reduce_max(probabilities, axis=1),
            "probabilities": probabilities,
        }

    def _signatures(self) -> dict[str, Signature]:
        graph = [
            tf.TensorSpec([None, self.num_features_], tf.float32, name="node_features"),
            tf.TensorSpec([None, 2], tf.int64, name="edges"),
        ]
        weights = tf.TensorSpec([None], tf.float32, name="edge_weights")
        return {
            "serving_default": Signature(graph, _raw_graph, self._outputs),
            "predict_weighted": Signature([*graph, weights], _raw_graph, self._outputs),
        }

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        m, graph = self.metrics_, prepared.graph
        counts = ", ".join(f"{k}: {int(v.sum())}" for k, v in graph.masks.items())
        report.text(
            "Data",
            f"{graph.description}; {graph.num_nodes} nodes, {len(graph.edges)} directed "
            f"edges, {graph.features.shape[1]} features; {counts}; "
            f"{'sampled mini-batches' if prepared.sampled else 'full batch'}",
        )
        report.table(
            f"Metrics on the {prepared.held_out} nodes",
            {k: v for k, v in m.items() if isinstance(v, int | float)},
        )
        report.table("Per-class metrics", [{"class": k, **v} for k, v in m["per_class"].items()])
        report.figure(
            "Confusion matrix",
            plot_confusion_matrix(np.array(m["confusion_matrix"]), self.class_names_),
            "confusion_matrix",
        )
        report.figure(
            "Learned node embeddings (t-SNE), coloured by class",
            self._embedding_figure(graph),
            "embeddings",
        )

    def _embedding_figure(self, graph: Graph, limit: int = 1000) -> Figure:
        """t-SNE of the embeddings of up to `limit` nodes; unlabelled nodes in grey."""
        from sklearn.manifold import TSNE

        rng = np.random.default_rng(self.config.seed)
        rows = np.sort(rng.permutation(graph.num_nodes)[:limit])
        points = TSNE(
            2, perplexity=min(30.0, (len(rows) - 1) / 3), init="pca", random_state=self.config.seed
        ).fit_transform(self.embed(graph)[rows])
        labels = graph.labels[rows]
        fig = Figure(figsize=(7, 6))
        ax = fig.subplots()
        ax.scatter(*points[labels < 0].T, s=6, c="lightgrey", label="unlabelled")
        for i, name in enumerate(self.class_names_):
            ax.scatter(*points[labels == i].T, s=8, label=name, color=colormaps["tab20"](i % 20))
        ax.legend(fontsize=7, markerscale=2)
        ax.set_xticks([])
        ax.set_yticks([])
        return fig


def _raw_graph(*tensors) -> dict:
    """A signature's positional inputs as the saved model's input dict (see RawGraphModel)."""
    return dict(zip(("node_features", "edges", "edge_weights"), tensors, strict=False))


def _node_table(data) -> Path | None:
    """The path of `data` when it names a node table file (read with the `edges` table)."""
    if not isinstance(data, str | Path):
        return None
    text = str(data)
    if text.startswith("planetoid:") or (text in SAMPLES and SAMPLES[text].kind == "graph"):
        return None
    path = Path(text)
    return None if path.is_dir() else path
