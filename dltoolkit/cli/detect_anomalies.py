"""`dltoolkit detect-anomalies`: train an autoencoder anomaly detector, report and export it."""

from __future__ import annotations

from typing import Annotated

import typer

from dltoolkit.cli import common as c
from dltoolkit.tasks import AnomalyDetector


@c.recipe_command(AnomalyDetector)
def detect_anomalies(
    data: c.Data = None,
    label_col: Annotated[
        str | None,
        typer.Option(
            help="0/1 (or two-valued) anomaly label: used for evaluation and thresholds only, never for training."
        ),
    ] = None,
    time_col: Annotated[
        str | None,
        typer.Option(
            help="Time column: rows are sorted by it (and windows report their time span)."
        ),
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(
            help="Score sliding windows of this many rows (time series; with --model conv or lstm)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="dense (default), denoising, sparse or vae for rows; conv (default with --window) or lstm for windows."
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="Feature columns, comma-separated (default: all but label and time)."),
    ] = None,
    categorical: Annotated[
        str | None,
        typer.Option(help="Columns to one-hot encode although numeric, comma-separated."),
    ] = None,
    nan: Annotated[
        str | None,
        typer.Option(help="NaN/inf values: error (default) or impute (training median)."),
    ] = None,
    threshold: Annotated[
        str | None,
        typer.Option(help="contamination (default), quantile or best-f1 (needs --label-col)."),
    ] = None,
    contamination: Annotated[
        float | None, typer.Option(help="Expected share of anomalies, in (0, 0.5).")
    ] = None,
    quantile: Annotated[
        float | None, typer.Option(help="Score quantile for --threshold quantile, e.g. 0.99.")
    ] = None,
    hidden: Annotated[str | None, typer.Option(help="Hidden layer sizes, e.g. 64,32.")] = None,
    latent: Annotated[int | None, typer.Option(help="Code size (0: auto).")] = None,
    members: Annotated[
        int | None, typer.Option(help="Autoencoders in the ensemble (their errors are averaged).")
    ] = None,
    score: Annotated[
        str | None,
        typer.Option(
            help="hybrid (default: geometric mean of reconstruction error and distance from the median, per feature) or reconstruction."
        ),
    ] = None,
    epochs: c.Epochs = None,
    batch_size: c.BatchSize = None,
    learning_rate: c.LearningRate = None,
):
    """Train an anomaly detector (built-in breast-cancer table when --data is not given)."""
    if window and model is None:
        model = "conv"
    return data, dict(
        label_col=label_col,
        time_col=time_col,
        window=window,
        model=model,
        columns=columns,
        categorical=categorical,
        nan=nan,
        threshold=threshold,
        contamination=contamination,
        quantile=quantile,
        hidden=hidden,
        latent=latent,
        members=members,
        score=score,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
    )
