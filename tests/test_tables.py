"""The table data layer: reading, schema, encoding, labels, windows, signature names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dltoolkit.core.errors import DataError
from dltoolkit.data import tables


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(80)],
            "amount": np.r_[np.arange(79.0), 1e6],
            "ok": [True, False] * 40,
            "site": ["a", "b", "c", "a"] * 20,
            "label": ["fraud"] * 5 + ["fine"] * 75,
        }
    )


def test_schema_encodes_numeric_robustly_and_categories_one_hot():
    data = frame()
    schema, skipped = tables.infer_schema(data, exclude=["label"], max_categories=10)
    assert schema.numeric == ["amount", "ok"] and list(schema.categorical) == ["site"]
    assert skipped == ["id (80 distinct text values)"]
    numeric = tables.numeric_values(data, schema, "error", "t")
    schema = tables.fit_schema(schema, numeric, data)
    assert schema.categorical == {"site": ["a", "b", "c"]} and schema.median[0] == pytest.approx(
        39.5
    )
    new = data.head(2).assign(site=["c", "zzz"])  # an unseen category encodes as zeros
    x = tables.encode(schema, tables.numeric_values(new, schema, "error", "t"), new)
    assert x.shape == (2, schema.width) == (2, 5)
    np.testing.assert_array_equal(x[:, 2:], [[0, 0, 1], [0, 0, 0]])
    assert abs(tables.encode(schema, numeric, data)[-1, 0]) > 1000  # the outlier stays extreme
    np.testing.assert_array_equal(schema.groups().argmax(axis=1), [0, 1, 2, 2, 2])


def test_labels_nan_policy_windows_and_errors():
    data = frame()
    labels, positive = tables.binary_labels(data, "label", "t")
    assert positive == "fraud" and labels.sum() == 5  # the rarer value is the anomaly
    assert tables.binary_labels(pd.DataFrame({"y": [True, False, False]}), "y", "t")[
        0
    ].tolist() == [1, 0, 0]
    schema, _ = tables.infer_schema(data, exclude=["label"])
    bad = data.assign(amount=data["amount"].replace(3.0, np.inf))
    with pytest.raises(DataError, match="NaN/inf.*'amount'"):
        tables.numeric_values(bad, schema, "error", "t")
    assert np.isnan(tables.numeric_values(bad, schema, "impute", "t")[3, 0])
    with pytest.raises(DataError, match="no numeric columns"):
        tables.infer_schema(data[["id", "site"]], exclude=[])
    assert tables.window_view(np.arange(10.0).reshape(5, 2), 3).shape == (3, 3, 2)
    taken: set[str] = set()
    names = [tables.signature_name(n, taken) for n in ("flow rate", "flow_rate", "3d", "é")]
    assert names == ["flow_rate", "flow_rate_2", "c_3d", "column"]
