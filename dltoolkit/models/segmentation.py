"""Semantic-segmentation models and their loss.

Every model takes float32 images in [0, 255] of any size (H, W, C), fits them to its
resolution (h, w) itself and returns float32 per-pixel class probabilities (B, h, w, K):
a U-Net from scratch, a U-Net decoder on a pretrained keras.applications encoder, or a
KerasHub image segmenter (DeepLabV3, SegFormer) from a preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import keras_hub

from dltoolkit.core.errors import ConfigError, WeightsError
from dltoolkit.data.images import first_line
from dltoolkit.models.vision import (
    InferenceMode,
    application_encoder,
    backbone_input,
    image_input,
)

IGNORE = 255  # class index of unlabeled pixels (dltoolkit.data.masks.IGNORE)
_ENCODER_STRIDES = (2, 4, 8, 16)  # skip connections taken from a pretrained encoder


@dataclass
class SegmentationModel:
    """The model and, for a pretrained encoder, the part frozen in the first phase."""

    model: keras.Model
    encoder: keras.Model | None = None


def build_segmentation_model(
    backbone: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    *,
    weights: str | None = "auto",
    preset: str | None = None,
    filters: int = 32,
    depth: int = 4,
    upsampling: str = "transpose",
    dropout: float = 0.1,
) -> SegmentationModel:
    """A segmenter for `num_classes` at `image_shape` (h, w, C): KerasHub's when `preset` is
    given, else a U-Net, from scratch (`backbone="unet"`) or on a keras.applications encoder."""
    if preset:
        return SegmentationModel(hub_segmenter(preset, image_shape, num_classes))
    inputs, x = image_input(image_shape)
    if backbone == "unet":
        *levels, bottom = _unet_encoder(x, filters, depth, dropout)
        encoder = None
    else:
        net, preprocess = application_encoder(backbone, image_shape, weights)
        encoder = _feature_extractor(net, image_shape)
        *levels, bottom = InferenceMode(encoder, name="encoder")(backbone_input(x, preprocess))
        levels.insert(0, None)  # no skip at full resolution
    x = _decoder(bottom, levels, filters, upsampling)
    outputs = keras.layers.Conv2D(
        num_classes, 1, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    name = "unet" if backbone == "unet" else f"unet_{backbone.replace('-', '_')}"
    return SegmentationModel(keras.Model(inputs, outputs, name=name), encoder)


def _conv_block(x, filters: int, name: str):
    for i in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(
            x
        )
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def _unet_encoder(x, filters: int, depth: int, dropout: float) -> list:
    """Feature maps of each level, full resolution first, the bottleneck last."""
    x = keras.layers.Rescaling(1 / 255, name="rescaling")(x)
    levels = []
    for level in range(depth):
        x = _conv_block(x, filters * 2**level, f"down{level}")
        levels.append(x)
        x = keras.layers.MaxPooling2D(name=f"pool{level}")(x)
    x = _conv_block(x, filters * 2**depth, "bottleneck")
    levels.append(keras.layers.Dropout(dropout, name="bottleneck_dropout")(x))
    return levels


def _decoder(x, skips: list, filters: int, upsampling: str):
    """Upsample `x` once per skip (deepest last in `skips`), joining each skip that is not None."""
    for level in reversed(range(len(skips))):
        width, name = filters * 2**level, f"up{level}"
        if upsampling == "transpose":
            x = keras.layers.Conv2DTranspose(width, 2, strides=2, name=f"{name}_transpose")(x)
        else:
            x = keras.layers.UpSampling2D(interpolation="bilinear", name=f"{name}_resize")(x)
            x = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_resize_conv")(x)
        if skips[level] is not None:
            x = keras.layers.Concatenate(name=f"{name}_skip")([x, skips[level]])
        x = _conv_block(x, width, name)
    return x


def _feature_extractor(net: keras.Model, image_shape) -> keras.Model:
    """`net` with outputs at strides 2, 4, 8 and 16 (the last layer at each) and its output."""
    height = image_shape[0]
    if height % 32 or image_shape[1] % 32:
        raise ConfigError(
            f"a pretrained encoder needs image sides divisible by 32, got "
            f"{image_shape[0]}x{image_shape[1]}; pass e.g. --image-size 224"
        )
    by_stride = {}
    for layer in net.layers:
        shape = getattr(layer.output, "shape", None)
        if shape is not None and len(shape) == 4 and shape[1] and height % shape[1] == 0:
            by_stride[height // shape[1]] = layer.output
    outputs = [by_stride[s] for s in _ENCODER_STRIDES] + [net.output]
    return keras.Model(net.inputs, outputs, name=f"{net.name}_features")


def hub_segmenter(preset: str, image_shape, num_classes: int) -> keras.Model:
    """KerasHub's image segmenter from `preset` with a new `num_classes` head, wrapped to take
    [0, 255] images of any size and return probabilities at `image_shape`'s size."""
    try:
        task = keras_hub.models.ImageSegmenter.from_preset(preset, num_classes=num_classes)
    except Exception as e:  # network, Kaggle or preset-format errors of any kind
        where = "local preset directory" if Path(preset).is_dir() else "preset"
        raise WeightsError(
            f"cannot load the KerasHub image segmenter {where} {preset!r} ({first_line(e)}); "
            "pass a preset name (online), or a directory saved with save_to_preset()"
        ) from e
    fixed = task.input_shape[1:3]
    if None not in fixed and tuple(fixed) != tuple(image_shape[:2]):
        raise ConfigError(
            f"preset {preset!r} takes {fixed[0]}x{fixed[1]} images; pass --image-size {fixed[0]}"
        )
    inputs, x = image_input(image_shape)
    x = backbone_input(x, preset_rescaling(preset))
    x = task(x)
    if getattr(task, "activation", None) != "softmax":
        x = keras.layers.Softmax(name="softmax")(x)
    outputs = keras.layers.Activation("linear", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="hub_segmenter")


