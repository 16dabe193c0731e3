"""AnomalyDetector: trains on real tiny tables, scores, thresholds, round-trips and serves."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from test_cli import assert_user_error, cli

from dltoolkit import AnomalyDetector, load
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.data.samples import load_sample
from dltoolkit.models.autoencoder import MemberDense, build_autoencoder

FAST = {"epochs": 25, "batch_size": 64, "early_stopping_patience": 0}


def sensor_table(rows=600, seed=0) -> pd.DataFrame:
    """Four correlated readings driven by two hidden factors, plus a categorical site."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(rows, 2))
    loadings = np.array([[1.0, 0.5], [0.8, -0.6], [-0.4, 1.0], [0.3, 0.9]])
    values = factors @ loadings.T + 0.05 * rng.normal(size=(rows, 4))
    frame = pd.DataFrame(
        values * [10, 2, 5, 1] + [100, 0, -20, 3],
        columns=["flow rate", "pressure", "temp", "vibration"],
    )
    frame["site"] = rng.choice(["north", "south", "east"], size=rows)
    return frame


def perturb(frame: pd.DataFrame, column: str, by: float) -> pd.DataFrame:
    out = frame.copy()
    out[column] = out[column] + by
    return out


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("anomaly") / "sample"
    return AnomalyDetector(**FAST).fit(out=out, progress=False), out


@pytest.fixture(scope="module")
def sensor_run(fits):
    """FAST on sensor_table(), contamination 0.1, no held-out rows (contract_cases)."""
    detector, folder = fits.get("detect-anomalies")
    return detector, folder / "run"


def test_sample_trains_and_ranks_malignant_rows_higher(sample_run):
    detector, out = sample_run
    history = read_history(out / "history.csv")
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert detector.metrics_["part"] == "test" and detector.metrics_["samples"] == 80
    metrics = detector.evaluate("breast-cancer")
    assert metrics["roc_auc"] > 0.8 and metrics["average_precision"] > 0.3
    assert 0 < metrics["flagged"] < 0.2 * metrics["samples"]
    report = (out / "report.html").read_text()
    for section in ("Threshold", "contamination 0.05", "Top anomalies", "ROC and precision-recall"):
        assert section in report
    assert {"scores.png", "curves.png", "history.png"} <= {
        p.name for p in (out / "plots").iterdir()
    }


def test_threshold_honours_contamination(sensor_run):
    detector, _ = sensor_run
    flagged = detector.score(sensor_table())["anomaly"].mean()
    assert flagged == pytest.approx(0.1, abs=0.01)
    assert "contamination 0.1" in detector.threshold_how_


def test_contributions_point_at_the_perturbed_column(sensor_run):
    detector, _ = sensor_run
    normal = sensor_table(rows=50, seed=1)
    for column, by in (("pressure", 8.0), ("temp", -25.0)):
        out = detector.score(perturb(normal, column, by))
        assert (out["score"] > detector.score(normal)["score"]).all()
        assert out["anomaly"].mean() > 0.9
        top = np.array(detector.columns_)[out["contributions"].argmax(axis=1)]
        assert (top == column).mean() > 0.9, column
        np.testing.assert_allclose(out["contributions"].sum(axis=1), out["score"], rtol=1e-5)
    rows = detector.predict(perturb(normal.head(3), "pressure", 8.0))
    assert [r["top_columns"][0]["column"] for r in rows] == ["pressure"] * 3
    assert all(r["anomaly"] for r in rows)


def test_batched_members_are_independent_autoencoders_averaged_by_the_score(sensor_run):
    """The trained ensemble's members (one MemberDense set of layers) have their own weights,
    each reconstructs rows as a one-member autoencoder with its slice of the weights would,
    and the score's error term is the mean of the members' squared errors."""
    detector, _ = sensor_run
    scorer = detector.model_.get_layer("scorer")
    batched = [layer for layer in scorer.layers if isinstance(layer, MemberDense)]
    members = detector.config.members
    assert len(batched) == 6 and all(layer.kernel.shape[0] == members for layer in batched)
    for layer in batched:
        kernels = keras.ops.convert_to_numpy(layer.kernel).reshape(members, -1)
        assert all(
            not np.allclose(kernels[a], kernels[b])
            for a in range(members)
            for b in range(a + 1, members)
        ), layer.name
    scoring = scorer.get_layer("anomaly_score")
    ensemble = keras.Model(scorer.input, scoring.input[1])
    x = np.random.default_rng(0).normal(size=(32, scorer.input.shape[-1])).astype("float32")
    reconstructions = keras.ops.convert_to_numpy(ensemble(x))
    alone = []
    for m in range(members):
        single = build_autoencoder(
            "dense", x.shape[1], hidden=detector._hidden(), latent=batched[2].units, members=1
        )
        for layer in batched:
            kernel, bias = layer.get_weights()
            single.get_layer(layer.name).set_weights([kernel[m : m + 1], bias[m : m + 1]])
        alone.append(keras.ops.convert_to_numpy(single(x))[:, 0])
        np.testing.assert_allclose(reconstructions[:, m], alone[-1], rtol=1e-5, atol=1e-6)
    error, _ = scoring.terms(x, reconstructions)
    np.testing.assert_allclose(
        error.numpy(), np.mean([(x - r) ** 2 for r in alone], axis=0), rtol=1e-5, atol=1e-7
    )


