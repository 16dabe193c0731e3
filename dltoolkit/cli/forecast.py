"""`dltoolkit forecast`: train a forecaster on a series, report and export it."""

from __future__ import annotations

from typing import Annotated

import typer

from dltoolkit.cli import common as c
from dltoolkit.tasks import Forecaster


@c.recipe_command(Forecaster)
def forecast(
    data: c.Data = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            "--targets",
            help="Column(s) to forecast, comma-separated (default: the only numeric column).",
        ),
    ] = None,
    all_columns: Annotated[
        bool | None,
        typer.Option(
            "--all-columns/--no-all-columns", help="Forecast every numeric column (multivariate)."
        ),
    ] = None,
    covariates: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated input-only columns (needs lstm, gru, rnn or transformer)."
        ),
    ] = None,
    time_col: Annotated[
        str | None, typer.Option(help="Time column (default: the first date-like column, if any).")
    ] = None,
    fill: Annotated[
        str | None,
        typer.Option(help="Missing values: error (default), ffill, interpolate or drop."),
    ] = None,
    lookback: Annotated[int | None, typer.Option(help="Past rows the model reads.")] = None,
    horizon: Annotated[int | None, typer.Option(help="Future steps to forecast.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="patch-transformer (default), dlinear, linear, lstm, gru, rnn or transformer."
        ),
    ] = None,
    quantiles: Annotated[
        str | None, typer.Option(help="Quantile levels for prediction intervals, e.g. 0.1,0.5,0.9.")
    ] = None,
    season: Annotated[
        int | None,
        typer.Option(
            help="Seasonal period for the seasonal-naive baseline (default: from the time step)."
        ),
    ] = None,
    epochs: c.Epochs = None,
    batch_size: c.BatchSize = None,
    learning_rate: c.LearningRate = None,
):
    """Train a forecaster (built-in CO2 sample series when --data is not given)."""
    return data, dict(
        target=target,
        all_columns=all_columns,
        covariates=covariates,
        time_col=time_col,
        fill=fill,
        lookback=lookback,
        horizon=horizon,
        model=model,
        quantiles=quantiles,
        season=season,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
    )
