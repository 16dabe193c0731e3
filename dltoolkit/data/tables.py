"""Tables for anomaly detection: reading, column schema, encoding, robust scaling, windows.

A table's feature columns are numeric (robust-scaled with training medians and IQRs) or
categorical (one-hot over the training categories; an unseen category encodes as zeros).
An optional label column (0/1, bool, or two values of which the rarer is the anomaly) is
kept apart: it is used for evaluation and threshold choice only, never as a feature.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dltoolkit.core.errors import DataError
from dltoolkit.data.samples import SAMPLES, load_sample
from dltoolkit.data.series import _names, read_frame


@dataclass
class Schema:
    """Feature columns and everything learned from the training rows to encode them."""

    numeric: list[str]
    categorical: dict[str, list[str]] = field(default_factory=dict)
    median: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return self.numeric + list(self.categorical)

    @property
    def width(self) -> int:
        """Encoded features: one per numeric column, one per training category."""
        return len(self.numeric) + sum(len(v) for v in self.categorical.values())

    def groups(self) -> np.ndarray:
        """(width, columns) 0/1 matrix: which input column each encoded feature comes from."""
        owner = list(range(len(self.numeric)))
        for i, cats in enumerate(self.categorical.values()):
            owner += [len(self.numeric) + i] * len(cats)
        matrix = np.zeros((self.width, len(self.columns)), np.float32)
        matrix[np.arange(self.width), owner] = 1.0
        return matrix

    def to_dict(self) -> dict:
        return asdict(self)


def read_table(data, label_col: str | None = None) -> tuple[pd.DataFrame, str, str | None]:
    """(frame, description, label column) from a path, a built-in table, a DataFrame or (X, y).

    NPZ files and (X, y) arrays get columns x0..x{d-1} and, when y is given, a 'label' column.
    """
    if isinstance(data, tuple) and len(data) == 2:
        frame = _xy_frame(np.asarray(data[0]), None if data[1] is None else np.asarray(data[1]))
        return (
            frame,
            f"arrays: {len(frame)} rows",
            label_col or ("label" if data[1] is not None else None),
        )
    if isinstance(data, np.ndarray):
        return _xy_frame(data, None), f"array: {len(data)} rows", label_col
    if isinstance(data, str) and data in SAMPLES and SAMPLES[data].kind == "table":
        frame, sample_label = load_sample(data)
        return frame, f"sample '{data}': {SAMPLES[data].description}", label_col or sample_label
    path = Path(str(data)) if isinstance(data, str | Path) else None
    if path is not None and path.suffix.lower() == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            if "X" not in npz:
                raise DataError(f"'{path}': an NPZ table needs an array 'X' (and optionally 'y')")
            frame = _xy_frame(npz["X"], npz.get("y"))
        return (
            frame,
            f"{path.name}: {len(frame)} rows",
            label_col or ("label" if "label" in frame else None),
        )
    if path is not None and not path.is_file() and data not in SAMPLES:
        tables = ", ".join(n for n, s in SAMPLES.items() if s.kind == "table")
        raise DataError(
            f"'{data}' is neither a CSV/Parquet/NPZ file nor a built-in table ({tables})"
        )
    frame, description = read_frame(data)
    return frame, description, label_col


def _xy_frame(x: np.ndarray, y: np.ndarray | None) -> pd.DataFrame:
    if x.ndim != 2:
        raise DataError(f"feature array X must be 2-D (rows, features); got shape {x.shape}")
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    if y is not None:
        if len(y) != len(x):
            raise DataError(f"X has {len(x)} rows but y has {len(y)}")
        frame["label"] = y
    return frame


def infer_schema(
    frame: pd.DataFrame,
    *,
    exclude: list[str],
    columns: str | None = None,
    categorical: str | None = None,
    max_categories: int = 50,
) -> tuple[Schema, list[str]]:
    """Choose feature columns; returns the schema (unfitted) and the columns left out, with why."""
    forced = _names(categorical)
    wanted = _names(columns) or [c for c in frame.columns if c not in exclude]
    for name in wanted + forced:
        if name not in frame.columns:
            raise DataError(
                f"column '{name}' not found; columns: {', '.join(map(str, frame.columns))}"
            )
    numeric, cats, skipped = [], {}, []
    for name in wanted:
        series = frame[name]
        if name not in forced and (
            pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
        ):
            numeric.append(str(name))
        elif series.nunique(dropna=True) <= max_categories:
            cats[str(name)] = []
        else:
            skipped.append(f"{name} ({series.nunique()} distinct text values)")
    if not numeric:
        found = ", ".join(map(str, wanted)) or "none"
        raise DataError(
            f"no numeric columns to learn from (feature columns: {found}); "
            "anomaly detection needs at least one numeric column"
        )
    return Schema(numeric, cats), skipped


def numeric_values(frame: pd.DataFrame, schema: Schema, nan: str, description: str) -> np.ndarray:
    """The numeric columns as float32 (rows, n), NaN where missing; a DataError if a row is bad
    (see `numeric_rows`)."""
    values, bad = numeric_rows(frame, schema, nan)
    if bad:
        row, reason = next(iter(bad.items()))
        raise DataError(
            f"{description}: {len(bad)} row(s) cannot be used, e.g. row {row}: {reason}; "
            "clean them, or pass --set nan=impute to replace NaN/inf by the training median"
        )
    return values


def numeric_rows(frame: pd.DataFrame, schema: Schema, nan: str) -> tuple[np.ndarray, dict]:
    """The numeric columns as float32 (rows, n), NaN where missing, and why each bad row is bad.

    A row is bad when a numeric column holds something that is not a number, or (with the
    `error` NaN policy) nothing, NaN or inf. Returns {row index: one-line reason}.
    """
    cells = frame[schema.numeric]
    numbers = cells.apply(pd.to_numeric, errors="coerce")
    values = numbers.to_numpy(np.float64, na_value=np.nan).astype(np.float32)
    text = (numbers.isna() & cells.notna()).to_numpy()
    bad = text | (~np.isfinite(values) if nan == "error" else False)
    reasons = {}
    for row in np.flatnonzero(bad.any(axis=1)):
        col = int(np.argmax(bad[row]))
        name = schema.numeric[col]
        reasons[int(row)] = (
            f"{str(cells.iat[row, col])[:40]!r} in column '{name}' is not a number"
            if text[row, col]
            else f"NaN/inf value in column '{name}'"
        )
    return np.where(np.isfinite(values), values, np.nan).astype(np.float32), reasons


def fit_schema(schema: Schema, numeric: np.ndarray, frame: pd.DataFrame) -> Schema:
    """Learn medians, robust scales (IQR, else std, else 1) and categories from training rows."""
    median = np.nanmedian(numeric, axis=0)
    q75, q25 = np.nanpercentile(numeric, [75, 25], axis=0)
    scale = (q75 - q25) / 1.349  # an IQR in standard-deviation units
    std = np.nanstd(numeric, axis=0)
    scale = np.where(scale > 1e-8, scale, np.where(std > 1e-8, std, 1.0))
    median = np.where(np.isfinite(median), median, 0.0)
    cats = {name: sorted(map(str, frame[name].dropna().unique())) for name in schema.categorical}
    return Schema(schema.numeric, cats, median.tolist(), scale.tolist())


def encode(schema: Schema, numeric: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
    """Scaled numeric columns then one-hot categories: float32 (rows, width); NaN → median."""
    median, scale = np.asarray(schema.median, np.float32), np.asarray(schema.scale, np.float32)
    parts = [(np.where(np.isnan(numeric), median, numeric) - median) / scale]
    for name, cats in schema.categorical.items():
        text = frame[name].astype(str).to_numpy()
        parts.append((text[:, None] == np.asarray(cats)[None, :]).astype(np.float32))
    return np.concatenate(parts, axis=1).astype(np.float32)


def binary_labels(frame: pd.DataFrame, label_col: str, description: str) -> tuple[np.ndarray, str]:
    """0/1 labels (1 = anomaly) and the value read as 'anomaly'."""
    if label_col not in frame.columns:
        raise DataError(
            f"label column '{label_col}' not found; columns: {', '.join(map(str, frame.columns))}"
        )
    values = frame[label_col]
    if values.isna().any():
        raise DataError(
            f"{description}: label column '{label_col}' has {int(values.isna().sum())} empty value(s)"
        )
    distinct = pd.unique(values)
    if len(distinct) > 2:
        shown = ", ".join(map(str, distinct[:5]))
        raise DataError(
            f"label column '{label_col}' has {len(distinct)} values ({shown}, ...); "
            "it must have two: normal and anomaly (e.g. 0/1)"
        )
    if set(map(str, distinct)) <= {"0", "1", "0.0", "1.0", "True", "False"}:
        positive = next((v for v in distinct if str(v) in ("1", "1.0", "True")), 1)
    else:  # two other values: the rarer one is the anomaly
        counts = values.value_counts()
        positive = counts.index[-1] if len(counts) == 2 else None
    return (values == positive).to_numpy(np.int32), str(positive)


def window_view(values: np.ndarray, window: int) -> np.ndarray:
    """All sliding windows (rows - window + 1, window, features), a view without copying."""
    if len(values) < window:
        raise DataError(f"{len(values)} rows are fewer than one window of {window}; lower --window")
    return np.lib.stride_tricks.sliding_window_view(values, window, axis=0).transpose(0, 2, 1)


def signature_name(column: str, taken: set[str]) -> str:
    """A SavedModel input name for `column` (letters, digits, '_'; unique)."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", str(column)).strip("_") or "column"
    if not name[0].isalpha():
        name = f"c_{name}"
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name