def pre_migration_scores(detector, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """dltoolkit 0.1's scoring formula by hand, in float64, from the learned state: robust
    scaling and one-hot encoding, the autoencoder alone, then the scaled error and distance
    terms, their geometric mean per feature, per-column sums and the threshold."""
    schema, scorer = detector.schema_, detector.model_.get_layer("scorer")
    scoring = scorer.get_layer("anomaly_score")
    # the export takes float32 columns and held float32 medians and scales
    numeric = frame[schema.numeric].to_numpy(np.float32).astype(np.float64)
    median, scale = (np.float32(v).astype(np.float64) for v in (schema.median, schema.scale))
    parts = [(np.where(np.isfinite(numeric), numeric, median) - median) / scale]
    for name, cats in schema.categorical.items():
        parts.append((frame[name].astype(str).to_numpy()[:, None] == np.array(cats)).astype(float))
    x = np.concatenate(parts, axis=1)
    autoencoder = keras.Model(scorer.input, scoring.input[1])
    reconstructions = np.asarray(autoencoder(x.astype(np.float32)), np.float64)
    error = np.mean((x[:, None] - reconstructions) ** 2, axis=1)
    error_scale, extreme_scale, threshold = (
        np.asarray(w.numpy(), np.float64)
        for w in (scoring.error_scale, scoring.extreme_scale, scoring.threshold)
    )
    per_feature = (error / error_scale * x**2 / extreme_scale) ** 0.25
    contributions = per_feature @ schema.groups() / schema.width
    score = contributions.sum(axis=1)
    return {"score": score, "anomaly": score >= threshold, "contributions": contributions}


@pytest.mark.parametrize("run", ["sensor_run", "sample_run"])
def test_export_equals_the_pre_migration_formula(run, request, tmp_path):
    """Mixed columns (a dict of raw columns) and all-numeric ones (one array)."""
    detector = load(request.getfixturevalue(run)[1])
    if run == "sensor_run":
        frame = perturb(sensor_table(rows=30, seed=2), "pressure", 8.0)
    else:
        frame = load_sample("breast-cancer")[0].iloc[:30]
    names, categorical = detector.signature_inputs(), detector.schema_.categorical
    feeds = {
        names[c]: tf.constant(frame[c].astype(str if c in categorical else "float32"))
        for c in detector.columns_
    }
    export = tf.saved_model.load(str(detector.export(tmp_path / "export")))
    served = export.signatures["serving_default"](**feeds)
    expected = pre_migration_scores(detector, frame)
    for key in ("score", "contributions"):
        np.testing.assert_allclose(served[key].numpy(), expected[key], rtol=1e-5, atol=1e-6)
    borderline = np.isclose(expected["score"], detector.threshold_, rtol=1e-5)
    assert (served["anomaly"].numpy() == expected["anomaly"])[~borderline].all()


def test_npz_tables_impute_and_best_f1(tmp_path):
    frame = sensor_table(rows=500)
    x = frame.drop(columns="site").to_numpy(dtype=np.float64, copy=True)
    y = np.zeros(len(x), int)
    x[:25, 1] += 8.0
    y[:25] = 1
    x[30, 2] = np.nan
    np.savez(tmp_path / "t.npz", X=x, y=y)
    with pytest.raises(DataError, match="NaN/inf"):
        AnomalyDetector(**FAST).fit(str(tmp_path / "t.npz"), out=tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    detector = AnomalyDetector(**FAST, nan="impute", threshold="best-f1").fit(
        str(tmp_path / "t.npz"), out=tmp_path / "b", progress=False
    )
    assert detector.label_col_ == "label" and "best F1" in detector.threshold_how_
    # about 5 anomalies in the test part: F1 moves in coarse steps
    assert detector.metrics_["roc_auc"] > 0.95 and detector.metrics_["f1"] > 0.6


def test_bad_parameters_are_config_errors():
    for params, fragment in (
        ({"contamination": 0.7}, "< 0.5"),
        ({"model": "gan"}, "dense"),
        ({"model": "conv"}, "--window"),
        ({"threshold": "f1"}, "best-f1"),
    ):
        with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            AnomalyDetector(**params).fit(sensor_table(rows=50), out="unused", progress=False)


@pytest.mark.parametrize("model", ["denoising", "sparse", "vae"])
def test_other_row_models_learn(model, tmp_path):
    params = {
        **FAST,
        "epochs": FAST["epochs"] if model == "vae" else 12,
        "model": model,
        "vae_score": "elbo" if model == "vae" else "reconstruction",
    }
    detector = AnomalyDetector(**params).fit(
        sensor_table(rows=400), out=tmp_path / model, progress=False
    )
    history = read_history(tmp_path / model / "history.csv")
    assert history[-1]["loss"] < history[0]["loss"]
    normal = sensor_table(rows=40, seed=5)
    # most perturbed rows score above every normal one
    assert (
        np.median(detector.score(perturb(normal, "pressure", 8.0))["score"])
        > detector.score(normal)["score"].max()
    )
    assert load(tmp_path / model).score(normal)["score"] == pytest.approx(
        detector.score(normal)["score"], rel=1e-5
    )


def test_vae_elbo_trains_and_scores_in_mixed_precision(tmp_path):
    params = {**FAST, "epochs": 2, "model": "vae", "vae_score": "elbo", "mixed_precision": True}
    detector = AnomalyDetector(**params).fit(sensor_table(rows=200), out=tmp_path, progress=False)
    normal = sensor_table(rows=20, seed=5)
    scores = detector.score(normal)["score"]
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    np.testing.assert_array_equal(load(tmp_path).score(normal)["score"], scores)


def series_csv(tmp_path, rows=800) -> tuple:
    t = np.arange(rows)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2026-01-01", periods=rows, freq="h"),
            "a": np.sin(t / 8) + 0.05 * rng.normal(size=rows),
            "b": np.cos(t / 8) + 0.05 * rng.normal(size=rows),
        }
    )
    frame["fault"] = 0
    frame.loc[700:710, "a"] += 2.0
    frame.loc[700:710, "fault"] = 1
    path = tmp_path / "sensor.csv"
    frame.sample(frac=1, random_state=0).to_csv(path, index=False)  # shuffled: sorted by ts
    return path, frame


