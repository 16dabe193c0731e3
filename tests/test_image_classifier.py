"""ImageClassifier end to end on real digits: train, run directory, save/load, export."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from dltoolkit import ImageClassifier
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.config import read_recipe_file
from dltoolkit.core.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def trained(fits):
    """6 epochs on the digits sample (contract_cases.CLASSIFY)."""
    clf, folder = fits.get("classify")
    return clf, folder / "run"


def test_fit_writes_a_complete_run_directory(trained):
    clf, out = trained
    for name in (
        "recipe.toml",
        "model.keras",
        "state.json",
        "history.csv",
        "metrics.json",
        "report.html",
    ):
        assert (out / name).is_file(), name
    assert list((out / "logs").rglob("events.out.tfevents*"))
    assert (out / "plots" / "confusion_matrix.png").stat().st_size > 1000
    report = (out / "report.html").read_text()
    assert (
        "Confusion matrix" in report
        and "Per-class metrics" in report
        and "mistakes first" in report
    )
    assert (out / "plots" / "examples.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.9 and len(metrics["confusion_matrix"]) == 10


def test_loss_falls_and_history_has_every_epoch(trained):
    _, out = trained
    rows = read_history(out / "history.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert {"val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])


def test_recipe_file_holds_every_param(trained):
    clf, out = trained
    doc = read_recipe_file(out / "recipe.toml")
    assert doc["task"] == "classify" and doc["data"] == "digits"
    expected = {k: v for k, v in clf.get_params().items() if v is not None}
    assert doc["params"] == expected
    assert ImageClassifier(**doc["params"]).get_params() == clf.get_params()


def test_unknown_param_and_unknown_backbone_are_user_errors():
    with pytest.raises(ConfigError, match="valid parameters"):
        ImageClassifier(backbon="resnet50")
    with pytest.raises(ConfigError, match="small-cnn"):
        ImageClassifier(backbone="resnet5000", epochs=1).fit("digits", progress=False)


def test_predict_files_and_evaluate_folder(trained, digit_folder):
    clf, _ = trained
    results = clf.predict([str(digit_folder / "1")])
    assert len(results) == 40 and {"input", "label", "probability", "top_k"} <= set(results[0])
    assert abs(sum(t["probability"] for t in results[0]["top_k"]) - 1) < 0.2
    metrics = clf.evaluate(str(digit_folder))
    assert metrics["samples"] == 120 and 0 <= metrics["accuracy"] <= 1


def test_evaluate_rejects_labels_the_model_never_saw(trained, tmp_path):
    clf, _ = trained
    folder = tmp_path / "eval"
    (folder / "cat").mkdir(parents=True)
    (folder / "1").mkdir()
    from PIL import Image

    Image.new("L", (8, 8)).save(folder / "cat" / "a.png")
    Image.new("L", (8, 8)).save(folder / "1" / "b.png")
    with pytest.raises(DataError, match="cat"):
        clf.evaluate(str(folder))


def test_float_signature_and_tflite_match_predict(trained, tmp_path):
    clf, _ = trained
    images = (np.random.default_rng(1).random((3, 8, 8, 1)) * 255).astype(np.float32)
    saved = clf.export(tmp_path / "sm")
    served = tf.saved_model.load(str(saved)).signatures["predict_images"](
        images=tf.constant(images)
    )
    np.testing.assert_allclose(
        served["probabilities"].numpy(), clf.predict_proba(images), atol=1e-5
    )
    tflite = clf.export(tmp_path / "lite", format="tflite")
    assert (tmp_path / "lite" / "labels.txt").read_text().split() == clf.class_names_
    interpreter = tf.lite.Interpreter(model_path=str(tflite))
    runner = interpreter.get_signature_runner()
    probs = runner(images=images)["probabilities"]
    np.testing.assert_allclose(probs, clf.predict_proba(images), atol=1e-4)


def test_saved_keras_model_takes_raw_pixels_at_any_size(trained):
    clf, run = trained
    model = keras.saving.load_model(run / "model.keras")  # import dltoolkit registered FitImage
    for size in (5, 12):
        images = (np.random.default_rng(size).random((2, size, size, 1)) * 255).astype(np.uint8)
        np.testing.assert_allclose(
            model.predict(images, verbose=0), clf.predict_proba(images), atol=1e-5
        )


def test_trains_on_a_folder_of_mixed_files_and_skips_a_corrupt_one(digit_folder, tmp_path):
    import shutil

    data = tmp_path / "imgs"
    shutil.copytree(digit_folder, data)
    (data / "0" / "broken.jpg").write_bytes(b"not an image at all")
    clf = ImageClassifier(epochs=10, batch_size=16, image_size=16).fit(
        str(data), out=tmp_path / "run", progress=False
    )
    assert clf.metrics_["accuracy"] > 0.5
    assert "broken.jpg" in (tmp_path / "run" / "report.html").read_text()
    with pytest.raises(DataError, match="broken.jpg"):
        ImageClassifier(epochs=1, strict=True).fit(
            str(data), out=tmp_path / "strict", progress=False
        )
    assert not (tmp_path / "strict").exists()


def test_offline_imagenet_request_names_the_local_options_and_leaves_no_run(tmp_path):
    from pathlib import Path

    from dltoolkit.core.errors import WeightsError

    if list((Path.home() / ".keras" / "models").glob("weights_mobilenet_v3_small*")):
        pytest.skip("ImageNet weights are cached on this machine")
    clf = ImageClassifier(backbone="mobilenetv3-small", weights="imagenet", image_size=32, epochs=1)
    try:
        clf.fit("digits", out=tmp_path / "run", progress=False)
    except WeightsError as err:
        assert "local" in str(err) and "weights=none" in str(err)
    else:
        pytest.skip("this machine is online: the weights downloaded")
    assert not (tmp_path / "run").exists()
