"""AnomalyDetector: the detect-anomalies recipe (autoencoder reconstruction error).

Rows (or sliding windows of a time series) are encoded and robust-scaled with training
statistics, and an ensemble of small bottleneck autoencoders learns to reconstruct them
without labels. Per feature, two terms are each divided by their median on the training rows:
the reconstruction error (root mean square over the members) and the robust distance from the
training median. The default `hybrid` score takes their geometric mean per feature, so a
feature counts when it is both badly reconstructed and unusually far out (the reconstruction
error alone misses anomalies that lie far out along the normal data's manifold), on the
absolute rather than squared scale, so one extreme feature does not swamp the rest of the
row; `reconstruction` takes the normalised squared error alone. The per-feature terms are the
per-column contributions, which sum to the score. A threshold (by contamination, a score quantile, or
best F1 on labelled validation rows) turns scores into flags. Encoding, scaling, scoring and the
threshold are Keras layers (dltoolkit/layers/tabular.py) around the trained autoencoder: model.keras
maps raw columns to scores, for `predict` and the exported `serving_default` alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.model_selection import train_test_split

from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.export import Signature
from dltoolkit.core.metrics import best_f1_threshold, detection_metrics
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.records import Bad, assemble, attempt
from dltoolkit.core.report import Report, plot_roc_pr, plot_score_histogram
from dltoolkit.core.training import Plan, even_calls
from dltoolkit.data import tables
from dltoolkit.layers.tabular import AnomalyScore, TableEncoder
from dltoolkit.models.autoencoder import build_autoencoder, reconstruction_loss, vae_encoder
from dltoolkit.specs.detect_anomalies import SPEC, WINDOW_MODELS

VAL_BATCHES = 8  # training batches per validation batch: validation only scores


@dataclass
class _Prepared:
    frame: pd.DataFrame
    description: str
    label_col: str | None
    positive: str | None
    schema: tables.Schema
    x: np.ndarray  # encoded rows, or windows of them
    labels: np.ndarray | None
    parts: dict[str, np.ndarray]
    skipped: list[str]
    held_out: dict | None = None


class AnomalyDetector(Recipe):
    """Score rows (or windows) by how badly an autoencoder reconstructs them.

    >>> AnomalyDetector(contamination=0.02).fit("readings.csv").predict("new.csv")
    """

    spec = SPEC
    learned = (
        "schema_",
        "signature_inputs_",
        "threshold_",
        "threshold_how_",
        "label_col_",
        "positive_",
    )

    def __init__(self, **params):
        super().__init__(**params)
        self.schema_: tables.Schema | None = None
        self.signature_inputs_: dict[str, str] = {}  # column -> its model/serving input name
        self.threshold_: float | None = None
        self.threshold_how_ = ""
        self.label_col_: str | None = None
        self.positive_: str | None = None
        self._scorer: keras.Model | None = (
            None  # encoded rows/windows -> score, flag, contributions
        )

    @property
    def columns_(self) -> list[str]:
        """The feature columns, in the order of `contributions`."""
        return self.schema_.columns

    # -- data -----------------------------------------------------------------------------

    def _validate(self) -> None:
        c = self.config
        if c.window == 1:
            raise ConfigError("window must be 0 (score rows) or at least 2 rows")
        if bool(c.window) != (c.autoencoder in WINDOW_MODELS):
            raise ConfigError(
                f"model '{c.autoencoder}' needs "
                + (
                    "--window 0; for windows use conv or lstm"
                    if c.window
                    else "--window N (rows per window); for rows use dense, denoising, sparse or vae"
                )
            )
        if c.val_split + c.test_split >= 0.9:
            raise ConfigError("val_split and test_split must leave most rows for training")
        if not self._hidden():
            raise ConfigError(f"hidden '{c.hidden}' must be layer sizes like 64,32")

    def _hidden(self) -> list[int]:
        try:
            sizes = [int(v) for v in self.config.hidden.split(",") if v.strip()]
        except ValueError:
            return []
        return sizes if all(s > 0 for s in sizes) else []

    def _prepare(self, data, console) -> _Prepared:
        c = self.config
        frame, description, label_col = tables.read_table(data, c.label_col)
        if c.time_col:
            if c.time_col not in frame.columns:
                raise DataError(
                    f"time column '{c.time_col}' not found; columns: {', '.join(map(str, frame.columns))}"
                )
            frame = frame.sort_values(c.time_col, kind="stable").reset_index(drop=True)
        exclude = [n for n in (label_col, c.time_col) if n]
        schema, skipped = tables.infer_schema(
            frame,
            exclude=exclude,
            columns=c.columns,
            categorical=c.categorical,
            max_categories=c.max_categories,
        )
        if c.window and schema.categorical:
            skipped += [
                f"{n} (categorical: windows read numeric columns)" for n in schema.categorical
            ]
            schema = tables.Schema(schema.numeric)
        labels, positive = (
            tables.binary_labels(frame, label_col, description) if label_col else (None, None)
        )
        numeric = tables.numeric_values(frame, schema, c.nan, description)
        rows = len(frame) - c.window + 1 if c.window else len(frame)
        if rows < 10:
            raise DataError(f"{description}: {len(frame)} rows are too few to learn what is normal")
        parts = self._split(rows, labels if not c.window else None)
        train_rows = parts["train"] if not c.window else np.arange(parts["train"].max() + c.window)
        schema = tables.fit_schema(schema, numeric[train_rows], frame.iloc[train_rows])
        x = tables.encode(schema, numeric, frame)
        if c.window:
            x = tables.window_view(x, c.window)
            labels = (
                None
                if labels is None
                else tables.window_view(labels[:, None], c.window).max(axis=(1, 2))
            )
        if c.threshold == "best-f1":
            fit_on = parts.get("val", parts["train"])
            if labels is None or not labels[fit_on].any():
                raise DataError(
                    "threshold best-f1 needs a label column (--label-col) with anomalies "
                    "in the validation rows; use --threshold contamination otherwise"
                )
        if console is not None:
            counts = ", ".join(f"{k} {len(v)}" for k, v in parts.items())
            console.print(
                f"data: {description}; {len(schema.columns)} feature columns; "
                f"{'windows' if c.window else 'rows'}: {counts}"
            )
        return _Prepared(frame, description, label_col, positive, schema, x, labels, parts, skipped)

    def _split(self, rows: int, labels: np.ndarray | None) -> dict[str, np.ndarray]:
        """Random (stratified by label) parts for rows; chronological parts for windows."""
        c, index = self.config, np.arange(rows)
        fractions = {k: f for k, f in (("val", c.val_split), ("test", c.test_split)) if f}
        if c.window:
            n_train = rows - sum(int(rows * f) for f in fractions.values())
            parts, start = {"train": index[:n_train]}, n_train
            for name, f in fractions.items():
                parts[name], start = index[start : start + int(rows * f)], start + int(rows * f)
            return {k: v for k, v in parts.items() if len(v)}
        parts, rest, remaining = {}, index, 1.0
        for name, f in fractions.items():
            stratify = (
                labels[rest]
                if labels is not None and np.bincount(labels[rest]).min() >= 2
                else None
            )
            rest, parts[name] = train_test_split(
                rest, test_size=f / remaining, random_state=c.seed, stratify=stratify
            )
            remaining -= f
        return {"train": np.sort(rest), **{k: np.sort(v) for k, v in parts.items()}}

    # -- training -------------------------------------------------------------------------

    def _adopt(self, prepared: _Prepared, run) -> None:
        self.schema_, self.label_col_, self.positive_ = (
            prepared.schema,
            prepared.label_col,
            prepared.positive,
        )
        taken: set[str] = set()
        self.signature_inputs_ = {n: tables.signature_name(n, taken) for n in self.columns_}

    def _plan(self, prepared: _Prepared, rt, run) -> Plan:
        """A shuffled stream of training batches, an epoch about one pass run in a few
        compiled calls; validation in batches of VAL_BATCHES training batches."""
        c = self.config
        train = prepared.x[prepared.parts["train"]]
        steps, per_call = even_calls(math.ceil(len(train) / c.batch_size))
        train_ds = (
            tf.data.Dataset.from_tensor_slices((train, train))
            .shuffle(len(train), seed=c.seed)
            .repeat()
            .batch(c.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        val_ds, val_steps = None, None
        if "val" in prepared.parts:
            val, size = prepared.x[prepared.parts["val"]], c.batch_size * VAL_BATCHES
            val_ds = tf.data.Dataset.from_tensor_slices((val, val)).batch(size).repeat()
            val_steps = math.ceil(len(val) / size)
        return Plan(
            train_ds,
            val_ds,
            steps=steps,
            epochs=c.epochs,
            validation_steps=val_steps,
            repeating=True,
            steps_per_execution=per_call,
        )

    def _build(self, prepared: _Prepared, plan: Plan) -> keras.Model:
        """The autoencoder, trained on encoded rows/windows (`_fitted` wraps it for raw input)."""
        c, width = self.config, prepared.schema.width
        # rows: a tight bottleneck, so unusual rows reconstruct badly; windows: channels per step
        latent = c.latent or (max(2, min(16, width // 3)) if c.window else max(2, width // 16))
        return build_autoencoder(
            c.autoencoder,
            width,
            hidden=self._hidden(),
            latent=latent,
            window=c.window,
            members=c.members,
            dropout=c.dropout,
            noise=c.noise,
            sparsity=c.sparsity,
            beta=c.beta,
            seed=c.seed,
        )

    def _compile_args(self) -> dict:
        return {"loss": reconstruction_loss}

    def _fitted(self, prepared: _Prepared) -> None:
        """Learn the score's scales and the threshold with the trained autoencoder, then make
        `model_` the raw-input model: encoder, autoencoder and scoring layers."""
        autoencoder = self.model_
        self._scorer = self._scoring_model(autoencoder)
        self._set_scales(autoencoder, prepared.x[prepared.parts["train"]])
        self._set_threshold(prepared)
        self.model_ = self._raw_model()

    def _scoring_model(self, autoencoder: keras.Model) -> keras.Model:
        """Encoded rows/windows -> score, anomaly flag and contributions (the ELBO's KL term
        read from a VAE's encoder layers)."""
        c, schema = self.config, self.schema_
        elbo = c.autoencoder == "vae" and c.vae_score == "elbo"
        latent = vae_encoder(autoencoder).outputs if elbo else []
        scoring = AnomalyScore(
            schema.groups().argmax(axis=1).tolist(),
            len(schema.columns),
            hybrid=c.score == "hybrid",
            kl_weight=c.beta if elbo else 0.0,
            name="anomaly_score",
        )
        encoded = autoencoder.input
        return keras.Model(encoded, scoring([encoded, autoencoder.output, *latent]), name="scorer")

    def _raw_model(self) -> keras.Model:
        """Raw feature columns -> score, anomaly flag and contributions: one array (rows, or
        windows of rows) when every column is numeric, else a dict of columns by input name."""
        schema, window = self.schema_, self.config.window
        encoder = TableEncoder(
            schema.median, schema.scale, list(schema.categorical.values()), name="table_encoder"
        )
        if schema.categorical:
            inputs = {
                name: keras.Input(
                    (), dtype="string" if n in schema.categorical else "float32", name=name
                )
                for n, name in self.signature_inputs_.items()
            }
            encoded = encoder(list(inputs.values()))
        else:
            width = len(schema.numeric)
            inputs = keras.Input(
                (window, width) if window else (width,), name="window" if window else "features"
            )
            encoded = encoder(inputs)
        return keras.Model(inputs, self._scorer(encoded), name="anomaly_detector")

    def _set_scales(self, autoencoder: keras.Model, train: np.ndarray) -> None:
        """Each feature's median error and squared distance on the training rows, so no
        feature dominates the score. A one-hot column's distance is scaled by its category's
        frequency instead (its median is usually 0), so a rare category counts as far out."""
        scoring = self._scorer.get_layer("anomaly_score")
        reconstructions = autoencoder(tf.cast(train, tf.float32), training=False)
        error, extreme = (t.numpy() for t in scoring.terms(train, reconstructions))
        numeric = len(self.schema_.numeric)
        frequency = np.maximum(extreme[:, numeric:].mean(axis=0), 1.0 / len(extreme))
        scoring.error_scale.assign(_median_scale(error))
        scoring.extreme_scale.assign(
            np.concatenate([_median_scale(extreme[:, :numeric]), frequency]).astype(np.float32)
        )

    def _set_threshold(self, prepared: _Prepared) -> None:
        c = self.config
        part = "val" if "val" in prepared.parts else "train"
        rows = prepared.parts[part]
        scores = self._scores(prepared.x[rows])["score"]
        if c.threshold == "best-f1":
            self.threshold_ = best_f1_threshold(prepared.labels[rows], scores)
            self.threshold_how_ = f"best F1 on the {len(rows)} labelled {part} rows"
        else:
            q = 1 - c.contamination if c.threshold == "contamination" else c.quantile
            self.threshold_ = float(np.quantile(scores, q))
            how = (
                f"contamination {c.contamination:g}"
                if c.threshold == "contamination"
                else f"quantile {c.quantile:g}"
            )
            self.threshold_how_ = f"{how}: the {q:.3g} quantile of the {len(rows)} {part} scores"
        self._scorer.get_layer("anomaly_score").threshold.assign(self.threshold_)

    def _restored(self) -> None:
        self._scorer = self.model_.get_layer("scorer")

    # -- scoring: the Keras model, for predict and serving ---------------------------------

    def _scores(self, encoded: np.ndarray) -> dict[str, np.ndarray]:
        """Encoded rows/windows -> score, anomaly flag, per-column contributions."""
        return {k: v.numpy() for k, v in self._scorer(encoded).items()}

    def _score_raw(self, raw) -> dict[str, np.ndarray]:
        """Raw model input (see `_raw_model`) -> score, anomaly flag, per-column contributions."""
        return {k: v.numpy() for k, v in self.model_(raw).items()}

    def _signatures(self) -> dict[str, Signature]:
        schema = self.schema_
        shape = [None, self.config.window] if self.config.window else [None]
        names = list(self.signature_inputs_.values())
        specs = [
            tf.TensorSpec(shape, tf.string if n in schema.categorical else tf.float32, name=name)
            for n, name in self.signature_inputs_.items()
        ]

        def prepare(*columns):
            return (
                dict(zip(names, columns, strict=True))
                if schema.categorical
                else tf.stack(columns, axis=-1)
            )

        return {"serving_default": Signature(specs, prepare)}

    def signature_inputs(self) -> dict[str, str]:
        """Column name -> the exported `serving_default` input name that takes it."""
        return dict(self.signature_inputs_)

    # -- prediction and evaluation ----------------------------------------------------------

    def _read(self, data):
        """The model's raw input from `data` (see `_model_input`), the frame, its description
        and label column; a bad row is a DataError."""
        frame, description, label_col = self._frame(data)
        numeric = tables.numeric_values(frame, self.schema_, self.config.nan, description)
        return self._model_input(frame, numeric), frame, description, label_col

    def _frame(self, data) -> tuple[pd.DataFrame, str, str | None]:
        """`data` as a frame with every training column (in time order if there is a time
        column), its description and its label column."""
        self._require_model()
        frame, description, label_col = tables.read_table(data, self.label_col_)
        missing = [n for n in self.columns_ if n not in frame.columns]
        if missing:
            raise DataError(
                f"{description}: missing training column(s) {', '.join(missing)}; "
                f"the model reads: {', '.join(self.columns_)}"
            )
        time_col = self.config.time_col
        if time_col and time_col in frame.columns:
            frame = frame.sort_values(time_col, kind="stable").reset_index(drop=True)
        return frame, description, label_col

    def _model_input(self, frame: pd.DataFrame, numeric: np.ndarray):
        """The raw feature columns as the Keras model takes them (windowed if so trained): one
        array of the numeric columns, or, with categorical ones, a dict by input name."""
        schema, window = self.schema_, self.config.window
        if not schema.categorical:
            return np.ascontiguousarray(tables.window_view(numeric, window) if window else numeric)
        columns = [numeric[:, i] for i in range(len(schema.numeric))]
        columns += [frame[n].astype(str).to_numpy() for n in schema.categorical]
        return dict(zip(self.signature_inputs_.values(), columns, strict=True))

    def score(self, data) -> dict[str, np.ndarray]:
        """Scores, flags and per-column contributions (columns as `columns_`) for every row/window."""
        raw, *_ = self._read(data)
        return self._score_raw(raw)

    def predict(self, inputs, *, strict: bool = False) -> list[dict]:
        """One row per input row (or window): score, anomaly flag and the top contributing columns.

        A row with a value that is not a number (or NaN/inf, unless trained with nan=impute)
        gets an error row `{"input", "row", "error"}` in its place, as does an input that
        cannot be read at all; with `strict` the first raises a DataError.
        """
        items = (
            [inputs]
            if isinstance(inputs, str | Path | pd.DataFrame | np.ndarray | tuple)
            else list(inputs)
        )
        results = []
        for index, item in enumerate(items):
            name = str(item) if isinstance(item, str | Path) else f"input {index}"
            results.append(attempt({"input": name}, self._predict_table, name, item))
        return assemble(results, strict=strict)

    def _predict_table(self, name: str, data) -> list[dict | Bad]:
        """Result rows of one table: a row per row (or window), a Bad for a bad one."""
        frame, _, _ = self._frame(data)
        numeric, bad_rows = tables.numeric_rows(frame, self.schema_, self.config.nan)
        out = self._score_raw(self._model_input(frame, numeric))
        bad = self._bad_records(bad_rows, len(out["score"]))
        return [
            Bad(self._where(name, i), bad[i]) if i in bad else self._row(name, i, out, frame)
            for i in range(len(out["score"]))
        ]

    def _bad_records(self, bad_rows: dict[int, str], records: int) -> dict[int, str]:
        """Record (row or window) index -> why it is bad; a window is bad if one of its rows is."""
        window = self.config.window
        if not window:
            return bad_rows
        bad = {}
        for row, reason in sorted(bad_rows.items()):
            for i in range(max(0, row - window + 1), min(row, records - 1) + 1):
                bad.setdefault(i, f"row {row}: {reason}")
        return bad

    def _where(self, name: str, i: int) -> dict:
        window = self.config.window
        return {"input": name, "row": i + window - 1 if window else i}

    def _row(self, name: str, i: int, out: dict, frame: pd.DataFrame) -> dict:
        c = self.config
        row = self._where(name, i)
        if c.window and c.time_col in frame.columns:
            row["start"], row["end"] = (
                str(frame[c.time_col].iloc[i]),
                str(frame[c.time_col].iloc[i + c.window - 1]),
            )
        contributions = out["contributions"][i]
        top = np.argsort(-contributions)[:3]
        return {
            **row,
            "score": float(out["score"][i]),
            "anomaly": bool(out["anomaly"][i]),
            "top_columns": [
                {"column": self.columns_[j], "contribution": float(contributions[j])} for j in top
            ],
        }

    def evaluate(self, data) -> dict:
        """ROC-AUC, average precision and precision/recall/F1 at the threshold on labelled data."""
        raw, frame, description, label_col = self._read(data)
        if not label_col:
            raise DataError(
                f"{description}: evaluate needs labels; the run has no label column "
                "(train with --label-col) and the data has no 'label' column"
            )
        labels, _ = tables.binary_labels(frame, label_col, description)
        if self.config.window:
            labels = tables.window_view(labels[:, None], self.config.window).max(axis=(1, 2))
        out = self._score_raw(raw)
        return self._metrics(labels, out["score"], out["anomaly"])

    def _metrics(self, labels, scores, flags) -> dict:
        base = {"threshold": self.threshold_, "flagged_share": float(np.mean(flags))}
        return base if labels is None else {**detection_metrics(labels, scores, flags), **base}

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        part = next(k for k in ("test", "val", "train") if k in prepared.parts)
        rows = prepared.parts[part]
        out = self._scores(prepared.x[rows])
        labels = None if prepared.labels is None else prepared.labels[rows]
        prepared.held_out = {"part": part, "rows": rows, "labels": labels, **out}
        return {**self._metrics(labels, out["score"], out["anomaly"]), "part": part}

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        c, held = self.config, prepared.held_out
        report.text(
            "Data",
            f"{prepared.description}; features: {', '.join(self.columns_)}"
            + (f"; left out: {', '.join(prepared.skipped)}" if prepared.skipped else "")
            + (
                f"; label column '{prepared.label_col}' (anomaly = {prepared.positive}), "
                "used for evaluation and thresholds only"
                if prepared.label_col
                else "; no labels"
            )
            + "; "
            + ", ".join(f"{k} {len(v)}" for k, v in prepared.parts.items())
            + (f" windows of {c.window} rows" if c.window else " rows"),
        )
        report.text("Threshold", f"{self.threshold_:.6g} ({self.threshold_how_})")
        report.table(
            f"Metrics on the {held['part']} part", {k: v for k, v in self.metrics_.items()}
        )
        report.figure(
            f"Scores on the {held['part']} part",
            plot_score_histogram(
                held["score"], self.threshold_, held["labels"], f"{c.score} score"
            ),
            "scores",
        )
        if held["labels"] is not None and len(np.unique(held["labels"])) == 2:
            report.figure(
                "ROC and precision-recall curves",
                plot_roc_pr(held["labels"], held["score"]),
                "curves",
            )
        report.table(
            "Top anomalies (highest scores, with the columns that contributed most)",
            self._top_rows(prepared),
        )

    def _top_rows(self, prepared: _Prepared) -> list[dict]:
        out = self._scores(prepared.x)
        rows = []
        for i in np.argsort(-out["score"])[: self.config.top_k]:
            row = {
                "row": int(i) + (self.config.window - 1 if self.config.window else 0),
                "score": float(out["score"][i]),
                "flagged": bool(out["anomaly"][i]),
            }
            if prepared.labels is not None:
                row["label"] = int(prepared.labels[i])
            top = np.argsort(-out["contributions"][i])[:3]
            row["top columns"] = ", ".join(
                f"{self.columns_[j]} {out['contributions'][i][j]:.3g}" for j in top
            )
            rows.append(row)
        return rows


def _median_scale(values: np.ndarray) -> np.ndarray:
    """Per-column medians, floored at a thousandth of the typical one (never zero)."""
    median = np.median(values, axis=0)
    positive = median[median > 0]
    floor = 1e-3 * (np.median(positive) if len(positive) else 1.0)
    return np.maximum(median, floor).astype(np.float32)
