"""A recipe's learned state as JSON: one codec for every recipe's `state.json`.

A recipe names the attributes that hold what it learned from its data (`Recipe.learned`:
class names, shapes, scalers, thresholds, vocabularies); `encode`/`decode` turn them into
JSON and back, arrays keeping their dtype and dataclasses (of dltoolkit) their type.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any

import numpy as np
import pandas as pd

from dltoolkit.core.errors import RunDirError

FORMAT = 2  # state.json's format; 1 (no "format" key) is dltoolkit 0.1's
SINCE = "0.2.0"  # the first dltoolkit version that writes this format


def encode(value: Any) -> Any:
    """`value` as JSON-ready data that `decode` turns back into an equal value."""
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timedelta):
        return {"__timedelta__": value.total_seconds()}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        kind = type(value)
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__dataclass__": f"{kind.__module__}:{kind.__qualname__}", "fields": fields}
    return value


def decode(value: Any) -> Any:
    """The value `encode` made `value` from."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        return np.array(value["__array__"], dtype=value["dtype"])
    if "__timedelta__" in value:
        return pd.Timedelta(seconds=value["__timedelta__"])
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    if "__dataclass__" in value:
        kind = _dataclass(value["__dataclass__"])
        return kind(**{k: decode(v) for k, v in value["fields"].items()})
    return {k: decode(v) for k, v in value.items()}


def dump(values: dict[str, Any]) -> dict:
    """The state.json document for learned `values` (name -> value)."""
    return {"format": FORMAT, **{name: encode(v) for name, v in values.items()}}


def load(document: dict, where: str) -> dict[str, Any]:
    """The learned values of a state.json document; a run of another format is a one-line
    error that says to retrain."""
    found = document.get("format", 1)
    if found != FORMAT:
        version = "0.1" if found == 1 else f"state format {found}"
        raise RunDirError(
            f"'{where}' was saved by dltoolkit {version}; this dltoolkit (from {SINCE}) keeps "
            f"preprocessing inside model.keras and cannot read it: retrain the run with this "
            "version (the same command, with --overwrite)"
        )
    return {k: decode(v) for k, v in document.items() if k != "format"}


def interrupted(run) -> dict[str, Any]:
    """What an interrupted run in RunDir `run` had learned before its checkpoints (its
    state.json's values; empty for a new run): a resumed run keeps its vocabulary."""
    if not run.state_file.is_file():
        return {}
    return load(json.loads(run.state_file.read_text()), str(run.path))


def _dataclass(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not module.startswith("dltoolkit."):
        raise RunDirError(f"state.json names a type outside dltoolkit ({name}); refusing it")
    kind = importlib.import_module(module)
    for part in qualname.split("."):
        kind = getattr(kind, part)
    return kind