def preset_image_size(preset: str) -> int | None:
    """The square image size a preset's image converter resizes to, if it has one."""
    converter = _converter(preset)
    size = getattr(converter, "image_size", None) if converter is not None else None
    return int(size[0]) if size else None


def preset_rescaling(preset: str) -> keras.layers.Rescaling:
    """The preset converter's scale/offset for [0, 255] input (default: to [0, 1])."""
    converter = _converter(preset)
    scale = getattr(converter, "scale", None) if converter is not None else None
    if scale is None:
        return keras.layers.Rescaling(1 / 255, name="preset_rescaling")
    return keras.layers.Rescaling(scale, converter.offset or 0.0, name="preset_rescaling")


def _converter(preset: str):
    try:
        return keras_hub.layers.ImageConverter.from_preset(preset)
    except Exception:  # no converter in the preset (or offline): the defaults apply
        return None


@keras.saving.register_keras_serializable(package="dltoolkit")
class SegmentationLoss(keras.losses.Loss):
    """Cross-entropy, Dice and focal terms summed, over labelled pixels only.

    `y_true` holds class indices (B, H, W) with IGNORE for unlabeled pixels; `y_pred` the
    probabilities (B, H, W, K). Cross-entropy and focal average over the batch's labelled
    pixels, weighted by `class_weights`; Dice is the batch's soft Dice averaged over the
    classes present in truth or prediction.
    """

    def __init__(self, terms=("crossentropy", "dice"), class_weights=None, gamma=2.0, **kwargs):
        super().__init__(**{"name": "segmentation_loss", **kwargs})
        self.terms = tuple(terms)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        ops = keras.ops
        probs = ops.cast(y_pred, "float32")
        classes = probs.shape[-1]
        labels = ops.cast(ops.reshape(y_true, ops.shape(probs)[:-1]), "int32")
        valid = ops.cast(labels < classes, "float32")
        labels = ops.where(labels < classes, labels, 0)
        onehot = ops.one_hot(labels, classes) * valid[..., None]
        p_true = ops.clip(ops.sum(probs * onehot, axis=-1), 1e-7, 1.0)
        weight = valid
        if self.class_weights is not None:
            weight = weight * ops.take(ops.convert_to_tensor(self.class_weights), labels)
        count = ops.maximum(ops.sum(valid), 1.0)
        total = 0.0
        if "crossentropy" in self.terms:
            total += ops.sum(-ops.log(p_true) * weight) / count
        if "focal" in self.terms:
            total += ops.sum(-((1 - p_true) ** self.gamma) * ops.log(p_true) * weight) / count
        if "dice" in self.terms:
            masked = probs * valid[..., None]
            intersection = ops.sum(masked * onehot, axis=(0, 1, 2))
            sizes = ops.sum(masked, axis=(0, 1, 2)) + ops.sum(onehot, axis=(0, 1, 2))
            present = ops.cast(sizes > 0, "float32")
            dice = (2 * intersection + 1.0) / (sizes + 1.0)
            total += 1.0 - ops.sum(dice * present) / ops.maximum(ops.sum(present), 1.0)
        return ops.ones(ops.shape(probs)[:1]) * total

    def get_config(self):
        return {
            **super().get_config(),
            "terms": list(self.terms),
            "class_weights": self.class_weights,
            "gamma": self.gamma,
        }
