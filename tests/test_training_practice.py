"""Training options on real (tiny) data: transfer learning phases, strategies, precision,
augmentation mixes, imbalance handling and gradient accumulation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from dltoolkit import ImageClassifier
from dltoolkit.core.callbacks import read_history
from dltoolkit.models.vision import build_image_model


@pytest.fixture(scope="module")
def digits_3():
    """Three digit classes, upscaled to 32x32 RGB (what pretrained backbones expect)."""
    import tensorflow as tf

    d = load_digits()
    keep = np.flatnonzero(d.target < 3)[:180]
    x = (d.images[keep] * (255 / 16))[..., None].astype(np.float32)
    x = tf.image.grayscale_to_rgb(tf.image.resize(x, (32, 32))).numpy().astype(np.uint8)
    return x, d.target[keep]


@pytest.mark.slow  # 25-50 s in the fast suite's CI run (2026-12-06)
def test_transfer_learning_runs_head_then_finetune_from_a_local_weights_file(digits_3, tmp_path):
    weights = tmp_path / "mobilenet.weights.h5"
    build_image_model("mobilenetv3-small", (32, 32, 3), 3).backbone.save_weights(weights)
    clf = ImageClassifier(
        backbone="mobilenetv3-small",
        weights=str(weights),
        image_size=32,
        epochs=2,
        fine_tune_epochs=1,
        batch_size=32,
        augment="none",
    )
    clf.fit(digits_3, out=tmp_path / "run", progress=False)
    rows = read_history(tmp_path / "run" / "history.csv")
    assert [(r["epoch"], r["phase"]) for r in rows] == [(1, "head"), (2, "head"), (3, "finetune")]
    assert rows[2]["learning_rate"] < rows[0]["learning_rate"] * 0.5
    assert clf.predict_proba(digits_3[0][:4]).shape == (4, 3)


def test_mirrored_strategy_and_mixed_precision_on_cpu(digits_3, tmp_path):
    x, y = digits_3
    clf = ImageClassifier(strategy="mirrored", mixed_precision=True, epochs=2, batch_size=32)
    clf.fit((x[:, :16, :16], y), out=tmp_path / "run", progress=False)
    probs = clf.predict_proba(x[:5, :16, :16])
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1, atol=1e-3)
    assert (clf.export() / "saved_model.pb").is_file()


def test_mixup_cutmix_strong_augment_focal_loss_balanced_weights_and_accumulation(tmp_path):
    d = load_digits()
    keep = (d.target == 0) | ((d.target == 1) & (np.arange(len(d.target)) % 4 == 0))  # imbalanced
    x = (d.images[keep] * (255 / 16)).astype(np.uint8)[..., None]
    clf = ImageClassifier(
        epochs=3,
        batch_size=16,
        augment="strong",
        flip=True,
        mixup=0.2,
        cutmix=1.0,
        loss="focal",
        class_weight="balanced",
        grad_accum_steps=2,
        optimizer="sgd",
        learning_rate=0.05,
    )
    clf.fit((x, d.target[keep]), out=tmp_path / "run", progress=False)
    rows = read_history(tmp_path / "run" / "history.csv")
    assert len(rows) == 3 and all(np.isfinite(r["loss"]) for r in rows)
    assert clf.metrics_["samples"] > 0
