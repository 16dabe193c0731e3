"""Classify graph nodes: `NodeClassifier`'s parameters and its `dltoolkit classify-nodes` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import SCHEDULES, TrainConfig
from dltoolkit.core.params import among, between, param
from dltoolkit.registry import Objective, Option, RecipeSpec

MODELS = ("gcn", "gat", "sage")
BATCHING = ("auto", "full", "sampled")
FEATURE_NORMS = ("auto", "row", "standard", "none")


@dataclass
class NodeClassifierConfig(TrainConfig):
    """Parameters of NodeClassifier (see the README's 'classify graph nodes' section)."""

    epochs: int = param(200, "Training epochs.", ge=1, cli=True)
    batch_size: int = param(
        512,
        "Seed nodes per sampled mini-batch (global: split between replicas).",
        ge=1,
        cli=True,
    )
    learning_rate: float = param(
        0.01, "Learning rate.", gt=0, cli=True, tune=between(1e-3, 5e-2, log=True)
    )
    weight_decay: float = param(
        5e-4,
        "L2 penalty on the weights (the papers' coupled weight decay).",
        ge=0,
        tune=between(1e-5, 1e-2, log=True),
    )
    schedule: str = param("constant", "Learning-rate schedule after the warmup.", choices=SCHEDULES)
    warmup_epochs: float = param(0.0, "Linear warmup, in epochs.", ge=0)
    clipnorm: float = param(0.0, "Clip each gradient to this norm (0: off).", ge=0)
    early_stopping_patience: int = param(
        100, "Stop after this many epochs without a better validation loss (0: never).", ge=0
    )
    model: str = param(
        "gcn", "gcn (default), gat or sage.", choices=MODELS, cli=True, tune=among(*MODELS)
    )
    hidden: int | None = param(
        None,
        "Hidden units (per head for gat; default gcn 16, gat 8, sage 64).",
        ge=1,
        cli=True,
        tune=among(8, 16, 32, 64),
    )
    layers: int = param(2, "Graph layers (the last one outputs the classes).", ge=1)
    heads: int = param(8, "Attention heads of gat's hidden layers.", ge=1, cli=True)
    dropout: float = param(
        0.5, "Dropout on each layer's input.", ge=0, lt=1, cli=True, tune=between(0.0, 0.8)
    )
    attention_dropout: float = param(0.5, "gat: dropout on the attention coefficients.", ge=0, lt=1)
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
    summary="Classify graph nodes with a GCN, GAT or GraphSAGE (built-in karate club when no data).",
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