@pytest.mark.slow  # 25-50 s in the fast suite's CI run (2026-12-06)
def test_cli_window_model_on_a_time_series(tmp_path, capsys):
    path, frame = series_csv(tmp_path)
    out = tmp_path / "win"
    code, stdout, err = cli(
        capsys,
        "detect-anomalies",
        "--data",
        path,
        "--time-col",
        "ts",
        "--window",
        16,
        "--label-col",
        "fault",
        "--epochs",
        8,
        "--out",
        out,
        "--json",
        "--set",
        "test_split=0.15",
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["metrics"]["roc_auc"] > 0.9
    rows = load(out).predict(str(path))
    assert len(rows) == len(frame) - 15 and rows[0]["row"] == 15
    assert rows[0]["start"] == "2026-01-01 00:00:00"
    worst = max(rows, key=lambda r: r["score"])
    assert 700 <= worst["row"] <= 725 and worst["anomaly"]


def test_cli_tables_predict_evaluate_and_bad_input(tmp_path, capsys):
    frame = sensor_table(rows=400)
    frame["label"] = 0
    frame.loc[:19, "pressure"] += 8.0
    frame.loc[:19, "label"] = 1
    path = tmp_path / "readings.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "run"
    code, stdout, err = cli(
        capsys,
        "detect-anomalies",
        "--data",
        path,
        "--label-col",
        "label",
        "--epochs",
        20,
        "--out",
        out,
        "--json",
        "--quiet",
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["metrics"]["roc_auc"] > 0.95 and (out / "export" / "run" / "1").is_dir()
    code, stdout, _ = cli(
        capsys, "predict", out, "--data", path, "--output", tmp_path / "p.csv", "--json"
    )
    rows = json.loads(stdout)
    assert code == 0 and len(rows) == 400 and {"score", "anomaly", "top_columns"} <= set(rows[0])
    assert pd.read_csv(tmp_path / "p.csv").shape[0] == 400
    code, stdout, _ = cli(capsys, "evaluate", out, "--data", path, "--json")
    assert code == 0 and json.loads(stdout)["roc_auc"] > 0.95

    bad = tmp_path / "bad"
    frame[["site"]].to_csv(tmp_path / "text.csv", index=False)
    assert_user_error(
        *cli(capsys, "detect-anomalies", "--data", tmp_path / "text.csv", "--out", bad),
        "no numeric columns",
    )
    frame.assign(temp=frame["temp"].where(frame.index != 3)).to_csv(
        tmp_path / "nan.csv", index=False
    )
    assert_user_error(
        *cli(capsys, "detect-anomalies", "--data", tmp_path / "nan.csv", "--out", bad),
        "NaN",
        "nan=impute",
    )
    frame.assign(label=frame.index % 3).to_csv(tmp_path / "three.csv", index=False)
    assert_user_error(
        *cli(
            capsys,
            "detect-anomalies",
            "--data",
            tmp_path / "three.csv",
            "--label-col",
            "label",
            "--out",
            bad,
        ),
        "3 values",
    )
    frame.assign(label=0).to_csv(tmp_path / "none.csv", index=False)
    assert_user_error(
        *cli(
            capsys,
            "detect-anomalies",
            "--data",
            tmp_path / "none.csv",
            "--label-col",
            "label",
            "--threshold",
            "best-f1",
            "--out",
            bad,
        ),
        "best-f1",
    )
    assert_user_error(
        *cli(capsys, "detect-anomalies", "--contamination", 0.7, "--out", bad), "contamination"
    )
    assert not bad.exists()
    frame.drop(columns=["temp", "site"]).to_csv(tmp_path / "partial.csv", index=False)
    assert_user_error(
        *cli(capsys, "predict", out, "--data", tmp_path / "partial.csv"), "temp, site"
    )
