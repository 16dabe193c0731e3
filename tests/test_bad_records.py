"""Batch predict survives bad records: every readable input is predicted, each unreadable
one gets an error row in its place, and --strict stops at the first (exit 2, one line)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_digit_folder
from PIL import Image
from test_cli import assert_user_error, cli

from dltoolkit import Agent, AnomalyDetector, Forecaster, ImageClassifier, Summarizer
from dltoolkit.core.errors import DataError


def without_errors(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "error" not in r]


def assert_skipped_and_strict(capsys, run, inputs, bad_names, good_count, table=False):
    """CLI: exit 0 naming the bad inputs in the JSON, CSV (and `table`) and a stderr
    warning; with --strict exit 2 on one line naming the first."""
    out_csv = run.parent / f"{run.name}-pred.csv"
    code, out, err = cli(capsys, "predict", run, *inputs, "--json", "--output", out_csv)
    assert code == 0, err
    rows = json.loads(out)
    named = [r["input"] for r in rows if "error" in r]
    assert named == bad_names and len(without_errors(rows)) == good_count
    assert all(r["error"] and "\n" not in r["error"] for r in rows if "error" in r)
    warning = [line for line in err.splitlines() if "warning:" in line]
    assert len(warning) == 1 and f"skipped {len(bad_names)} unreadable" in warning[0]
    written = pd.read_csv(out_csv)
    assert written["error"].notna().sum() == len(bad_names) and len(written) == len(rows)
    if table:
        code, out, err = cli(capsys, "predict", run, *inputs)
        assert code == 0 and f"Predictions ({len(rows)})" in out and "┃ error" in out
    code, out, err = cli(capsys, "predict", run, *inputs, "--strict")
    assert_user_error(code, out, err, bad_names[0], "--strict")
    assert len(err.strip().splitlines()) == 1
    return rows


# -- images -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_images")
    folder = write_digit_folder(root / "train", classes=(0, 1), per_class=15, size=12)
    out = root / "run"
    clf = ImageClassifier(epochs=1, batch_size=8, seed=0, augment="none")
    return clf.fit(str(folder), out=out, progress=False), out, folder


@pytest.fixture(scope="module")
def image_inputs(image_run, tmp_path_factory):
    """A folder of good images plus a random-bytes .jpg and a truncated .png."""
    _, _, train = image_run
    good = tmp_path_factory.mktemp("good_images")
    for i, path in enumerate(sorted((train / "1").iterdir())[:5]):
        Image.open(path).convert("RGB").save(good / f"{i}.png")
    mixed = tmp_path_factory.mktemp("mixed_images")
    for path in good.iterdir():
        (mixed / path.name).write_bytes(path.read_bytes())
    (mixed / "2_corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(600))
    buffer = io.BytesIO()
    noise = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "PNG")
    (mixed / "3_truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return good, mixed


def test_images_predict_every_good_one_and_name_the_bad(image_run, image_inputs):
    clf, _, _ = image_run
    good, mixed = image_inputs
    rows = clf.predict(str(mixed))
    names = [r["input"].rsplit("/", 1)[-1] for r in rows]
    assert names == [
        "0.png",
        "1.png",
        "2.png",
        "2_corrupt.jpg",
        "3.png",
        "3_truncated.png",
        "4.png",
    ]
    errors = {r["input"].rsplit("/", 1)[-1]: r["error"] for r in rows if "error" in r}
    assert set(errors) == {"2_corrupt.jpg", "3_truncated.png"}
    assert "not a readable image" in errors["2_corrupt.jpg"]
    assert "not a decodable image" in errors["3_truncated.png"]  # its header passes PIL
    alone = clf.predict(str(good))
    for with_bad, by_itself in zip(without_errors(rows), alone, strict=True):
        assert with_bad["label"] == by_itself["label"]
        assert with_bad["probability"] == pytest.approx(by_itself["probability"], abs=1e-6)
    with pytest.raises(DataError, match="2_corrupt.jpg"):
        clf.predict(str(mixed), strict=True)
    with pytest.raises(DataError, match="2_corrupt.jpg"):
        clf.predict_proba(str(mixed))


def test_images_missing_path_is_a_bad_record_but_all_bad_is_an_error(image_run, image_inputs):
    clf, _, _ = image_run
    good, mixed = image_inputs
    rows = clf.predict([str(good / "0.png"), str(good / "nope.png")])
    assert "does not exist" in rows[1]["error"] and "label" in rows[0]
    with pytest.raises(DataError, match="none of the 2 inputs"):
        clf.predict([str(mixed / "2_corrupt.jpg"), str(mixed / "3_truncated.png")])
    with pytest.raises(DataError, match="not a readable image"):
        clf.predict(str(mixed / "2_corrupt.jpg"))


def test_images_cli(image_run, image_inputs, capsys):
    _, out, _ = image_run
    _, mixed = image_inputs
    rows = assert_skipped_and_strict(
        capsys,
        out,
        [mixed],
        [str(mixed / "2_corrupt.jpg"), str(mixed / "3_truncated.png")],
        good_count=5,
        table=True,
    )
    assert all(r["top_k"] for r in without_errors(rows))


# -- forecasts ----------------------------------------------------------------------------


def series_frame(rows: int, phase: float = 0.0) -> pd.DataFrame:
    t = np.arange(rows)
    return pd.DataFrame(
        {
            "date": pd.date_range("2020-01-01", periods=rows, freq="D").astype(str),
            "sales": 10 + 3 * np.sin(2 * np.pi * t / 7 + phase) + 0.01 * t,
        }
    )


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_forecast")
    series_frame(240).to_csv(root / "train.csv", index=False)
    model = Forecaster(
        lookback=14, horizon=3, epochs=1, model="linear", seed=0, val_split=0.1, test_split=0.1
    )
    return model.fit(str(root / "train.csv"), out=root / "run", progress=False), root


def test_forecast_skips_a_file_that_fails_to_parse(forecast_run, capsys):
    model, root = forecast_run
    good = [root / "a.csv", root / "b.csv"]
    series_frame(30, 0.5).to_csv(good[0], index=False)
    series_frame(30, 1.5).to_csv(good[1], index=False)
    broken = root / "broken.csv"
    broken.write_text("date,sales\n2020-01-01,1\n2020-01-02,2,3,4\n2020-01-03\n")
    short = root / "short.csv"
    series_frame(5).to_csv(short, index=False)
    inputs = [str(good[0]), str(broken), str(good[1]), str(short)]
    rows = model.predict(inputs)
    assert [r["input"] for r in rows] == [inputs[0]] * 3 + [inputs[1]] + [inputs[2]] * 3 + [
        inputs[3]
    ]
    assert "cannot read" in rows[3]["error"] and "lookback" in rows[7]["error"]
    alone = model.predict([str(p) for p in good])
    assert without_errors(rows) == alone  # the same numbers, to the last bit
    with pytest.raises(DataError, match="broken.csv"):
        model.predict(inputs, strict=True)
    assert_skipped_and_strict(
        capsys, root / "run", [good[0], broken, good[1]], [str(broken)], good_count=6
    )


# -- anomaly rows ---------------------------------------------------------------------------


def readings(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(rows, 1))
    return pd.DataFrame(
        np.hstack([base, 2 * base, -base]) + 0.1 * rng.normal(size=(rows, 3)),
        columns=["flow", "pressure", "temp"],
    )


@pytest.fixture(scope="module")
def anomaly_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_anomaly")
    detector = AnomalyDetector(epochs=2, members=1, hidden="8", batch_size=64, seed=0)
    return detector.fit(readings(200), out=root / "run", progress=False), root


def test_anomaly_rows_with_a_bad_value_get_error_rows(anomaly_run, capsys):
    detector, root = anomaly_run
    frame = readings(12, seed=1)
    frame.to_csv(root / "good.csv", index=False)
    text = frame.astype(object)
    text.loc[3, "pressure"] = "n/a?"
    text.loc[7, "temp"] = None
    text.to_csv(root / "bad.csv", index=False)
    rows = detector.predict(str(root / "bad.csv"))
    assert [r["row"] for r in rows] == list(range(12))
    assert "not a number" in rows[3]["error"] and "pressure" in rows[3]["error"]
    assert "NaN/inf" in rows[7]["error"] and "temp" in rows[7]["error"]
    alone = detector.predict(str(root / "good.csv"))
    for with_bad in without_errors(rows):
        same = alone[with_bad["row"]]
        assert with_bad["score"] == pytest.approx(same["score"], rel=1e-6)
        assert with_bad["anomaly"] == same["anomaly"]
    with pytest.raises(DataError, match=r"bad.csv row 3: 'n/a\?' in column 'pressure'"):
        detector.predict(str(root / "bad.csv"), strict=True)
    with pytest.raises(DataError, match="1 row\\(s\\) cannot be used"):
        detector.score(pd.read_csv(root / "bad.csv").drop(index=7))
    rows = assert_skipped_and_strict(
        capsys,
        root / "run",
        [root / "bad.csv"],
        [str(root / "bad.csv")] * 2,
        good_count=10,
    )
    assert [r["row"] for r in rows if "error" in r] == [3, 7]


def test_anomaly_windows_with_a_bad_row_are_bad(tmp_path):
    frame = readings(120)
    detector = AnomalyDetector(epochs=1, members=1, model="conv", window=4, seed=0)
    detector.fit(frame, out=tmp_path / "run", progress=False)
    new = readings(10, seed=2).astype(object)
    new.loc[5, "flow"] = "x"
    rows = detector.predict(new)
    bad = [r["row"] for r in rows if "error" in r]
    assert bad == [5, 6, 7, 8] and all("row 5" in r["error"] for r in rows if "error" in r)
    assert [r["row"] for r in rows] == list(range(3, 10))


# -- texts --------------------------------------------------------------------------------


TEXTS = [
    "the red fox ran over the hill . it was late .",
    "a small boat crossed the lake at dawn .",
    "the market was busy and the bread was warm .",
]


@pytest.fixture(scope="module")
def summarizer_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_texts")
    rng = np.random.default_rng(0)
    pairs = [
        {"text": " ".join(rng.permutation(TEXTS)), "summary": " ".join(TEXTS[0].split()[:4])}
        for _ in range(48)
    ]
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    model = Summarizer(
        epochs=1,
        d_model=32,
        layers=1,
        heads=2,
        ff_dim=64,
        vocabulary_size=120,
        max_source_length=32,
        max_target_length=8,
        batch_size=16,
        seed=0,
    )
    return model.fit(str(root / "pairs.jsonl"), out=root / "run", progress=False), root


def test_summaries_skip_empty_and_undecodable_texts(summarizer_run, capsys):
    model, root = summarizer_run
    docs = root / "docs"
    docs.mkdir()
    for i, text in enumerate(TEXTS):
        (docs / f"{i}_good.txt").write_text(text)
    (docs / "1_empty.txt").write_text("  \n")
    (docs / "2_latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    rows = model.predict(str(docs), text=["", TEXTS[1]])
    assert [r["input"].rsplit("/", 1)[-1] for r in rows] == [
        "text 1",
        "text 2",
        "0_good.txt",
        "1_empty.txt",
        "1_good.txt",
        "2_good.txt",
        "2_latin1.txt",
    ]
    errors = [r["error"] for r in rows if "error" in r]
    assert "empty document" in errors[0] and "empty document" in errors[1]
    assert "not UTF-8" in errors[2]
    alone = model.predict(text=[TEXTS[1], *TEXTS])
    assert [r["summary"] for r in without_errors(rows)] == [r["summary"] for r in alone]
    with pytest.raises(DataError, match="text 1: empty document"):
        model.predict(str(docs), text=["", TEXTS[1]], strict=True)
    table = root / "texts.jsonl"
    table.write_text(json.dumps({"text": TEXTS[0]}) + "\n" + json.dumps({"text": ""}) + "\n")
    assert_skipped_and_strict(
        capsys, root / "run", [table, docs / "0_good.txt"], [f"{table}#1"], good_count=2
    )


# -- observations -------------------------------------------------------------------------


def test_agent_observations_that_do_not_parse_get_error_rows(tmp_path, capsys):
    agent = Agent(
        env="FrozenLake-v1", algo="q-learning", steps=500, eval_every=0, eval_episodes=1, seed=0
    )
    agent.fit(out=tmp_path / "lake", progress=False)
    rows = agent.predict(["3", "left", "1,2", 14])
    assert [r.get("error", "")[:12] for r in rows] == ["", "observations", "each observa", ""]
    assert [r["observation"] for r in rows] == [3, "left", "1,2", 14]
    assert without_errors(rows) == agent.predict([3, 14])
    with pytest.raises(DataError, match="left: observations must be numbers"):
        agent.predict(["3", "left"], strict=True)
    code, out, err = cli(capsys, "predict", tmp_path / "lake", "3", "left", "--json")
    assert code == 0 and json.loads(out)[1]["error"] and "skipped 1 unreadable" in err
    assert_user_error(*cli(capsys, "predict", tmp_path / "lake", "3", "left", "--strict"), "left")
