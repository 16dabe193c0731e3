"""Forecaster end to end on the real CO2 series: train, baselines, save/load, export, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import run_cli
from test_cli import assert_user_error, cli

from dltoolkit import Forecaster, load
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.config import read_recipe_file
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.data.samples import load_sample
from dltoolkit.layers.scaling import Standardize, Unstandardize
from dltoolkit.specs.forecast import AUTO_MODELS

LOOKBACK, HORIZON = 52, 13


@pytest.fixture(scope="module")
def trained(fits):
    """6 epochs on the CO2 sample, quantiles 0.1, 0.5, 0.9 (contract_cases.FORECAST)."""
    model, folder = fits.get("forecast")
    return model, folder / "run"


def sales_frame(days=420, seed=0) -> pd.DataFrame:
    """Daily sales with a trend, a weekly cycle, a promotion effect and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    promo = (rng.random(days) < 0.15).astype(float)
    sales = 100 + 0.1 * t + 12 * np.sin(2 * np.pi * t / 7) + 15 * promo + rng.normal(0, 2, days)
    dates = pd.date_range("2024-01-01", periods=days, freq="D")
    return pd.DataFrame(
        {"date": dates.strftime("%Y-%m-%d"), "sales": sales, "promo": promo, "store": "north"}
    )


def test_fit_writes_a_run_and_beats_the_baselines(trained):
    model, out = trained
    for name in (
        "recipe.toml",
        "model.keras",
        "state.json",
        "history.csv",
        "metrics.json",
        "report.html",
    ):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["horizon"] == HORIZON and m["windows"] == 457 - HORIZON + 1
    for key in ("mse", "mae", "mse_units", "mae_units", "mase", "naive_mse", "seasonal_naive_mase"):
        assert np.isfinite(m[key]), key
    assert m["mse"] < m["naive_mse"] and m["mase"] < m["naive_mase"]
    assert 0.5 < m["coverage"] <= 1 and m["interval"] == "0.1-0.9"
    report = (out / "report.html").read_text()
    assert "Forecast vs actual" in report and "seasonal-naive" in report
    assert (out / "plots" / "forecasts.png").stat().st_size > 5000
    assert read_recipe_file(out)["params"]["quantiles"] == "0.1,0.5,0.9"


def test_loss_falls_for_every_candidate_of_the_default_model_auto(trained):
    model, out = trained
    history = read_history(out / "history.csv")
    for phase in AUTO_MODELS:
        losses = [row["loss"] for row in history if row["phase"] == phase]
        assert len(losses) == 6 and losses[-1] < 0.5 * losses[0], phase
    assert model.metrics_["model_choice"]["model"] in AUTO_MODELS


def test_predict_gives_next_steps_in_units_from_rows_or_a_raw_window(trained):
    model, _ = trained
    frame = load_sample("co2").iloc[:1500]
    rows = model.predict(frame)
    assert [r["step"] for r in rows] == list(range(1, HORIZON + 1))
    assert rows[0]["time"] == str(frame["week"].iloc[-1] + pd.Timedelta(weeks=1))
    last = frame["co2"].iloc[-1]
    assert all(abs(r["co2"] - last) < 8 for r in rows)  # ppm, not z-scores
    assert all(r["co2"] == r["co2_q0.5"] for r in rows)
    assert np.mean([r["co2_q0.1"] <= r["co2_q0.9"] for r in rows]) > 0.9
    window = frame[["co2"]].to_numpy()[-LOOKBACK:]
    from_array = model.predict(window)
    np.testing.assert_allclose([r["co2"] for r in from_array], [r["co2"] for r in rows], rtol=1e-6)


def test_state_scaler_comes_from_the_training_rows_only(trained):
    model, _ = trained
    values = load_sample("co2")["co2"].to_numpy()
    train_rows = len(values) - 2 * round(len(values) * 0.2)
    assert model.scaler_.mean[0] == pytest.approx(values[:train_rows].mean(), rel=1e-5)
    assert model.season_ == 52


