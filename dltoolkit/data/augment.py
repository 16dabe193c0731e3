"""Batch-level image augmentation from Keras core layers, applied inside tf.data."""

from __future__ import annotations

import keras
import tensorflow as tf

from dltoolkit.core.errors import ConfigError
from dltoolkit.specs.classify import AUGMENT_LEVELS


def build_augmenter(level: str, *, flip=False, mixup=0.0, cutmix=0.0, seed=0):
    """A function (images, one-hot labels) -> (images, labels) for training batches, or None.

    `standard`: small random translation, rotation and zoom; `strong`: those plus
    RandAugment. `flip` adds horizontal flips (right for photos, wrong for digits or text).
    `mixup`/`cutmix` > 0 mix pairs of images and their labels (the value is MixUp's alpha
    or CutMix's factor); with both, each batch gets one of them at random.
    Images are float32 in [0, 255].
    """
    if level not in AUGMENT_LEVELS:
        raise ConfigError(
            f"unknown augment level '{level}'; choose one of: {', '.join(AUGMENT_LEVELS)}"
        )
    layers = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if level in ("standard", "strong"):
        layers += [
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomRotation(0.04, fill_mode="constant", seed=seed),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed),
        ]
    if level == "strong":
        layers.append(keras.layers.RandAugment(value_range=(0, 255), seed=seed))
    mixers = []
    if mixup > 0:
        mixers.append(keras.layers.MixUp(alpha=mixup, seed=seed))
    if cutmix > 0:
        mixers.append(keras.layers.CutMix(factor=cutmix, seed=seed))
    if not layers and not mixers:
        return None

    def augment(images, labels):
        for layer in layers:
            images = layer(images, training=True)
        if mixers:
            images, labels = _mix(mixers, images, labels)
        return images, labels

    return augment


def _mix(mixers, images, labels):
    def apply(mixer):
        out = mixer({"images": images, "labels": labels}, training=True)
        return out["images"], tf.cast(out["labels"], labels.dtype)

    if len(mixers) == 1:
        return apply(mixers[0])
    pick_first = tf.random.uniform([]) < 0.5
    return tf.cond(pick_first, lambda: apply(mixers[0]), lambda: apply(mixers[1]))
