"""Quality of generated images: Fréchet distance and KID in a feature space, class statistics.

Two feature spaces: the penultimate layer of a classifier the toolkit trained on the real
data (works offline, always available for labelled data), and InceptionV3's pooled
features for the standard FID/KID, which needs a local weights file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from scipy import linalg

from dltoolkit.core.errors import ConfigError

INCEPTION_ENV = "DLTOOLKIT_INCEPTION_WEIGHTS"
INCEPTION_MISSING = (
    "FID/KID skipped: no InceptionV3 weights file (hub downloads are not used); set "
    f"inception_weights=FILE or {INCEPTION_ENV}=FILE to a local keras.applications "
    "InceptionV3 no-top .h5 file"
)
_BATCH = 64


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between two feature sets (N, D)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # few samples: singular covariances are expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():  # near-singular product: regularise both sides
        eps = 1e-6 * np.eye(len(cov_a))
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(root)))


def kernel_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = 10, subset_size: int = 500, seed: int = 0
) -> float:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = min(len(a), len(b), subset_size)
    rng = np.random.default_rng(seed)
    dim = a.shape[1]
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]
        kxx, kyy, kxy = (
            ((x @ x.T) / dim + 1) ** 3,
            ((y @ y.T) / dim + 1) ** 3,
            ((x @ y.T) / dim + 1) ** 3,
        )
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        values.append(off - 2 * kxy.mean())
    return float(np.mean(values))


def classifier_outputs(
    classifier: keras.Model, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features, class probabilities) of an ImageClassifier model on [0, 255] images."""
    both = keras.Model(
        classifier.inputs, [classifier.get_layer("head_dropout").input, classifier.output]
    )
    outputs = [
        both([images[i : i + _BATCH].astype(np.float32)], training=False)
        for i in range(0, len(images), _BATCH)
    ]
    return tuple(np.concatenate([np.asarray(o[k]) for o in outputs]) for k in (0, 1))


def class_statistics(probabilities: np.ndarray, confidence: float) -> dict:
    """How often the classifier is confident, and how evenly the predicted classes spread.

    class_coverage is the entropy of the predicted-class histogram over log(classes):
    1 when every class is equally frequent, near 0 when the generator collapsed to one.
    """
    classes = probabilities.shape[1]
    predicted = probabilities.argmax(1)
    confident = probabilities.max(1) >= confidence
    share = np.bincount(predicted, minlength=classes) / len(predicted)
    entropy = -np.sum(share[share > 0] * np.log(share[share > 0]))
    return {
        "confident_rate": float(confident.mean()),
        "class_coverage": float(entropy / np.log(classes)),
        "classes_present": int(len(np.unique(predicted[confident]))),
        "smallest_class_share": float(share.min()),
    }


def inception_weights_file(configured: str | None) -> Path | None:
    """The configured (or $DLTOOLKIT_INCEPTION_WEIGHTS) weights file; None when neither is set."""
    given = configured or os.environ.get(INCEPTION_ENV)
    if not given:
        return None
    path = Path(given).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"Inception weights file '{given}' does not exist; give the path of a local "
            "InceptionV3 no-top .h5 file, or unset it to skip FID/KID"
        )
    return path


def inception_features(images: np.ndarray, weights: Path) -> np.ndarray:
    """InceptionV3 average-pooled features (N, 2048) of [0, 255] images resized to 299x299 RGB."""
    model = keras.applications.InceptionV3(
        include_top=False, weights=None, pooling="avg", input_shape=(299, 299, 3)
    )
    model.load_weights(str(weights))
    out = []
    for start in range(0, len(images), _BATCH):
        batch = tf.convert_to_tensor(images[start : start + _BATCH], tf.float32)
        if batch.shape[-1] == 1:
            batch = tf.image.grayscale_to_rgb(batch)
        batch = tf.image.resize(batch, (299, 299), method="bilinear")
        out.append(model(batch / 127.5 - 1.0, training=False).numpy())
    return np.concatenate(out)


def quality_metrics(
    real: np.ndarray,
    fake: np.ndarray,
    classifier: keras.Model | None,
    inception: Path | None,
    confidence: float,
) -> dict:
    """Every available measure of `fake` against `real` ([0, 255] images of one shape)."""
    metrics: dict = {"generated": len(fake), "real": len(real)}
    if classifier is not None:
        real_features, _ = classifier_outputs(classifier, real)
        fake_features, probabilities = classifier_outputs(classifier, fake)
        metrics["classifier_fd"] = frechet_distance(fake_features, real_features)
        metrics["classifier_kid"] = kernel_distance(fake_features, real_features)
        metrics.update(class_statistics(probabilities, confidence))
    if inception is None:
        metrics["fid_note"] = INCEPTION_MISSING
    else:
        real_features, fake_features = (
            inception_features(real, inception),
            inception_features(fake, inception),
        )
        metrics["fid"] = frechet_distance(fake_features, real_features)
        metrics["kid"] = kernel_distance(fake_features, real_features)
    return metrics
