"""Classify graph nodes: `NodeClassifier`'s parameters and its `dltoolkit classify-nodes` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import SCHEDULES, TrainConfig
from dltoolkit.core.params import among, between, inherited, param, per
from dltoolkit.registry import Objective, Option, RecipeSpec

MODELS = ("gcn", "gat", "sage", "gcnii", "appnp")
BATCHING = ("auto", "full", "sampled")
FEATURE_NORMS = ("auto", "row", "standard", "none")


@dataclass
class NodeClassifierConfig(TrainConfig):
    """Parameters of NodeClassifier (see the README's 'classify graph nodes' section)."""

    epochs: int | None = param(
        None,
        "Most training epochs (early stopping ends most runs sooner).",
        ge=1,
        cli=True,
        per=per("model", {"gcn": 200, "gat": 200, "sage": 200, "gcnii": 1500, "appnp": 1500}),
    )
    batch_size: int = param(
        512,
        "Seed nodes per sampled mini-batch (global: split between replicas).",
        ge=1,
        cli=True,
    )
    learning_rate: float = param(
        0.01, "Learning rate.", gt=0, cli=True, tune=between(1e-3, 5e-2, log=True)
    )
    weight_decay: float | None = param(
        None,
        "L2 penalty (the papers' coupled weight decay) on the kernels of gcn, gat and sage, "
        "of gcnii's dense input and output layers, and of appnp's first layer.",
        ge=0,
        tune=between(1e-5, 1e-2, log=True),
        per=per("model", {"gcn": 5e-4, "gat": 5e-4, "sage": 5e-4, "gcnii": 5e-4, "appnp": 5e-3}),
    )
    conv_weight_decay: float = param(
        0.01, "gcnii: L2 penalty on the convolution layers' kernels.", ge=0
    )
    schedule: str = param("constant", "Learning-rate schedule after the warmup.", choices=SCHEDULES)
    warmup_epochs: float = param(0.0, "Linear warmup, in epochs.", ge=0)
    clipnorm: float = param(0.0, "Clip each gradient to this norm (0: off).", ge=0)
    early_stopping_patience: int = param(
        100,
        "Stop after this many epochs without a better validation cross-entropy (0: never).",
        ge=0,
    )
    # a full-batch epoch is one step (GCNII's: a quarter second); writing the resume state
    # of its 64 layers at each would take longer than the epoch
    checkpoint_seconds: float = inherited(TrainConfig, "checkpoint_seconds", default=60.0)
    model: str = param(
        "gcn",
        "gcn (default), gat, sage, gcnii (deep GCN with initial residual and identity "
        "mapping) or appnp (MLP, then personalised-PageRank propagation).",
        choices=MODELS,
        cli=True,
        tune=among(*MODELS),
    )
    hidden: int | None = param(
        None,
        "Hidden units (per head for gat).",
        ge=1,
        cli=True,
        tune=among(8, 16, 32, 64),
        per=per("model", {"gcn": 16, "gat": 8, "sage": 64, "gcnii": 64, "appnp": 64}),
    )
    layers: int | None = param(
        None,
        "Graph layers of gcn, gat, sage (the last one outputs the classes); gcnii's "
        "convolution layers (between a dense input and output layer); appnp's dense layers.",
        ge=1,
        per=per("model", {"gcn": 2, "gat": 2, "sage": 2, "gcnii": 64, "appnp": 2}),
    )
    heads: int = param(8, "Attention heads of gat's hidden layers.", ge=1, cli=True)
    dropout: float | None = param(
        None,
        "Dropout on each layer's input.",
        ge=0,
        lt=1,
        cli=True,
        tune=between(0.0, 0.8),
        per=per("model", {"gcn": 0.5, "gat": 0.5, "sage": 0.5, "gcnii": 0.6, "appnp": 0.5}),
    )
    attention_dropout: float = param(0.5, "gat: dropout on the attention coefficients.", ge=0, lt=1)
    alpha: float = param(
        0.1,
        "gcnii: share of the first layer's output added back at every layer (initial "
        "residual); appnp: teleport probability of the personalised PageRank.",
        gt=0,
        le=1,
    )
    identity_lambda: float = param(
        0.5, "gcnii: identity mapping strength; layer l mixes in log(lambda / l + 1) of W.", gt=0
    )
    propagation_steps: int = param(
        10, "appnp: power-iteration steps of the propagation (its reach in hops).", ge=1
    )
    propagation_dropout: float = param(
        0.5, "appnp: dropout on the edges of every propagation step.", ge=0, lt=1
    )
    feature_norm: str = param(
        "auto",
        "Node features: row (divided by their sum), standard, none, or auto (row for "
        "counts, else standard).",
        choices=FEATURE_NORMS,
    )
    batching: str = param(
        "auto", "auto|full|sampled (neighbour-sampled mini-batches).", choices=BATCHING, cli=True
    )
    full_batch_max_nodes: int = param(
        200_000, "batching auto: sampled mini-batches for graphs with more nodes.", ge=1
    )
    fanout: int = param(
        10, "Neighbours sampled per node and layer (sampled batching).", ge=1, cli=True
    )
    directed: bool = param(
        False,
        "Keep edge directions (default: undirected).",
        flags=("--directed/--undirected",),
        cli=True,
    )
    val_split: float = param(
        0.2, "Share of the labelled nodes for validation (when the data has no split).", ge=0, lt=1
    )
    test_split: float = param(
        0.2, "Share of the labelled nodes for the test (when the data has no split).", ge=0, lt=1
    )
    edges: str | None = param(None, "Edge table (CSV): source, target, optional weight.", cli=True)
    id_col: str | None = param(
        None, "Node table column with node ids (default: id, else the first).", cli=True
    )
    label_col: str | None = param(None, "Node table column with labels (default: label).", cli=True)
    name: str | None = param(
        None, "Planetoid data set name (cora, citeseer, pubmed) when DIR holds several.", cli=True
    )


SPEC = RecipeSpec(
    task="classify-nodes",
    recipe="dltoolkit.tasks.node_classifier:NodeClassifier",
    config=NodeClassifierConfig,
    summary=(
        "Classify graph nodes with a GCN, GAT, GraphSAGE, GCNII or APPNP (built-in karate "
        "club when no data)."
    ),
    default_data="karate",
    data_help=(
        "Graph: a node table (CSV: id, features..., label (empty: unlabelled), optional split) "
        "with --edges, planetoid:DIR, a folder with nodes.csv and edges.csv, or a built-in "
        "graph (karate)."
    ),
    data_flags=("--data", "--nodes"),
    predict_options=(
        Option("nodes", str, "A node table of a new graph (with --edges)."),
        Option("edges", str, "That graph's edge table."),
    ),
    objective=Objective("accuracy", "maximize", "val_accuracy"),
)
