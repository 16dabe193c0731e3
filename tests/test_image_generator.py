"""ImageGenerator end to end on the real digits sample: train, sample, save/load, export, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from test_cli import assert_user_error, cli

from dltoolkit import ImageGenerator, load
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.config import read_recipe_file
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.tasks.generation_eval import frechet_distance, kernel_distance

TINY = dict(
    width=8,
    epochs=3,
    steps_per_epoch=15,
    batch_size=32,
    grid_size=10,
    eval_samples=60,
    eval_classifier_epochs=1,
    seed=1,
)


@pytest.fixture(scope="module")
def ddpm(fits):
    """A class-conditional DDPM with guidance on the digits sample, upsampled to 16x16
    (contract_cases.GENERATE)."""
    model, folder = fits.get("generate")
    return model, folder / "run"


def unlabelled_digits(n=300):
    """Real digits with no labels (one class): the generators' unconditional path."""
    digits = load_digits()
    x = np.round(digits.images[:n] * (255 / 16)).astype(np.uint8)
    return x, np.zeros(n, np.int32)


def test_ddpm_run_directory_loss_and_metrics(ddpm):
    model, out = ddpm
    history = read_history(out / "history.csv")
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]
    assert sorted(p.name for p in (out / "samples").glob("epoch_*.png")) == [
        "epoch_001.png",
        "epoch_002.png",
        "epoch_003.png",
    ]
    for plot in ("samples_over_time", "samples", "denoising", "history"):
        assert (out / "plots" / f"{plot}.png").is_file()
    m = model.metrics_
    assert m["generated"] == 60 and m["classifier_fd"] > 0 and 0 <= m["confident_rate"] <= 1
    assert 0 <= m["class_coverage"] <= 1 and "fid_note" in m
    assert (out / "evaluator" / "model.keras").is_file()


def test_samples_are_seeded_class_controlled_and_survive_save_load(ddpm, tmp_path, capsys):
    model, out = ddpm
    a = model.sample(12, seed=5, label="3")
    assert a.dtype == np.uint8 and a.shape == (12, 16, 16, 1)
    np.testing.assert_array_equal(a, model.sample(12, seed=5, label="3"))
    assert not np.array_equal(a, model.sample(12, seed=6, label="3"))
    assert not np.array_equal(a, model.sample(12, seed=5, label="7"))
    loaded = load(out)
    np.testing.assert_array_equal(loaded.sample(12, seed=5, label="3"), a)
    rows = loaded.predict(num=20, seed=5, out=tmp_path / "grid.png")
    assert "sampling 20 images" in capsys.readouterr().err  # loaded with progress on
    model.predict(num=4, seed=5, out=tmp_path / "quiet.png")
    assert "sampling" not in capsys.readouterr().err  # fitted with progress=False: silent
    assert rows[0]["images"] == 20 and Image.open(tmp_path / "grid.png").size == (
        10 * 17 + 1,
        2 * 17 + 1,
    )
    fewer = model.sample(4, seed=5, label="3", steps=3)
    assert fewer.shape == (4, 16, 16, 1) and not np.array_equal(fewer, a[:4])


def test_evaluate_on_holdout_images_uses_the_runs_classifier(ddpm, digit_folder):
    model, _ = ddpm
    metrics = model.evaluate(digit_folder)
    assert metrics["real"] == 120 and metrics["classifier_fd"] > 0 and "classes_present" in metrics


def test_a_loaded_runs_export_shows_progress(ddpm, tmp_path, capsys):
    _, out = ddpm
    load(out).export(tmp_path / "export")  # the contract test checks what it serves
    assert "export (saved_model)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kind",
    [
        "vae",
        pytest.param("gan", marks=pytest.mark.slow),
        pytest.param("wgan-gp", marks=pytest.mark.slow),
    ],
)
def test_vae_and_gans_train_and_sample_unconditionally(kind, tmp_path, capsys):
    out = tmp_path / kind
    model = ImageGenerator(**dict(TINY, model=kind, epochs=2)).fit(
        unlabelled_digits(), out=out, progress=True
    )
    shown = capsys.readouterr().err
    for line in ("epoch 2/2", "sampling 60 images to score", "evaluation  (", "report  ("):
        assert line in shown, shown
    history = read_history(out / "history.csv")
    key = "loss" if kind == "vae" else "d_loss"
    assert len(history) == 2 and all(np.isfinite(r[key]) for r in history)
    if kind == "vae":
        assert history[-1]["loss"] < history[0]["loss"]
        assert (out / "plots" / "interpolation.png").is_file()
    images = model.sample(8, seed=2)
    assert images.shape == (8, 16, 16, 1) and images.dtype == np.uint8 and images.std() > 0
    assert "classifier_note" in model.metrics_ and not (out / "evaluator").exists()