def test_cli_forecast_predict_evaluate_with_covariates(tmp_path, capsys):
    frame = sales_frame()
    frame.iloc[:360].to_csv(tmp_path / "sales.csv", index=False)
    frame.iloc[300:].to_parquet(tmp_path / "holdout.parquet")
    frame.iloc[-40:].drop(columns="date").to_csv(tmp_path / "recent.csv", index=False)
    out = tmp_path / "run"
    code, stdout, err = cli(
        capsys,
        "forecast",
        "--data",
        tmp_path / "sales.csv",
        "--target",
        "sales",
        "--covariates",
        "promo",
        "--model",
        "tsmixer",
        "--lookback",
        28,
        "--horizon",
        7,
        "--epochs",
        3,
        "--out",
        out,
        "--json",
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["metrics"]["seasonal_naive_mse"] > 0 and "naive_mae_units" in summary["metrics"]
    assert (out / "export" / "run" / "1" / "saved_model.pb").is_file()
    code, stdout, _ = cli(
        capsys, "predict", out, "--data", tmp_path / "recent.csv", "--output", tmp_path / "pred.csv"
    )
    assert code == 0 and "Predictions (7)" in stdout
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert lines[0] == "input,step,sales" and len(lines) == 8
    code, stdout, _ = cli(capsys, "evaluate", out, "--data", tmp_path / "holdout.parquet", "--json")
    metrics = json.loads(stdout)
    assert code == 0 and metrics["windows"] == 120 - 28 - 7 + 1 and "naive_mse" in metrics
    recent = pd.read_csv(tmp_path / "recent.csv")[["sales", "promo"]].to_numpy(np.float32)
    assert_export_matches_the_old_formula(
        load(out), recent[None, -28:], out / "export" / "run" / "1"
    )


@pytest.fixture(scope="module")
def cli_run(trained):
    return trained[1]


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"drop": "co2"}, ["missing column(s) co2"]),
        ({"rows": 20}, ["20 rows", "last 52 rows"]),
    ],
)
def test_predict_rejects_wrong_columns_and_too_few_rows(
    cli_run, tmp_path, capsys, change, fragments
):
    frame = load_sample("co2").iloc[:600]
    if "drop" in change:
        frame = frame.rename(columns={"co2": "ppm"})
    else:
        frame = frame.iloc[-change["rows"] :]
    frame.to_csv(tmp_path / "recent.csv", index=False)
    before = sorted(p.name for p in cli_run.iterdir())
    code, out, err = cli(capsys, "predict", cli_run, "--data", tmp_path / "recent.csv")
    assert_user_error(code, out, err, *fragments)
    assert sorted(p.name for p in cli_run.iterdir()) == before


def _write(tmp_path, frame) -> str:
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return str(path)


