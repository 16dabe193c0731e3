"""Time series data: reading, column choice, gaps, chronological splits, scaling, windows.

A `Series` is a table of numeric input columns (targets first, then covariates) in time
order. Splits are chronological; the validation and test windows start `lookback` rows
before their border, so their inputs may reach back into the previous part (the past is
known) but the values they forecast always lie inside their own part. Scalers are fit on
the training rows only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from dltoolkit.core.errors import DataError
from dltoolkit.data.samples import SAMPLES, load_sample
from dltoolkit.specs.forecast import FILLS

# Typical seasonal period per sampling interval (seconds), for the seasonal-naive baseline.
_SEASONS = (
    (900, 96),
    (3600, 24),
    (86400, 7),
    (7 * 86400, 52),
    (30.44 * 86400, 12),
    (91.3 * 86400, 4),
)


@dataclass
class Series:
    """Numeric columns in time order; `values` is (rows, inputs) float32, targets first."""

    values: np.ndarray
    inputs: list[str]
    targets: list[str]
    times: pd.DatetimeIndex | None = None
    description: str = ""

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Columns:
    """Which columns a forecaster reads: time (optional), targets, covariates."""

    time: str | None
    targets: list[str]
    covariates: list[str]

    @property
    def inputs(self) -> list[str]:
        return self.targets + self.covariates


def read_frame(data) -> tuple[pd.DataFrame, str]:
    """A DataFrame from a CSV/Parquet path, a built-in series sample or a DataFrame."""
    if isinstance(data, pd.DataFrame):
        return data.copy(), f"DataFrame with {len(data)} rows"
    if isinstance(data, str) and data in SAMPLES and SAMPLES[data].kind == "series":
        frame = load_sample(data)
        return frame, f"sample '{data}': {SAMPLES[data].description}"
    path = Path(data)
    if not path.is_file():
        series = ", ".join(n for n, s in SAMPLES.items() if s.kind == "series")
        raise DataError(f"'{data}' is neither a CSV/Parquet file nor a built-in series ({series})")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        else:
            raise DataError(f"'{path}': unsupported file type '{suffix}'; use .csv or .parquet")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise DataError(f"cannot read '{path}': {str(err).splitlines()[0]}") from None
    return frame, f"{path.name}: {len(frame)} rows"


def choose_columns(
    frame: pd.DataFrame, *, time_col=None, target=None, covariates=None, all_columns=False
) -> Columns:
    """Resolve the time, target and covariate columns, with one-line errors for bad choices."""
    time_col = time_col or _detect_time_column(frame)
    if time_col is not None and time_col not in frame.columns:
        raise DataError(
            f"time column '{time_col}' not found; columns: {', '.join(map(str, frame.columns))}"
        )
    numeric = [
        c for c in frame.columns if c != time_col and pd.api.types.is_numeric_dtype(frame[c])
    ]
    covs = _names(covariates)
    if all_columns and target:
        raise DataError("pass either --target/--targets or --all-columns, not both")
    if all_columns:
        targets = [c for c in numeric if c not in covs]
    elif target:
        targets = _names(target)
    elif len(numeric) - len(covs) == 1:
        targets = [c for c in numeric if c not in covs]
    else:
        raise DataError(
            f"which column to forecast? pass --target NAME (or --targets a,b or --all-columns); "
            f"numeric columns: {', '.join(map(str, numeric)) or 'none'}"
        )
    for name in targets + covs:
        if name not in frame.columns:
            raise DataError(
                f"column '{name}' not found; columns: {', '.join(map(str, frame.columns))}"
            )
        if name not in numeric:
            raise DataError(
                f"column '{name}' is not numeric (e.g. {frame[name].iloc[0]!r}); "
                "forecast numeric columns only"
            )
    overlap = sorted(set(targets) & set(covs))
    if overlap:
        raise DataError(f"column '{overlap[0]}' is both a target and a covariate; list it once")
    if not targets:
        raise DataError("no numeric column left to forecast")
    return Columns(time_col, targets, covs)


def _names(value) -> list[str]:
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def _detect_time_column(frame: pd.DataFrame) -> str | None:
    """The first column that already holds datetimes or whose text parses as dates."""
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_datetime64_any_dtype(column):
            return name
        if not pd.api.types.is_numeric_dtype(column) and len(column):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = pd.to_datetime(column.head(20), errors="coerce")
            if parsed.notna().all():
                return name
    return None


def make_series(
    frame: pd.DataFrame, columns: Columns, fill: str = "error", *, description: str = "", warn=None
) -> Series:
    """Order by time, apply the missing-value policy and return the numeric inputs.

    Unsorted timestamps are sorted (with a warning through `warn`); duplicate timestamps
    are an error, since which row to keep is the user's call.
    """
    if fill not in FILLS:
        raise DataError(f"unknown fill '{fill}'; choose one of: {', '.join(FILLS)}")
    times = None
    if columns.time is not None:
        times = pd.to_datetime(frame[columns.time], errors="coerce")
        if times.isna().any():
            row = int(np.flatnonzero(times.isna().to_numpy())[0])
            raise DataError(
                f"time column '{columns.time}' has a missing or unparseable value "
                f"at row {row}: {frame[columns.time].iloc[row]!r}"
            )
        duplicated = times[times.duplicated()]
        if len(duplicated):
            raise DataError(
                f"time column '{columns.time}' has {len(duplicated)} duplicate "
                f"timestamp(s), e.g. {duplicated.iloc[0]}; aggregate or drop them first"
            )
        if not times.is_monotonic_increasing:
            if warn:
                warn(f"rows were not in time order; sorted by '{columns.time}'")
            order = np.argsort(times.to_numpy(), kind="stable")
            frame, times = frame.iloc[order], times.iloc[order]
    values = frame[columns.inputs].astype("float64")
    values, times = _fill(values, times, fill)
    if times is not None:
        times = pd.DatetimeIndex(times)
    return Series(values.to_numpy(np.float32), columns.inputs, columns.targets, times, description)


def _fill(values: pd.DataFrame, times, fill: str):
    missing = values.isna()
    if not missing.to_numpy().any():
        return values, times
    count, worst = int(missing.to_numpy().sum()), missing.sum().idxmax()
    if fill == "error":
        raise DataError(
            f"{count} missing value(s) (e.g. in '{worst}'); pass --fill "
            "ffill|interpolate|drop to handle them"
        )
    if fill == "drop":
        keep = ~missing.any(axis=1).to_numpy()
        return values[keep], None if times is None else times[keep]
    filled = values.ffill() if fill == "ffill" else values.interpolate(limit_direction="both")
    return filled.bfill(), times


def split_borders(
    rows: int,
    lookback: int,
    horizon: int,
    val_split: float,
    test_split: float,
    split_rows: str | None = None,
) -> dict[str, tuple[int, int]]:
    """Chronological parts as (first, end) row ranges of the rows each part forecasts.

    `split_rows` "train,val,test" gives exact row counts (the ETT protocol: "8640,2880,2880");
    otherwise the last fractions of the rows go to validation and test.
    """
    if split_rows:
        counts = [int(v) for v in str(split_rows).split(",")]
        if len(counts) != 3 or min(counts) < 0 or sum(counts) > rows:
            raise DataError(
                f"split_rows '{split_rows}' must be three row counts train,val,test "
                f"that sum to at most the {rows} rows"
            )
        train, val, test = counts
    else:
        test = int(round(rows * test_split))
        val = int(round(rows * val_split))
        train = rows - val - test
    need = lookback + horizon
    if train < need or (val and val < horizon) or (test and test < horizon):
        raise DataError(
            f"series too short: {rows} rows give train {train}, validation {val}, test {test}; "
            f"lookback {lookback} + horizon {horizon} need at least {need} training rows and "
            f"{horizon} rows in each other part; lower --lookback/--horizon or use a longer series"
        )
    parts = {"train": (0, train)}
    if val:
        parts["val"] = (train, train + val)
    if test:
        parts["test"] = (train + val, train + val + test)
    return parts


@dataclass(frozen=True)
class Scaler:
    """Per-column z-scoring; a constant column keeps scale 1 (no division by zero)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        std = np.where(std > 1e-8 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)


