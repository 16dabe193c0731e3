"""Graph data for node classification: node + edge CSV tables, Planetoid files, networkx graphs.

Everything becomes a `Graph`: node ids, a dense feature matrix, an edge list of row
indices in canonical form (see `canonical_edges`), integer labels (-1: unlabelled) and,
when the source gives them, train/val/test masks.
"""

from __future__ import annotations

import pickle
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from dltoolkit.core.errors import DataError

SPLITS = ("train", "val", "test")
PLANETOID_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph")


@dataclass
class Graph:
    """A node-labelled graph; `edges` (E, 2) int32 index rows of `features`."""

    ids: np.ndarray
    features: np.ndarray
    edges: np.ndarray
    weights: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    description: str
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return len(self.ids)

    def inputs(self) -> dict[str, np.ndarray]:
        """The model's inputs for the whole graph."""
        return {"features": self.features, "edges": self.edges, "edge_weights": self.weights}


def canonical_edges(edges, weights, num_nodes, directed: bool):
    """Edge list as the layers expect it: both directions unless `directed`, self loops
    dropped (the layers add their own), duplicates merged keeping the largest weight.

    TensorFlow ops, so the exported model does exactly the same inside its graph.
    """
    edges = tf.reshape(tf.cast(edges, tf.int64), (-1, 2))
    weights = tf.cast(weights, tf.float32)
    sources, targets = edges[:, 0], edges[:, 1]
    if not directed:
        sources, targets = tf.concat([sources, targets], 0), tf.concat([targets, sources], 0)
        weights = tf.concat([weights, weights], 0)
    keep = sources != targets
    n = tf.cast(num_nodes, tf.int64)
    keys, index = tf.unique(tf.boolean_mask(sources * n + targets, keep))
    weights = tf.math.unsorted_segment_max(tf.boolean_mask(weights, keep), index, tf.size(keys))
    edges = tf.cast(tf.stack([keys // n, keys % n], axis=1), tf.int32)
    return edges, weights


def make_graph(
    ids,
    features,
    edge_ids,
    weights,
    labels,
    *,
    directed: bool,
    description: str,
    class_names: list[str] | None = None,
    masks: dict | None = None,
) -> Graph:
    """Check and assemble a Graph from node ids, features, (source id, target id) pairs and
    raw labels (None/NaN: unlabelled). `class_names` fixes the label vocabulary."""
    ids = np.asarray([str(i) for i in ids])
    duplicated = pd.Index(ids)[pd.Index(ids).duplicated()].unique()
    if len(duplicated):
        raise DataError(f"duplicate node ids: {_few(duplicated)}; every node id must be unique")
    position = pd.Series(np.arange(len(ids)), index=ids)
    edge_ids = np.asarray(edge_ids, dtype=object).reshape(-1, 2).astype(str)
    unknown = pd.unique(edge_ids[~np.isin(edge_ids, ids)])
    if len(unknown):
        raise DataError(
            f"edges reference {len(unknown)} unknown node id(s): {_few(unknown)}; "
            "every edge endpoint must be a node id in the node table"
        )
    index = position.loc[edge_ids.ravel()].to_numpy().reshape(-1, 2)
    weights = (
        np.ones(len(index), np.float32) if weights is None else np.asarray(weights, np.float32)
    )
    edges, weights = canonical_edges(index, weights, len(ids), directed)
    codes, class_names = encode_labels(labels, class_names)
    return Graph(
        ids,
        np.asarray(features, np.float32),
        edges.numpy(),
        weights.numpy(),
        codes,
        class_names,
        description,
        masks or {},
    )


def encode_labels(labels, class_names: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Integer codes (-1 for missing) and the sorted class names (or the given ones)."""
    series = pd.Series(labels, dtype=object)
    present = series.notna() & (series.astype(str).str.strip() != "")
    text = series[present].astype(str)
    if class_names is None:
        class_names = sorted(text.unique(), key=_natural)
    lookup = {name: i for i, name in enumerate(class_names)}
    unseen = sorted(set(text) - set(lookup))
    if unseen:
        raise DataError(
            f"labels the model was not trained on: {_few(unseen)}; "
            f"known classes: {_few(class_names)}"
        )
    codes = np.full(len(series), -1, np.int32)
    codes[present.to_numpy()] = [lookup[t] for t in text]
    return codes, list(class_names)


def _natural(name: str):
    return (0, float(name), "") if _is_number(name) else (1, 0.0, name)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _few(values, limit: int = 5) -> str:
    values = [str(v) for v in values]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(repr(v) for v in values[:limit]) + more


# -- node and edge tables -----------------------------------------------------------------


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV/TSV/Parquet/JSONL table, or a one-line DataError."""
    if not path.is_file():
        raise DataError(f"{what} file '{path}' does not exist")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        if path.suffix.lower() == ".jsonl":
            return pd.read_json(path, lines=True)
        return pd.read_csv(path, sep=None, engine="python")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {what} file '{path}': {err}") from None


def _column(table: pd.DataFrame, name: str | None, fallback: int, what: str, path: Path) -> str:
    if name is None:
        return table.columns[fallback]
    if name not in table.columns:
        raise DataError(
            f"{what} column '{name}' is not in '{path}'; columns: {_few(table.columns, 12)}"
        )
    return name


def node_features(table: pd.DataFrame, columns: list[str], path: Path) -> np.ndarray:
    """Numeric feature columns; a column of space-separated word indices is a sparse
    bag of words ("3 17 204" sets features 3, 17 and 204)."""
    blocks = []
    for name in columns:
        values = table[name]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            if values.isna().any():
                raise DataError(
                    f"feature column '{name}' of '{path}' has missing values (NaN); fill or drop them"
                )
            blocks.append(values.to_numpy(np.float32)[:, None])
        elif (bag := _bag_of_words(values)) is not None:
            blocks.append(bag)
        else:
            bad = values[pd.to_numeric(values, errors="coerce").isna()].iloc[0]
            raise DataError(
                f"feature column '{name}' of '{path}' is not numeric (e.g. {bad!r}); "
                "features must be numbers or space-separated word indices"
            )
    if not blocks:
        return np.zeros((len(table), 0), np.float32)
    return np.concatenate(blocks, axis=1)


def _bag_of_words(values: pd.Series) -> np.ndarray | None:
    tokens = values.fillna("").astype(str).str.split()
    flat = [t for row in tokens for t in row]
    if not flat or not all(t.isdigit() for t in flat):
        return None
    bag = np.zeros((len(values), max(int(t) for t in flat) + 1), np.float32)
    for row, words in enumerate(tokens):
        bag[row, [int(w) for w in words]] = 1.0
    return bag


def load_tables(
    nodes_path,
    edges_path,
    *,
    id_col=None,
    label_col=None,
    directed=False,
    class_names=None,
    labelled=True,
) -> Graph:
    """A graph from a node table (id, features..., label, optional split) and an edge table
    (source, target, optional weight; the first two columns unless named so). Unless
    `labelled`, the label column may be absent (nodes to predict)."""
    nodes_path, edges_path = Path(nodes_path), Path(edges_path)
    nodes = read_table(nodes_path, "node")
    id_col = _column(
        nodes, id_col or ("id" if "id" in nodes.columns else None), 0, "node id", nodes_path
    )
    label_col = label_col or "label"
    if labelled or label_col in nodes.columns:
        label_col = _column(nodes, label_col, 0, "label", nodes_path)
    split = nodes["split"].astype(str).str.lower().str.strip() if "split" in nodes.columns else None
    columns = [c for c in nodes.columns if c not in (id_col, label_col, "split")]
    features = node_features(nodes, columns, nodes_path)
    edges = read_table(edges_path, "edge")
    if edges.shape[1] < 2:
        raise DataError(f"edge file '{edges_path}' needs a source and a target column")
    ends = (
        ["source", "target"]
        if {"source", "target"} <= set(edges.columns)
        else list(edges.columns[:2])
    )
    weights = None
    if "weight" in edges.columns:
        weights = pd.to_numeric(edges["weight"], errors="coerce")
        if weights.isna().any():
            raise DataError(f"edge file '{edges_path}': column 'weight' must be numeric")
    masks = {}
    if split is not None:
        bad = sorted(set(split) - set(SPLITS))
        if bad:
            raise DataError(
                f"column 'split' of '{nodes_path}' has {_few(bad)}; use train, val or test"
            )
        masks = {s: (split == s).to_numpy() for s in SPLITS if (split == s).any()}
    labels = nodes[label_col] if label_col in nodes.columns else [None] * len(nodes)
    return make_graph(
        nodes[id_col],
        features,
        edges[ends].to_numpy(),
        weights,
        labels,
        directed=directed,
        description=f"nodes {nodes_path.name}, edges {edges_path.name}",
        class_names=class_names,
        masks=masks,
    )


# -- Planetoid ----------------------------------------------------------------------------


def load_planetoid(folder, name: str | None = None, class_names=None) -> Graph:
    """Planetoid `ind.<name>.*` files with their public split (Yang et al. 2016).

    Train: the first len(y) nodes; val: the next 500; test: the ids in test.index. Nodes
    outside the three count as unlabelled, as in the semi-supervised protocol.
    """
    folder = Path(folder)
    name = name or _planetoid_name(folder)
    parts = {}
    for part in PLANETOID_PARTS:
        path = folder / f"ind.{name}.{part}"
        if not path.is_file():
            raise DataError(
                f"Planetoid file '{path}' is missing; a Planetoid folder holds "
                f"ind.{name}.{{{','.join(PLANETOID_PARTS)},test.index}}"
            )
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parts[part] = pickle.load(fh, encoding="latin1")
    test_index = np.loadtxt(folder / f"ind.{name}.test.index", dtype=np.int64)
    n_train, n_all = parts["y"].shape[0], parts["allx"].shape[0]
    n = max(int(test_index.max()) + 1, n_all + len(test_index))
    features = np.zeros((n, parts["allx"].shape[1]), np.float32)
    onehot = np.zeros((n, parts["ally"].shape[1]), np.float32)
    features[:n_all], onehot[:n_all] = _dense(parts["allx"]), parts["ally"]
    features[test_index], onehot[test_index] = (
        _dense(parts["tx"]),
        parts["ty"],
    )  # tx[i] is node test_index[i]
    masks = {s: np.zeros(n, bool) for s in SPLITS}
    masks["train"][:n_train] = True
    masks["val"][n_train : n_train + 500] = True
    masks["test"][test_index] = True
    labeled = np.any(list(masks.values()), axis=0) & (onehot.sum(1) > 0)
    labels = np.where(labeled, onehot.argmax(1).astype(object), None)
    pairs = [(s, t) for s, targets in parts["graph"].items() for t in targets]
    return make_graph(
        np.arange(n),
        features,
        np.array(pairs),
        None,
        labels,
        directed=False,
        description=f"Planetoid {name} ({folder})",
        class_names=class_names,
        masks=masks,
    )


def _planetoid_name(folder: Path) -> str:
    names = sorted(p.name.split(".")[1] for p in folder.glob("ind.*.x"))
    if len(names) != 1:
        found = (
            f"several data sets ({', '.join(names)}); pass --name" if names else "no ind.*.x file"
        )
        raise DataError(f"Planetoid folder '{folder}': {found}")
    return names[0]


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.todense() if hasattr(matrix, "todense") else matrix, np.float32)


# -- networkx -----------------------------------------------------------------------------


def from_networkx(
    graph, label_col: str | None = None, class_names=None, description="networkx graph"
) -> Graph:
    """A networkx graph: labels from node attribute `label_col` (default "label"), features
    from a "features" vector attribute or the other numeric attributes, else one-hot node ids
    (featureless: such a model only predicts for the graph it was trained on)."""
    nodes = list(graph.nodes)
    attrs = [graph.nodes[v] for v in nodes]
    label_col = label_col or "label"
    if all("features" in a for a in attrs):
        features = np.array([np.asarray(a["features"], np.float32) for a in attrs])
    else:
        keys = sorted({k for a in attrs for k, v in a.items() if k != label_col and _numeric(v)})
        features = np.array([[float(a.get(k, 0.0)) for k in keys] for a in attrs], np.float32)
        if not keys:
            features = np.eye(len(nodes), dtype=np.float32)
    edges = [(u, v) for u, v in graph.edges()]
    weights = [float(graph.edges[u, v].get("weight", 1.0)) for u, v in edges]
    return make_graph(
        nodes,
        features.reshape(len(nodes), -1),
        np.array(edges, dtype=object),
        weights,
        [a.get(label_col) for a in attrs],
        directed=graph.is_directed(),
        description=description,
        class_names=class_names,
    )


def _numeric(value) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def is_networkx(data) -> bool:
    nx = sys.modules.get("networkx")
    return nx is not None and isinstance(data, nx.Graph)


# -- splits and checks ----------------------------------------------------------------------


def with_split(graph: Graph, val: float, test: float, seed: int) -> Graph:
    """Keep the graph's masks, or split its labelled nodes stratified into train/val/test."""
    if graph.masks:
        return graph
    from sklearn.model_selection import train_test_split

    labelled = np.flatnonzero(graph.labels >= 0)
    parts = {"train": labelled}
    for name, fraction in (("test", test), ("val", val / max(1e-9, 1 - test))):
        rest = parts["train"]
        count = int(round(fraction * len(rest)))
        if fraction <= 0 or count < 1 or len(rest) - count < 1:
            continue
        stratify = (
            graph.labels[rest]
            if min(np.bincount(graph.labels[rest])[np.unique(graph.labels[rest])]) > 1
            else None
        )
        parts["train"], parts[name] = train_test_split(
            rest, test_size=count, random_state=seed, stratify=stratify
        )
    masks = {}
    for name, index in parts.items():
        masks[name] = np.zeros(graph.num_nodes, bool)
        masks[name][index] = True
    return replace(graph, masks=masks)


def check_trainable(graph: Graph) -> None:
    """Reject graphs a node classifier cannot learn from (one-line DataErrors)."""
    if not (graph.labels >= 0).any():
        raise DataError(
            f"{graph.description}: no labelled nodes; give some nodes a label to learn from"
        )
    if graph.features.shape[1] == 0:
        raise DataError(f"{graph.description}: the nodes have no feature columns")
    train = graph.masks.get("train", graph.labels >= 0) & (graph.labels >= 0)
    if not train.any():
        raise DataError(f"{graph.description}: no labelled node in the train split")
    seen = set(graph.labels[train])
    for split in ("val", "test"):
        mask = graph.masks.get(split)
        if mask is None:
            continue
        missing = sorted(set(graph.labels[mask & (graph.labels >= 0)]) - seen)
        if missing:
            names = _few(graph.class_names[i] for i in missing)
            raise DataError(
                f"class(es) {names} have labelled nodes only in {split}, none in train; "
                "move some of them to the train split"
            )
    if len(seen) < 2:
        raise DataError(
            f"{graph.description}: the training nodes have only one class; need at least two"
        )
