"""The series data layer, the baselines and the sequence models, on small made-up arrays."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dltoolkit.core.errors import DataError
from dltoolkit.data.series import Scaler, split_borders, window_dataset, window_starts, windows
from dltoolkit.models.sequence import MODELS, PinballLoss, SequenceForecaster
from dltoolkit.tasks.forecast_eval import mase_scale, naive, seasonal_naive


def test_split_borders_by_fraction_and_by_rows():
    assert split_borders(100, 10, 5, 0.2, 0.1) == {
        "train": (0, 70),
        "val": (70, 90),
        "test": (90, 100),
    }
    assert split_borders(100, 10, 5, 0.2, 0.1, "50,20,20") == {
        "train": (0, 50),
        "val": (50, 70),
        "test": (70, 90),
    }
    with pytest.raises(DataError, match="series too short: 30 rows"):
        split_borders(30, 20, 5, 0.2, 0.2)
    with pytest.raises(DataError, match="three row counts"):
        split_borders(100, 10, 5, 0.2, 0.1, "50,60")


def test_windows_forecast_inside_their_part_and_match_the_tf_data_pipeline():
    values = np.arange(300, dtype=np.float32).reshape(150, 2)  # row r holds 2r, 2r+1
    starts = window_starts(100, 150, lookback=20, horizon=5)
    assert starts[0] == 80 and starts[-1] == 125  # inputs may precede the border...
    past, future = windows(values, starts, 20, 5, n_targets=1)
    forecast_rows = future[..., 0] / 2
    assert forecast_rows.min() == 100 and forecast_rows.max() == 149  # ...forecasts never do
    batches = list(window_dataset(values, starts, 20, 5, 1, batch_size=16))
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), past)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), future)


def test_scaler_keeps_constant_columns_finite():
    values = np.array([[1.0, 5.0], [3.0, 5.0]], np.float32)
    scaler = Scaler.fit(values)
    np.testing.assert_allclose(scaler.transform(values), [[-1, 0], [1, 0]])


def test_baselines_and_mase_scale():
    past = np.arange(12, dtype=float).reshape(1, 12, 1)
    assert naive(past, 3)[0, :, 0].tolist() == [11, 11, 11]
    assert seasonal_naive(past, 5, season=4)[0, :, 0].tolist() == [8, 9, 10, 11, 8]
    train = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0], [6.0, 1.0]])
    scale = mase_scale(train, season=1)
    assert scale[0] == 2.0 and np.isnan(scale[1])  # a constant target has no MASE scale


def test_pinball_loss_matches_its_definition():
    actual = np.array([[[1.0]]], np.float32)
    forecast = np.array([[[[0.0, 1.0, 3.0]]]], np.float32)
    loss = float(PinballLoss([0.1, 0.5, 0.9])(actual, forecast))
    assert loss == pytest.approx((0.1 * 1 + 0 + 0.1 * 2) / 3)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_forecasts_quantiles_and_round_trips(name, tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 32, 3)).astype(np.float32)
    model = SequenceForecaster(
        name,
        32,
        3,
        2,
        6,
        quantiles=3,
        layers_=1,
        patch_len=8,
        stride=4,
        units=8,
        d_model=8,
        heads=2,
        ff_dim=16,
        kernel=5,
    )
    out = model(x)
    assert out.shape == (4, 6, 2, 3)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again(x), out, atol=1e-6)


def test_tsmixer_forecasts_a_target_from_the_covariate_that_leads_it():
    """The target repeats a noise covariate four steps later: the next four targets are in
    the window's covariate column, which tsmixer mixes in and a channel-independent model
    cannot."""
    rng = np.random.default_rng(0)
    covariate = rng.normal(size=1500).astype(np.float32)
    series = np.stack([np.roll(covariate, 4), covariate], axis=1)[4:]
    starts = np.arange(0, len(series) - 16)
    x = np.stack([series[s : s + 12] for s in starts])
    y = np.stack([series[s + 12 : s + 16, :1] for s in starts])
    errors = {}
    for name in ("tsmixer", "linear"):
        keras.utils.set_random_seed(0)
        model = SequenceForecaster(name, 12, 2, 1, 4, layers_=2, ff_dim=32, dropout=0.0)
        model.compile(keras.optimizers.Adam(1e-2), loss="mse")
        model.fit(x, y, batch_size=64, epochs=6, verbose=0)
        errors[name] = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    assert errors["tsmixer"] < 0.2 < 0.8 < errors["linear"], errors