def window_starts(first: int, end: int, lookback: int, horizon: int) -> np.ndarray:
    """Start rows of every window whose forecast lies in rows [first, end) (inputs may precede)."""
    begin = max(0, first - lookback)
    return np.arange(begin, end - lookback - horizon + 1)


def window_dataset(
    values: np.ndarray,
    starts: np.ndarray,
    lookback: int,
    horizon: int,
    n_targets: int,
    batch_size: int,
    *,
    shuffle=False,
    seed=0,
) -> tf.data.Dataset:
    """Batches of (inputs (B, lookback, inputs), targets (B, horizon, n_targets)) cut in tf.data."""
    table = tf.constant(values, tf.float32)
    ds = tf.data.Dataset.from_tensor_slices(starts.astype(np.int64))
    if shuffle:
        ds = ds.shuffle(len(starts), seed=seed, reshuffle_each_iteration=True)
    past = tf.range(lookback, dtype=tf.int64)
    future = tf.range(lookback, lookback + horizon, dtype=tf.int64)

    def cut(start):
        x = tf.gather(table, start[:, None] + past)
        y = tf.gather(table, start[:, None] + future)[..., :n_targets]
        return x, y

    return (
        ds.batch(batch_size)
        .map(cut, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def windows(values: np.ndarray, starts: np.ndarray, lookback: int, horizon: int, n_targets: int):
    """All windows as arrays (for evaluation): inputs (N, lookback, C), targets (N, horizon, T)."""
    past = starts[:, None] + np.arange(lookback)
    future = starts[:, None] + np.arange(lookback, lookback + horizon)
    return values[past], values[future][..., :n_targets]


def infer_step(times: pd.DatetimeIndex | None) -> pd.Timedelta | None:
    """The typical interval between rows (median), or None without a time column."""
    if times is None or len(times) < 2:
        return None
    return pd.Series(times).diff().median()


def infer_season(step: pd.Timedelta | None) -> int:
    """A seasonal period from the sampling interval (hourly 24, daily 7, ...); 1 when unknown."""
    if step is None:
        return 1
    seconds = step.total_seconds()
    for interval, season in _SEASONS:
        if abs(seconds - interval) <= 0.1 * interval:
            return season
    return 1
