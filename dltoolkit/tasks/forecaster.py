"""Forecaster: the forecast-series recipe (direct multi-horizon, optional quantiles)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from dltoolkit.core.callbacks import read_history
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.export import Signature
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.records import Bad, assemble, attempt
from dltoolkit.core.report import Report
from dltoolkit.core.training import Plan, Stage
from dltoolkit.data.series import (
    Columns,
    Scaler,
    Series,
    choose_columns,
    infer_season,
    infer_step,
    make_series,
    read_frame,
    split_borders,
    window_dataset,
    window_starts,
    windows,
)
from dltoolkit.layers.scaling import Standardize, Unstandardize
from dltoolkit.models.sequence import (
    CHANNEL_INDEPENDENT,
    AveragedForecaster,
    MemberStack,
    OverMembers,
    PinballLoss,
    SequenceForecaster,
    check_model,
)
from dltoolkit.specs.forecast import AUTO, AUTO_MODELS, SPEC
from dltoolkit.tasks.forecast_eval import (
    comparison_rows,
    forecast_metrics,
    mase_scale,
    plot_forecasts,
)

# Layer names inside model.keras: raw window -> STANDARDIZE -> NETWORK -> UNSTANDARDIZE.
STANDARDIZE, NETWORK, UNSTANDARDIZE = "standardize", "network", "unstandardize"


@dataclass
class _Prepared:
    series: Series
    parts: dict[str, tuple[int, int]]
    scaler: Scaler
    scaled: np.ndarray
    season: int
    step: pd.Timedelta | None
    held_out: dict | None = None


class Forecaster(Recipe):
    """Forecast the next `horizon` steps of one or more series from the last `lookback` rows.

    >>> Forecaster(horizon=14).fit("sales.csv").predict("recent.csv")
    """

    spec = SPEC
    learned = ("inputs_", "targets_", "time_col_", "season_", "step_", "mase_scale_")

    def __init__(self, **params):
        super().__init__(**params)
        self.inputs_: list[str] = []
        self.targets_: list[str] = []
        self.time_col_: str | None = None
        self.season_ = 1
        self.step_: pd.Timedelta | None = None
        self.mase_scale_: np.ndarray | None = None
        self._candidate: str | None = None  # model auto, ensemble: the network being trained
        self._stage = "train"  # its training phase's name
        self._choice: dict | None = None  # model auto: the kept network, losses of all
        self._members: dict | None = None  # ensemble: each phase's validation loss
        self._stacked = 0  # ensemble: networks trained side by side in the phase (0: one)

    @property
    def levels(self) -> list[float]:
        """Quantile levels, sorted ([] for a point forecast)."""
        return (
            sorted(float(q) for q in self.config.quantiles.split(","))
            if self.config.quantiles
            else []
        )

    @property
    def scaler_(self) -> Scaler:
        """The training rows' mean and std per input column, as the model's input layer holds them."""
        self._require_model()
        layer = self.model_.get_layer(STANDARDIZE)
        return Scaler(layer.mean, layer.std)

    # -- data ---------------------------------------------------------------------------

    def _validate(self) -> None:
        c = self.config
        for model in self._candidates():
            check_model(
                model,
                lookback=c.lookback,
                patch_len=c.patch_len,
                d_model=c.d_model,
                heads=c.heads,
                norm=c.norm,
            )
        if c.model == AUTO and c.val_split <= 0:
            raise ConfigError(
                "model auto (the default) chooses on the validation split: set val_split > 0 "
                "or choose a --model"
            )
        if c.covariates and c.model in (*CHANNEL_INDEPENDENT, AUTO):
            raise ConfigError(
                f"model '{c.model}' reads each target alone and would ignore covariates; "
                "use tsmixer, lstm, gru, rnn or transformer with --covariates"
            )
        try:
            levels = self.levels
        except ValueError:
            raise ConfigError(
                f"quantiles '{c.quantiles}' must be numbers like 0.1,0.5,0.9"
            ) from None
        if levels and (
            0.5 not in levels
            or min(levels) <= 0
            or max(levels) >= 1
            or len(set(levels)) < len(levels)
        ):
            raise ConfigError(
                f"quantiles '{c.quantiles}' must be distinct levels in (0, 1) including "
                "0.5 (the point forecast), e.g. 0.1,0.5,0.9"
            )
        if min(c.val_split, c.test_split) < 0 or c.val_split + c.test_split >= 1:
            raise ConfigError(
                "val_split and test_split must be fractions >= 0 that leave rows "
                "for training (sum below 1)"
            )

    def _read(self, data, columns: Columns | None, console=None) -> Series:
        c = self.config
        frame, description = read_frame(data)
        if columns is None:
            columns = choose_columns(
                frame,
                time_col=c.time_col,
                target=c.target,
                covariates=c.covariates,
                all_columns=c.all_columns,
            )
        else:
            missing = [name for name in columns.inputs if name not in frame.columns]
            if missing:
                raise DataError(
                    f"{description}: missing column(s) {', '.join(missing)}; "
                    f"the model reads: {', '.join(columns.inputs)}"
                )
            if columns.time is not None and columns.time not in frame.columns:
                columns = Columns(None, columns.targets, columns.covariates)
        return make_series(frame, columns, c.fill, description=description, warn=_warner(console))

    def _prepare(self, data, console) -> _Prepared:
        c = self.config
        series = self._read(data, None, console)
        parts = split_borders(
            len(series), c.lookback, c.horizon, c.val_split, c.test_split, c.split_rows
        )
        scaler = Scaler.fit(series.values[: parts["train"][1]])
        step = infer_step(series.times)
        season = c.season or infer_season(step)
        if console is not None:
            counts = ", ".join(f"{k} {b - a}" for k, (a, b) in parts.items())
            console.print(
                f"data: {series.description}; targets {', '.join(series.targets)}"
                + (
                    f"; covariates {', '.join(series.inputs[len(series.targets) :])}"
                    if len(series.inputs) > len(series.targets)
                    else ""
                )
                + f"; rows: {counts}"
            )
        return _Prepared(series, parts, scaler, scaler.transform(series.values), season, step)

    def _starts(self, part: tuple[int, int]) -> np.ndarray:
        return window_starts(*part, self.config.lookback, self.config.horizon)

    def _dataset(self, values: np.ndarray, starts: np.ndarray, training: bool):
        c = self.config
        return window_dataset(
            values,
            starts,
            c.lookback,
            c.horizon,
            len(self.targets_),
            c.batch_size,
            shuffle=training,
            seed=c.seed,
        )

    def _candidates(self) -> tuple[str, ...]:
        """The networks a fit trains: the configured one, or AUTO_MODELS for model auto."""
        return AUTO_MODELS if self.config.model == AUTO else (self.config.model,)

    # -- training -------------------------------------------------------------------------

    def _learn(self, prepared: _Prepared, run, rt, console) -> None:
        """Train the network (model auto: choose it); with `members` > 1, then train more
        networks of the same model from other seeds and average their forecasts."""
        if self.config.model == AUTO:
            self._choose(prepared, run, rt, console)
        else:
            super()._learn(prepared, run, rt, console)
        if self.config.members > 1:
            self._ensemble(prepared, run, rt, console)
        self._candidate, self._stage = None, "train"

    def _choose(self, prepared: _Prepared, run, rt, console) -> None:
        """Model auto trains each candidate, cheapest first, as a phase of its own (so a
        resumed fit skips finished ones) and keeps the lowest validation loss."""
        trained = {}
        for i, kind in enumerate(AUTO_MODELS):
            self._candidate = self._stage = kind
            super()._learn(prepared, run, rt, console, first_epoch=i * self.config.epochs)
            trained[kind] = self.model_
        losses = _best_losses(run, AUTO_MODELS, "val_loss")
        best = min(losses, key=losses.get)
        self.model_ = trained[best]
        self._choice = {"model": best, "validation_loss": losses}

    def _ensemble(self, prepared: _Prepared, run, rt, console) -> None:
        """Members 2..members of the trained model, trained together in one phase as a
        `MemberStack` (seeded from seed + 1, each on its own loss); the network becomes the
        average of all the members (AveragedForecaster)."""
        c = self.config
        kind = self._choice["model"] if self._choice else c.model
        first = self.model_.get_layer(NETWORK)
        stages = [kind if self._choice else "train", f"{kind}-members"]
        self._candidate, self._stage, self._stacked = kind, stages[1], c.members - 1
        keras.utils.set_random_seed(c.seed + 1)
        try:
            super()._learn(
                prepared, run, rt, console, first_epoch=len(self._candidates()) * c.epochs
            )
        finally:
            self._stacked = 0
        stack = self.model_
        key = "val_loss" if prepared.parts.get("val") else "loss"
        self._members = {
            "validation_loss" if key == "val_loss" else "training_loss": _best_losses(
                run, stages, key
            )
        }
        with rt.strategy.scope():
            network = AveragedForecaster([first, *stack.members], name=NETWORK)
            self.model_ = self._raw_model(network, prepared.scaler)

    def _stages(self, plan: Plan) -> list[Stage]:
        return [Stage(self._stage, plan.epochs)]

    def _adopt(self, prepared: _Prepared, run) -> None:
        series = prepared.series
        self.inputs_, self.targets_ = series.inputs, series.targets
        self.time_col_ = None if series.times is None else series.times.name
        self.season_, self.step_ = prepared.season, prepared.step
        train_rows = series.values[: prepared.parts["train"][1], : len(self.targets_)]
        self.mase_scale_ = mase_scale(train_rows, self.season_)

    def _plan(self, prepared: _Prepared, rt, run) -> Plan:
        """Windows of the z-scored series: the network trains on scaled data."""
        c, val = self.config, prepared.parts.get("val")
        train_starts = self._starts(prepared.parts["train"])
        return Plan(
            train=self._dataset(prepared.scaled, train_starts, training=True),
            val=None
            if val is None
            else self._dataset(prepared.scaled, self._starts(val), training=False),
            steps=math.ceil(len(train_starts) / c.batch_size),
            epochs=c.epochs,
        )

    def _build(self, prepared: _Prepared, plan: Plan) -> keras.Model:
        """The network alone (scaled window -> scaled forecast), or `_stacked` of them side
        by side (a MemberStack); `_fitted` wraps it in scaling."""
        if self._stacked:
            stack = MemberStack([self._network() for _ in range(self._stacked)], name=NETWORK)
            stack(np.zeros((1, self.config.lookback, len(self.inputs_)), np.float32))
            return stack
        return self._network()

    def _network(self) -> SequenceForecaster:
        """One network of the model being trained, built."""
        c = self.config
        network = SequenceForecaster(
            self._candidate or c.model,
            c.lookback,
            len(self.inputs_),
            len(self.targets_),
            c.horizon,
            quantiles=len(self.levels),
            instance_norm=c.instance_norm,
            d_model=c.d_model,
            layers_=c.layers,
            heads=c.heads,
            ff_dim=c.ff_dim,
            dropout=c.dropout,
            patch_len=c.patch_len,
            stride=c.stride,
            units=c.units,
            kernel=c.kernel,
            norm=c.norm,
            name=NETWORK,
        )
        network(np.zeros((1, c.lookback, len(self.inputs_)), np.float32))
        return network

    def _compile_args(self) -> dict:
        metrics = [] if self.levels else ["mae", "mse"]
        if not self._stacked:
            return {"loss": self._loss(), "metrics": metrics}
        return {
            "loss": OverMembers(self._loss()),
            "metrics": [
                keras.metrics.MeanMetricWrapper(OverMembers(_LOSSES[name]()).call, name=name)
                for name in metrics
            ],
        }

    def _fitted(self, prepared: _Prepared) -> None:
        if self._stacked:  # members 2..N: `_ensemble` wraps them with the first
            return
        network = self.model_
        with network.distribute_strategy.scope():
            self.model_ = self._raw_model(network, prepared.scaler)

    def _raw_model(self, network: keras.Model, scaler: Scaler) -> keras.Model:
        """Raw window (N, lookback, inputs) -> {"forecast", "quantiles"} in original units."""
        n = len(self.targets_)
        window = keras.Input((self.config.lookback, len(self.inputs_)), name="window")
        scaled = Standardize(scaler.mean, scaler.std, name=STANDARDIZE)(window)
        unscale = Unstandardize(
            scaler.mean[:n], scaler.std[:n], axis=-2 if self.levels else -1, name=UNSTANDARDIZE
        )
        return keras.Model(window, self._outputs(unscale(network(scaled))), name="forecaster")

    def _outputs(self, units) -> dict:
        """The named outputs of a forecast in original units (with quantiles: the 0.5 one)."""
        if not self.levels:
            return {"forecast": units}
        return {"forecast": units[..., self.levels.index(0.5)], "quantiles": units}

    def _loss(self) -> keras.losses.Loss:
        if self.levels:
            return PinballLoss(self.levels)
        return _LOSSES[self.config.loss]()

    # -- evaluation and prediction ----------------------------------------------------------

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        part = prepared.parts[self._held_out(prepared.parts)]
        prepared.held_out = self._score(prepared.series.values, self._starts(part))
        metrics = prepared.held_out["metrics"]
        if self._choice:
            metrics["model_choice"] = self._choice
        if self._members:
            metrics["ensemble"] = {"members": self.config.members, **self._members}
        return metrics

    def _score(self, values: np.ndarray, starts: np.ndarray) -> dict:
        """Forecasts for the windows at `starts`, in original units, with metrics and baselines."""
        c, n, scaler = self.config, len(self.targets_), self.scaler_
        # The training windows' path: z-scored in numpy (float64), then the network.
        scaled = self.model_.get_layer(NETWORK).predict(
            self._dataset(scaler.transform(values), starts, False), verbose=0
        )
        output = self._outputs(
            keras.ops.convert_to_numpy(self.model_.get_layer(UNSTANDARDIZE)(scaled))
        )
        forecast, quantiles = output["forecast"], output.get("quantiles")
        past, actual = windows(values, starts, c.lookback, c.horizon, n)
        mean, std = scaler.mean[:n], scaler.std[:n]
        metrics = forecast_metrics(
            past[..., :n],
            actual,
            forecast,
            mean=mean,
            std=std,
            scale=self.mase_scale_,
            season=self.season_,
            names=self.targets_,
            quantiles=quantiles,
            levels=self.levels,
        )
        return {
            "metrics": metrics,
            "past": past[..., :n],
            "actual": actual,
            "forecast": forecast,
            "quantiles": quantiles,
        }

    def evaluate(self, data) -> dict:
        """Metrics and baselines over every window of `data` (a held-out stretch of the series)."""
        self._require_model()
        c = self.config
        series = self._read(data, self._columns())
        if len(series) < c.lookback + c.horizon:
            raise DataError(
                f"{series.description}: {len(series)} rows, but one window needs "
                f"lookback {c.lookback} + horizon {c.horizon} rows"
            )
        return self._score(series.values, self._starts((0, len(series))))["metrics"]

    def predict(self, inputs, *, strict: bool = False) -> list[dict]:
        """The next `horizon` steps after each input: CSV/Parquet paths, DataFrames or raw windows.

        One row per input and step: the forecast per target (and `<target>_q<level>` quantiles).
        An input that cannot be read (or is too short, or lacks a column) gets one error row
        `{"input": name, "error": reason}` in its place; with `strict` it raises a DataError.
        """
        self._require_model()
        items = (
            [inputs] if isinstance(inputs, str | Path | pd.DataFrame | np.ndarray) else list(inputs)
        )
        results = []
        for index, item in enumerate(items):
            name = str(item) if isinstance(item, str | Path) else f"input {index}"
            window = attempt({"input": name}, self._window, item)
            results.append(window if isinstance(window, Bad) else self._forecast(name, *window))
        return assemble(results, strict=strict)

    def _forecast(self, name: str, window: np.ndarray, last_time) -> list[dict]:
        output = self.model_(window[None], training=False)
        out = {k: keras.ops.convert_to_numpy(v)[0] for k, v in output.items()}
        return self._rows(name, out, last_time)

    def _window(self, item) -> tuple[np.ndarray, pd.Timestamp | None]:
        lookback, inputs = self.config.lookback, len(self.inputs_)
        if isinstance(item, np.ndarray):
            if item.shape != (lookback, inputs):
                raise DataError(
                    f"a raw window must have shape ({lookback}, {inputs}): the last "
                    f"{lookback} rows of {', '.join(self.inputs_)}; got {item.shape}"
                )
            return item.astype(np.float32), None
        series = self._read(item, self._columns())
        if len(series) < lookback:
            raise DataError(
                f"{series.description}: {len(series)} rows, but the model needs the "
                f"last {lookback} rows (lookback) to forecast"
            )
        last = series.times[-1] if series.times is not None else None
        return series.values[-lookback:], last

    def _rows(self, name: str, out: dict, last_time) -> list[dict]:
        rows = []
        for h in range(self.config.horizon):
            row = {"input": name, "step": h + 1}
            if last_time is not None and self.step_ is not None:
                row["time"] = str(last_time + (h + 1) * self.step_)
            for t, target in enumerate(self.targets_):
                row[target] = float(out["forecast"][h, t])
                for q, level in enumerate(self.levels):
                    row[f"{target}_q{level:g}"] = float(out["quantiles"][h, t, q])
            rows.append(row)
        return rows

    def _columns(self) -> Columns:
        return Columns(self.time_col_, self.targets_, self.inputs_[len(self.targets_) :])

    # -- persistence and export ---------------------------------------------------------------

    def _signatures(self) -> dict[str, Signature]:
        return {"serving_default": self._tflite_signature()}

    def _tflite_signature(self) -> Signature:
        """Raw window -> `forecast` (and `quantiles`) in original units, as the model gives."""
        spec = tf.TensorSpec(
            [None, self.config.lookback, len(self.inputs_)], tf.float32, name="window"
        )
        return Signature([spec])

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        c, held = self.config, prepared.held_out
        report.text(
            "Data",
            f"{prepared.series.description}; targets {', '.join(self.targets_)}; "
            f"inputs {', '.join(self.inputs_)}; rows "
            + ", ".join(f"{k} {b - a}" for k, (a, b) in prepared.parts.items())
            + f"; lookback {c.lookback}, horizon {c.horizon}, season {self.season_}",
        )
        report.table(
            "Test metrics vs baselines (mse/mae: z-scored with training statistics)",
            comparison_rows(self.metrics_),
        )
        report.table(
            "Per target", [{"target": k, **v} for k, v in self.metrics_["per_target"].items()]
        )
        if "model_choice" in self.metrics_:
            choice = self.metrics_["model_choice"]
            report.table(
                f"Model auto: {choice['model']} kept (lowest validation loss, z-scored)",
                [
                    {"model": kind, "validation loss": loss, "kept": kind == choice["model"]}
                    for kind, loss in choice["validation_loss"].items()
                ],
            )
        if "ensemble" in self.metrics_:
            report.table(
                f"Ensemble: the mean of {self.metrics_['ensemble']['members']} networks "
                "trained from different seeds",
                [
                    {"phase": phase, kind.replace("_", " "): loss}
                    for kind, losses in self.metrics_["ensemble"].items()
                    if kind != "members"
                    for phase, loss in losses.items()
                ],
            )
        if "coverage" in self.metrics_:
            report.table(
                "Prediction interval",
                {"interval": self.metrics_["interval"], "coverage": self.metrics_["coverage"]},
            )
        report.figure(
            "Forecast vs actual, test windows",
            plot_forecasts(
                held["past"],
                held["actual"],
                held["forecast"],
                self.targets_,
                quantiles=held["quantiles"],
                count=c.plot_windows,
            ),
            "forecasts",
        )


_LOSSES = {
    "mse": keras.losses.MeanSquaredError,
    "mae": keras.losses.MeanAbsoluteError,
    "huber": keras.losses.Huber,
}


def _warner(console):
    if console is not None:
        return lambda message: console.print(f"[yellow]warning:[/] {message}")
    return lambda message: warnings.warn(message, stacklevel=3)


def _best_losses(run, phases, key: str) -> dict[str, float]:
    """Each training phase's lowest `key` (val_loss or loss), from the run's history."""
    history = read_history(run.history_file)
    return {p: min(row[key] for row in history if row.get("phase") == p) for p in phases}
