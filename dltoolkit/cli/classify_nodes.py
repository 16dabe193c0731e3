"""`dltoolkit classify-nodes`: train a graph node classifier, report and export it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dltoolkit.cli import common as c
from dltoolkit.core.errors import ConfigError
from dltoolkit.tasks import NodeClassifier


@c.recipe_command(NodeClassifier)
def classify_nodes(
    data: Annotated[
        str | None,
        typer.Option(
            help="planetoid:DIR, a folder with nodes.csv and edges.csv, or a built-in graph (karate)."
        ),
    ] = None,
    nodes: Annotated[
        Path | None,
        typer.Option(
            help="Node table (CSV): id, features..., label (empty: unlabelled), optional split."
        ),
    ] = None,
    edges: Annotated[
        Path | None, typer.Option(help="Edge table (CSV): source, target, optional weight.")
    ] = None,
    label_col: Annotated[
        str | None, typer.Option(help="Node table column with labels (default: label).")
    ] = None,
    id_col: Annotated[
        str | None,
        typer.Option(help="Node table column with node ids (default: id, else the first)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Planetoid data set name (cora, citeseer, pubmed) when DIR holds several."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="gcn (default), gat or sage.")] = None,
    hidden: Annotated[
        int | None,
        typer.Option(help="Hidden units (per head for gat; default gcn 16, gat 8, sage 64)."),
    ] = None,
    heads: Annotated[
        int | None, typer.Option(help="Attention heads of gat's hidden layers.")
    ] = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout on each layer's input.")] = None,
    directed: Annotated[
        bool | None,
        typer.Option("--directed/--undirected", help="Keep edge directions (default: undirected)."),
    ] = None,
    batching: Annotated[
        str | None, typer.Option(help="auto|full|sampled (neighbour-sampled mini-batches).")
    ] = None,
    fanout: Annotated[
        int | None, typer.Option(help="Neighbours sampled per node and layer (sampled batching).")
    ] = None,
    epochs: c.Epochs = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Seed nodes per sampled mini-batch (global: split between replicas)."),
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
):
    """Classify graph nodes with a GCN, GAT or GraphSAGE (built-in karate club when no data)."""
    if nodes is not None and data is not None:
        raise ConfigError("pass either --nodes/--edges or --data, not both")
    if (nodes is None) != (edges is None):
        raise ConfigError("--nodes and --edges go together: pass the node table and the edge table")
    return str(nodes) if nodes else data, dict(
        edges=str(edges) if edges else None,
        label_col=label_col,
        id_col=id_col,
        name=name,
        model=model,
        hidden=hidden,
        heads=heads,
        dropout=dropout,
        directed=directed,
        batching=batching,
        fanout=fanout,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
    )