def test_frechet_and_kernel_distances_rank_shifted_features():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    shifted = b + 1.0
    assert frechet_distance(a, b) < 0.5 < frechet_distance(a, shifted)
    assert abs(kernel_distance(a, b)) < kernel_distance(a, shifted)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_unknown_parameters_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="'model' is 'diffusion'"):
        ImageGenerator(model="diffusion").fit("digits")
    with pytest.raises(ConfigError, match="valid parameters"):
        ImageGenerator(latent=3)
    with pytest.raises(ConfigError, match="does not exist"):
        ImageGenerator(inception_weights="/no/such/inception.h5").fit("digits")
    with pytest.raises(ConfigError, match="'prediction' is 'x0'; choose one of: v, eps"):
        ImageGenerator(prediction="x0").fit("digits")
    with pytest.raises(ConfigError, match="no single loss to stop early by"):
        ImageGenerator(model="gan", early_stopping_patience=3).fit("digits")


def _mixed_sizes(tmp_path):
    for i, size in enumerate((16, 16, 20)):
        Image.fromarray(np.full((size, size), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path


BAD = {
    "mixed sizes": (lambda p: ["--data", _mixed_sizes(p)], "mixed sizes (e.g. 16x16 and 20x20)"),
    "conditional without labels": (
        lambda p: ["--data", _mixed_sizes(p), "--image-size", "16", "--conditional"],
        "--conditional needs labelled",
    ),
    "unsupported size": (lambda p: ["--image-size", "30"], "16, 20, 24, 28, 32, 40"),
    "steps out of range": (
        lambda p: ["--sample-steps", "0"],
        "'sample_steps' is 0; it must be >= 1",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_training_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    options, fragment = BAD[case]
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "generate", *options(tmp_path), "--epochs", 1, "--out", out)
    assert_user_error(code, stdout, err, fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--num", "0"], "--num must be between 1 and 4096"),
        (["--label", "ten"], "unknown label 'ten'"),
        (["--num", "4", "--out", "grid.jpg"], "give a .png file name"),
    ],
)
def test_bad_predict_options_are_one_line_errors(ddpm, capsys, tmp_path, options, fragment):
    _, out = ddpm
    before = sorted(p.name for p in (out / "samples").iterdir())
    code, stdout, err = cli(capsys, "predict", out, *options)
    assert_user_error(code, stdout, err, fragment)
    assert sorted(p.name for p in (out / "samples").iterdir()) == before


def test_cli_predict_writes_the_grid(ddpm, capsys, tmp_path):
    _, out = ddpm
    code, stdout, err = cli(
        capsys,
        "predict",
        out,
        "--num",
        8,
        "--seed",
        1,
        "--label",
        3,
        "--out",
        tmp_path / "grid.png",
        "--json",
    )
    assert code == 0, err
    assert json.loads(stdout)[0]["label"] == "3" and (tmp_path / "grid.png").is_file()
    assert "sampling" not in err  # --json: no progress
    code, stdout, err = cli(capsys, "predict", out, "--num", 8, "--out", tmp_path / "more.png")
    assert code == 0 and "sampling 8 images" in err and "more.png" in stdout


def test_conditional_data_errors_in_python(tmp_path):
    with pytest.raises(DataError, match="--conditional needs labelled"):
        ImageGenerator(conditional=True, epochs=1).fit(unlabelled_digits(), out=tmp_path / "r")


@pytest.mark.parametrize(
    "name", ["generate_digits_ddpm", "generate_digits_vae", "generate_digits_wgan"]
)
def test_recipe_files_hold_valid_parameters(name):
    doc = read_recipe_file(Path(__file__).parents[1] / "recipes" / f"{name}.toml")
    recipe = ImageGenerator(**doc["params"])
    assert doc["task"] == "generate" and doc["data"] == "digits"
    recipe._validate()


@pytest.mark.slow
def test_fid_and_kid_with_a_local_inception_weights_file(tmp_path, monkeypatch):
    """The FID path with a weights file made here (random InceptionV3: no download)."""
    import keras

    weights = tmp_path / "inception.weights.h5"
    keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg").save_weights(
        weights
    )
    monkeypatch.setenv("DLTOOLKIT_INCEPTION_WEIGHTS", str(weights))
    x, y = unlabelled_digits(24)
    model = ImageGenerator(**dict(TINY, model="vae", epochs=1, eval_samples=12)).fit(
        (x, y), out=tmp_path / "run", progress=False
    )
    assert (
        model.metrics_["fid"] > 0
        and np.isfinite(model.metrics_["kid"])
        and "fid_note" not in model.metrics_
    )