BAD_DATA = {
    "missing target": (lambda f: f, ["--target", "revenue"], "column 'revenue' not found"),
    "non-numeric target": (lambda f: f, ["--target", "store"], "'store' is not numeric"),
    "ambiguous target": (lambda f: f, [], "which column to forecast"),
    "too short": (lambda f: f.iloc[:50], ["--target", "sales"], "series too short"),
    "duplicate timestamps": (
        lambda f: pd.concat([f, f.iloc[[5]]]),
        ["--target", "sales"],
        "duplicate timestamp",
    ),
    "missing values": (
        lambda f: f.assign(sales=f.sales.where(f.index % 50 != 3)),
        ["--target", "sales"],
        "--fill ffill|interpolate|drop",
    ),
    "unknown fill": (
        lambda f: f,
        ["--target", "sales", "--fill", "zero"],
        "parameter 'fill' is 'zero'",
    ),
    "covariates on a channel-independent model": (
        lambda f: f,
        ["--target", "sales", "--covariates", "promo"],
        "would ignore covariates",
    ),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    edit, options, fragment = BAD_DATA[case]
    out = tmp_path / "run"
    code, stdout, err = cli(
        capsys,
        "forecast",
        "--data",
        _write(tmp_path, edit(sales_frame())),
        "--lookback",
        28,
        "--horizon",
        7,
        "--epochs",
        1,
        "--out",
        out,
        *options,
    )
    assert_user_error(code, stdout, err, fragment)
    assert not out.exists()


def test_unsorted_rows_are_sorted_with_a_warning_and_gaps_filled(tmp_path):
    frame = sales_frame(days=200)
    frame.loc[10:12, "sales"] = np.nan
    frame["flat"] = 5.0  # a constant input: no division by zero in scaling
    shuffled = frame.sample(frac=1.0, random_state=0)
    model = Forecaster(
        target="sales,flat", model="linear", lookback=21, horizon=7, epochs=2, fill="interpolate"
    )
    with pytest.warns(UserWarning, match="sorted by 'date'"):
        model.fit(shuffled, out=tmp_path / "run", progress=False)
    assert model.scaler_.std[1] == 1.0
    assert np.isfinite(model.metrics_["mse"])
    assert [r["sales"] for r in model.predict(frame)] == pytest.approx(
        [r["sales"] for r in model.predict(shuffled)]
    )


def test_batch_norm_patch_transformer_learns_and_round_trips(tmp_path):
    out = tmp_path / "bn"
    model = Forecaster(
        model="patch-transformer",
        lookback=LOOKBACK,
        horizon=HORIZON,
        epochs=3,
        layers=1,
        seed=2,
        norm="batch",
        learning_rate=3e-3,
    ).fit("co2", out=out, progress=False)
    block = model.model_.get_layer("network").body.blocks[0]
    assert {type(block.norm1).__name__, type(block.norm2).__name__} == {"BatchNormalization"}
    losses = [row["loss"] for row in read_history(out / "history.csv")]
    assert losses[-1] < losses[0] and model.metrics_["mse"] < model.metrics_["naive_mse"]
    frame = load_sample("co2").iloc[:1500]
    np.testing.assert_allclose(
        [r["co2"] for r in load(out).predict(frame)],
        [r["co2"] for r in model.predict(frame)],
        rtol=1e-6,
    )


def test_model_auto_keeps_the_candidate_with_the_lowest_validation_loss(trained, tmp_path):
    model, out = trained
    history = read_history(out / "history.csv")
    assert list(dict.fromkeys(row["phase"] for row in history)) == list(AUTO_MODELS)
    best = {k: min(r["val_loss"] for r in history if r["phase"] == k) for k in AUTO_MODELS}
    choice = json.loads((out / "metrics.json").read_text())["model_choice"]
    assert choice == {"model": min(best, key=best.get), "validation_loss": best}
    assert model.model_.get_layer("network").get_config()["model"] == choice["model"]
    assert "Model auto: " + choice["model"] in (out / "report.html").read_text()
    with pytest.raises(ConfigError, match="val_split"):
        Forecaster(model="auto", val_split=0.0).fit("co2", out=tmp_path / "x", progress=False)


def test_an_ensemble_averages_networks_trained_from_other_seeds(tmp_path, serving):
    out = tmp_path / "ensemble"
    model = Forecaster(
        model="dlinear", members=3, lookback=LOOKBACK, horizon=HORIZON, epochs=2, seed=4
    ).fit("co2", out=out, progress=False)
    history = read_history(out / "history.csv")
    phases = ["train", "dlinear-members"]  # members 2 and 3 train side by side, one phase
    assert list(dict.fromkeys(row["phase"] for row in history)) == phases
    assert [row["epoch"] for row in history] == list(range(1, 5))
    assert set(model.metrics_["ensemble"]["validation_loss"]) == set(phases)
    assert "Ensemble: the mean of 3 networks" in (out / "report.html").read_text()
    network = model.model_.get_layer("network")
    series = load_sample("co2")["co2"].to_numpy(np.float32)
    ends = np.arange(700, 1400, 25)
    window = np.stack([series[end - LOOKBACK : end, None] for end in ends])
    actual = np.stack([series[end : end + HORIZON, None] for end in ends])
    scaled = (window - model.scaler_.mean) / model.scaler_.std
    forecasts = [np.asarray(m(scaled)) for m in network.members]
    assert len(forecasts) == 3
    assert not np.allclose(forecasts[0], forecasts[1]) and not np.allclose(*forecasts[1:])
    # Each stacked member learned on its own loss: as good as the one trained alone.
    errors = [
        np.mean((f * model.scaler_.std + model.scaler_.mean - actual) ** 2) for f in forecasts
    ]
    training_mean = np.mean((model.scaler_.mean - actual) ** 2)
    assert max(errors) < 0.1 * training_mean and max(errors[1:]) < 1.5 * errors[0], errors
    np.testing.assert_allclose(np.asarray(network(scaled)), np.mean(forecasts, 0), rtol=1e-5)
    frame = load_sample("co2").iloc[:600]
    np.testing.assert_allclose(
        [r["co2"] for r in load(out).predict(frame)],
        [r["co2"] for r in model.predict(frame)],
        rtol=1e-6,
    )
    export = model.export(tmp_path / "export")
    assert_export_matches_the_old_formula(model, window, export)
    served = serving.start().call(export, {"window": window})  # a fresh TensorFlow-only process
    units = np.asarray(network(scaled)) * model.scaler_.std + model.scaler_.mean
    np.testing.assert_allclose(served["forecast"], units, rtol=1e-5)


def test_unknown_parameters_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'horizon'"):
        Forecaster(horizn=3)
    with pytest.raises(ConfigError, match="parameter 'model' is 'arima'"):
        Forecaster(model="arima").fit("co2", out="/nonexistent/never")
    with pytest.raises(ConfigError, match="norm"):
        Forecaster(norm="group").fit("co2", out="/nonexistent/never")
    with pytest.raises(ConfigError, match="including 0.5"):
        Forecaster(quantiles="0.1,0.9").fit("co2", out="/nonexistent/never")
    with pytest.raises(ConfigError, match="sum below 1"):
        Forecaster(val_split=0.5, test_split=0.5).fit("co2", out="/nonexistent/never")
    with pytest.raises(DataError, match="neither a CSV/Parquet file nor a built-in series"):
        Forecaster().fit("no-such.csv", out="/nonexistent/never")


def assert_export_matches_the_old_formula(model, window: np.ndarray, export: Path) -> None:
    """The SavedModel gives what the export before issue 20 computed around the network:
    z-score with the training statistics, the network, back to units (float64 here)."""
    targets, levels = len(model.targets_), model.levels
    mean, std = model.scaler_.mean.astype(np.float64), model.scaler_.std.astype(np.float64)
    scaled = ((window.astype(np.float64) - mean) / std).astype(np.float32)
    output = np.asarray(model.model_.get_layer("network")(scaled), np.float64)
    mean, std = mean[:targets], std[:targets]
    if levels:
        expected = {"quantiles": output * std[:, None] + mean[:, None]}
        expected["forecast"] = expected["quantiles"][..., levels.index(0.5)]
    else:
        expected = {"forecast": output * std + mean}
    served = tf.saved_model.load(str(export)).signatures["serving_default"](
        window=tf.constant(window)
    )
    assert sorted(served) == sorted(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(served[name].numpy(), values, rtol=1e-5, err_msg=name)


def test_export_computes_the_old_scaling_formula(trained, tmp_path):
    model, _ = trained
    series = load_sample("co2")["co2"].to_numpy(np.float32)
    window = np.stack([series[end - LOOKBACK : end, None] for end in (600, 1300, 2000)])
    assert_export_matches_the_old_formula(model, window, model.export(tmp_path / "export"))


def test_scaling_layers_invert_each_other_and_rebuild_from_their_config():
    mean, std = np.array([3.0, -1.0], np.float32), np.array([2.0, 0.5], np.float32)
    x = np.random.default_rng(0).normal(size=(4, 5, 2)).astype(np.float32) * std + mean
    standardize = Standardize(mean, std)
    z = np.asarray(standardize(x))
    np.testing.assert_allclose(z, (x - mean) / std, rtol=1e-6)
    quantiles = np.repeat(z[..., None], 3, axis=-1)  # (N, H, targets, levels)
    unscale = Unstandardize.from_config(Unstandardize(mean, std, axis=-2).get_config())
    np.testing.assert_allclose(np.asarray(unscale(quantiles))[..., 1], x, rtol=1e-5)
    assert Standardize.from_config(standardize.get_config()).get_config()["mean"] == [3.0, -1.0]


def test_tflite_export_matches_predict(trained, tmp_path):
    model, _ = trained
    path = model.export(tmp_path / "lite", format="tflite")
    frame = load_sample("co2").iloc[:1000]
    window = frame[["co2"]].to_numpy(np.float32)[None, -LOOKBACK:]
    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner()
    served = runner(window=window)
    np.testing.assert_allclose(
        served["forecast"][0, :, 0], [r["co2"] for r in model.predict(frame)], rtol=1e-5
    )
    assert served["quantiles"].shape == (1, HORIZON, 1, 3)


@pytest.mark.slow
def test_default_command_and_recipe_file_run_offline(tmp_path):
    proc = run_cli("forecast", "--out", tmp_path / "default", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout)["metrics"]
    assert metrics["mse"] < metrics["seasonal_naive_mse"] < metrics["naive_mse"]
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "forecast_co2.toml"
    proc = run_cli("run", recipe, "--set", "epochs=3", "--out", tmp_path / "recipe", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_recipe_file(tmp_path / "recipe")["params"]["lookback"] == 104
