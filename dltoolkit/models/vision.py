"""Image-classification models: a compact CNN and pretrained backbones with our head.

Every model takes float32 images in [0, 255] of shape (H, W, C), C in {1, 3}, does its
own preprocessing (rescaling, grey -> RGB, the backbone family's normalisation) and
returns float32 softmax probabilities, so a saved `.keras` file is self-contained.
"""

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import keras_hub
import tensorflow as tf

from dltoolkit.core.errors import ConfigError, WeightsError

_A = keras.applications
_OWN = {"include_preprocessing": True}  # the family normalises [0, 255] input itself

# name -> (keras.applications constructor, default image size)
_APPLICATIONS: dict[str, tuple[Callable[..., keras.Model], int]] = {
    "resnet50": (_A.ResNet50, 224),  # caffe preprocessing: CaffePreprocess below
    # EfficientNet (v1) always has its Rescaling + Normalization layers built in.
    "efficientnet-b0": (_A.EfficientNetB0, 224),
    "efficientnet-b1": (_A.EfficientNetB1, 240),
    "efficientnet-b2": (_A.EfficientNetB2, 260),
    "efficientnet-b3": (_A.EfficientNetB3, 300),
    "efficientnet-b4": (_A.EfficientNetB4, 380),
    "efficientnet-b5": (_A.EfficientNetB5, 456),
    "efficientnet-b6": (_A.EfficientNetB6, 528),
    "efficientnet-b7": (_A.EfficientNetB7, 600),
    "efficientnetv2-b0": (functools.partial(_A.EfficientNetV2B0, **_OWN), 224),
    "efficientnetv2-b1": (functools.partial(_A.EfficientNetV2B1, **_OWN), 240),
    "efficientnetv2-b2": (functools.partial(_A.EfficientNetV2B2, **_OWN), 260),
    "efficientnetv2-b3": (functools.partial(_A.EfficientNetV2B3, **_OWN), 300),
    "efficientnetv2-s": (functools.partial(_A.EfficientNetV2S, **_OWN), 384),
    "mobilenetv3-small": (functools.partial(_A.MobileNetV3Small, **_OWN), 224),
    "mobilenetv3-large": (functools.partial(_A.MobileNetV3Large, **_OWN), 224),
    "convnext-tiny": (functools.partial(_A.ConvNeXtTiny, **_OWN), 224),
    "convnext-small": (functools.partial(_A.ConvNeXtSmall, **_OWN), 224),
    "convnext-base": (functools.partial(_A.ConvNeXtBase, **_OWN), 224),
}
_MIN_APPLICATION_SIZE = 32  # keras.applications refuse smaller inputs

# name -> keras_hub.models.ViTBackbone config (vit-tiny picks its patch size per image size)
_VITS: dict[str, dict] = {
    "vit-b16": {
        "patch_size": 16,
        "num_layers": 12,
        "num_heads": 12,
        "hidden_dim": 768,
        "mlp_dim": 3072,
    },
    "vit-tiny": {"num_layers": 6, "num_heads": 3, "hidden_dim": 192, "mlp_dim": 768},
}
_VIT_PRESETS = {"vit-b16": "vit_base_patch16_224_imagenet"}  # weights="imagenet"

# small-cnn stages: (filters, conv blocks); each stage after the first halves the map
# while it is >= 8 px, so 8x8 input keeps a 4x4 map.
_CNN_STAGES = ((16, 1), (32, 2), (64, 2), (128, 1))

_Source = str | Path | None  # None, "imagenet" or an existing path

BACKBONES: tuple[str, ...] = ("small-cnn", *_APPLICATIONS, *_VITS)


@keras.saving.register_keras_serializable(package="dltoolkit")
class CaffePreprocess(keras.layers.Layer):
    """RGB in [0, 255] -> BGR minus the ImageNet mean ("caffe" mode, as ResNet50 expects)."""

    BGR_MEAN = (103.939, 116.779, 123.68)

    def call(self, images):
        bgr = keras.ops.flip(images, axis=-1)
        return bgr - keras.ops.convert_to_tensor(self.BGR_MEAN, dtype=bgr.dtype)


@keras.saving.register_keras_serializable(package="dltoolkit")
class FitImage(keras.layers.Layer):
    """Images of any size -> the model's (height, width), resized as `to_image_shape` does
    (antialiased bilinear); images already at that size pass unchanged."""

    def __init__(self, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = int(height), int(width)

    def call(self, images):
        size = (self.height, self.width)
        fits = tf.reduce_all(tf.equal(tf.shape(images)[1:3], size))
        fitted = tf.cond(
            fits,
            lambda: images,
            lambda: tf.image.resize(images, size, method="bilinear", antialias=True),
        )
        return tf.ensure_shape(fitted, [None, *size, images.shape[-1]])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}


def image_input(shape) -> tuple:
    """(input, tensor): raw [0, 255] pixels of any size, fitted to `shape`'s height and width."""
    inputs = keras.Input((None, None, shape[-1]), name="images")
    return inputs, FitImage(*shape[:2], dtype="float32", name="fit_image")(inputs)


@keras.saving.register_keras_serializable(package="dltoolkit")
class ClassToken(keras.layers.Layer):
    """(batch, tokens, dim) -> (batch, dim): the first (class) token of a ViT."""

    def call(self, tokens):
        return tokens[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="dltoolkit")
class InferenceMode(keras.layers.Layer):
    """Runs a wrapped backbone with training=False, also inside fit().

    A Keras 3 functional model passes its own `training` flag to every layer it calls,
    overriding `backbone(x, training=False)`; this wrapper keeps BatchNorm on its moving
    statistics when the backbone is unfrozen for fine-tuning.
    """

    def __init__(self, backbone: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, images):
        return self.backbone(images, training=False)

    def compute_output_shape(self, input_shape):
        return self.backbone.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
        }

    @classmethod
    def from_config(cls, config):
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        return cls(backbone, **config)


@dataclass
class ImageModel:
    """A classifier and, for pretrained families, the backbone to freeze/unfreeze."""

    model: keras.Model
    backbone: keras.Model | None


def default_image_size(backbone: str) -> int | None:
    """Side length the backbone is usually trained at; None means "use the data's size"."""
    name = _check_name(backbone)
    if name in _APPLICATIONS:
        return _APPLICATIONS[name][1]
    return 224 if name == "vit-b16" else None


def default_weights(backbone: str) -> str | None:
    """ "imagenet" for families with published ImageNet weights, else None (random init)."""
    name = _check_name(backbone)
    return "imagenet" if name in _APPLICATIONS or name in _VIT_PRESETS else None


def build_image_model(
    backbone: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    *,
    weights: str | None = None,
    dropout: float = 0.2,
) -> ImageModel:
    """Build `backbone` + head for `num_classes`; weights: None/"none", "imagenet" or a path."""
    name = _check_name(backbone)
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3 or image_shape[-1] not in (1, 3) or min(image_shape) < 1:
        raise ConfigError(
            f"image shape {image_shape} is not (height, width, 1 or 3 channels); "
            "convert images to grayscale or RGB"
        )
    if num_classes < 2:
        raise ConfigError(f"num_classes is {num_classes}; a classifier needs at least 2 classes")
    if not 0 <= dropout < 1:
        raise ConfigError(f"dropout {dropout} is outside [0, 1); pick e.g. 0.2")
    source = _weights_source(name, weights)
    if name == "small-cnn":
        return _small_cnn(image_shape, num_classes, dropout, source)

    rgb_shape = (*image_shape[:2], 3)
    if name in _APPLICATIONS:
        net = _application(name, rgb_shape, source)
        preprocess = CaffePreprocess(name="caffe_preprocess") if name == "resnet50" else None
    else:
        net, preprocess = _vit(name, rgb_shape, source)

    inputs, x = image_input(image_shape)
    x = InferenceMode(net, name="backbone")(backbone_input(x, preprocess))
    pool = keras.layers.GlobalAveragePooling2D if len(x.shape) == 4 else ClassToken
    x = pool(name="pool")(x)
    return ImageModel(_head(inputs, x, num_classes, dropout, name), net)


APPLICATIONS: tuple[str, ...] = tuple(_APPLICATIONS)  # the keras.applications families


def application_encoder(
    backbone: str, image_shape: tuple[int, int, int], weights: str | None
) -> tuple[keras.Model, keras.layers.Layer | None]:
    """A keras.applications network without its top, for RGB images of `image_shape`'s size,
    and the layer that normalises [0, 255] RGB for it (None: the network does it itself).

    `weights` as for `build_image_model`: "auto"/"imagenet", None/"none" or a weights file.
    """
    name = _check_name(backbone)
    if name not in _APPLICATIONS:
        raise ConfigError(
            f"{backbone!r} is not a keras.applications encoder; choose one of: "
            + ", ".join(_APPLICATIONS)
        )
    weights = default_weights(name) if weights == "auto" else weights
    net = _application(name, (*image_shape[:2], 3), _weights_source(name, weights))
    return net, CaffePreprocess(name="caffe_preprocess") if name == "resnet50" else None


def backbone_input(images, preprocess: keras.layers.Layer | None):
    """[0, 255] images with 1 or 3 channels -> what a pretrained backbone takes (RGB, normalised)."""
    if images.shape[-1] == 1:
        images = keras.layers.Concatenate(name="gray_to_rgb")([images, images, images])
    return images if preprocess is None else preprocess(images)


def _check_name(backbone: str) -> str:
    name = str(backbone).strip().lower()
    if name not in BACKBONES:
        close = difflib.get_close_matches(name, BACKBONES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown backbone {backbone!r}; {hint}valid backbones: {', '.join(BACKBONES)}"
        )
    return name


def _weights_source(name: str, weights: str | None) -> _Source:
    """Validate `weights`: returns None (random init), "imagenet" or an existing path."""
    if weights is None or str(weights).strip().lower() in ("", "none"):
        return None
    if str(weights).strip().lower() == "imagenet":
        if name == "small-cnn" or (name in _VITS and name not in _VIT_PRESETS):
            raise ConfigError(
                f"{name} has no ImageNet weights; use weights=none or a local "
                f"weights file, or a pretrained backbone such as vit-b16"
            )
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsError(
            f"weights path {str(path)!r} for {name} does not exist; pass {_local_options(name)}"
        )
    if path.is_dir() and name not in _VITS:
        raise WeightsError(
            f"weights path {str(path)!r} is a directory, but only ViT backbones "
            f"load KerasHub presets; pass {_local_options(name)}"
        )
    if path.is_file() and not path.name.endswith(".h5"):
        raise WeightsError(
            f"weights file {str(path)!r} is not a .weights.h5/.h5 file; pass {_local_options(name)}"
        )
    return path


def _local_options(name: str) -> str:
    preset = ", a local KerasHub preset directory" if name in _VITS else ""
    return f"a local .weights.h5/.h5 weights file{preset}, or weights=none"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _download_error(name: str, error: Exception) -> WeightsError:
    return WeightsError(
        f"cannot download ImageNet weights for {name} ({_first_line(error)}); "
        f"offline? pass {_local_options(name)}"
    )


def _load_file(model: keras.Model, path: Path, name: str) -> None:
    try:
        model.load_weights(path)
    except (ValueError, OSError) as e:
        raise WeightsError(
            f"cannot load {str(path)!r} into {name} ({_first_line(e)}); pass weights "
            f"saved from the same backbone and image shape, or weights=none"
        ) from e


def _application(name: str, shape: tuple[int, int, int], source: _Source) -> keras.Model:
    if min(shape[:2]) < _MIN_APPLICATION_SIZE:
        raise ConfigError(
            f"{name} needs images of at least {_MIN_APPLICATION_SIZE}x"
            f"{_MIN_APPLICATION_SIZE}, got {shape[0]}x{shape[1]}; resize them "
            f"(usual size {_APPLICATIONS[name][1]}) or use small-cnn"
        )
    constructor = _APPLICATIONS[name][0]
    if source == "imagenet":
        try:
            return constructor(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as e:  # keras.utils.get_file raises a bare Exception when offline
            raise _download_error(name, e) from e
    net = constructor(include_top=False, weights=None, input_shape=shape)
    if source is not None:
        _load_file(net, source, name)
    return net


def _vit(name: str, shape: tuple[int, int, int], source: _Source):
    """A keras_hub ViTBackbone and the layer rescaling [0, 255] images for it."""
    if source == "imagenet" or (isinstance(source, Path) and source.is_dir()):
        return _vit_from_preset(name, shape, source)
    config = dict(_VITS[name])
    config.setdefault("patch_size", _vit_patch_size(shape))
    if shape[0] % config["patch_size"] or shape[1] % config["patch_size"]:
        raise ConfigError(
            f"{name} needs image sides divisible by {config['patch_size']}, "
            f"got {shape[0]}x{shape[1]}; resize the images (e.g. to 224)"
        )
    net = keras_hub.models.ViTBackbone(image_shape=shape, **config)
    if source is not None:
        _load_file(net, source, name)
    return net, _vit_rescaling(None)


def _vit_from_preset(name: str, shape: tuple[int, int, int], source: str | Path):
    """Load "imagenet" (a KerasHub preset download) or a local preset directory."""
    if source == "imagenet":
        preset, size = _VIT_PRESETS[name], default_image_size(name)
        if shape[:2] != (size, size):  # fail before a large download
            raise ConfigError(
                f"{name} ImageNet weights need {size}x{size} images, got "
                f"{shape[0]}x{shape[1]}; resize the images to {size}x{size}"
            )
    else:
        preset = str(source)
    try:
        net = keras_hub.models.ViTBackbone.from_preset(preset)
    except Exception as e:  # network, Kaggle or preset-format errors of any kind
        if source == "imagenet":
            raise _download_error(name, e) from e
        raise WeightsError(
            f"cannot load KerasHub ViT preset {preset!r} ({_first_line(e)}); "
            "pass a directory saved with ViTBackbone.save_to_preset()"
        ) from e
    if tuple(net.image_shape[:2]) != shape[:2]:
        raise ConfigError(
            f"preset {preset!r} expects {net.image_shape[0]}x"
            f"{net.image_shape[1]} images, got {shape[0]}x{shape[1]}; "
            "resize the images to the preset's size"
        )
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except FileNotFoundError:  # the preset has no image converter: use the default
        converter = None
    return net, _vit_rescaling(converter)


def _vit_rescaling(converter) -> keras.layers.Rescaling:
    """The preset converter's scale/offset, else [0, 255] -> [-1, 1] (ViT's ImageNet one)."""
    if converter is not None and converter.scale is not None:
        return keras.layers.Rescaling(
            converter.scale, converter.offset or 0.0, name="vit_rescaling"
        )
    return keras.layers.Rescaling(1 / 127.5, -1.0, name="vit_rescaling")


def _vit_patch_size(shape: tuple[int, int, int]) -> int:
    """Largest patch dividing both sides that still leaves >= 7 patches per side."""
    return next(
        (
            p
            for p in (16, 8, 4, 2)
            if shape[0] % p == 0 and shape[1] % p == 0 and min(shape[:2]) // p >= 7
        ),
        1,
    )


def _small_cnn(shape, num_classes: int, dropout: float, source: _Source) -> ImageModel:
    inputs, x = image_input(shape)
    x = keras.layers.Rescaling(1 / 255, name="rescaling")(x)
    size = min(shape[:2])
    for stage, (filters, blocks) in enumerate(_CNN_STAGES):
        if stage and size >= 8:
            x = keras.layers.MaxPooling2D(padding="same", name=f"pool{stage}")(x)
            size = (size + 1) // 2
        for block in range(blocks):
            prefix = f"stage{stage}_block{block}"
            x = keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"{prefix}_conv"
            )(x)
            # momentum 0.9: moving statistics keep up within a few-epoch run
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"{prefix}_bn")(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = _head(inputs, x, num_classes, dropout, "small-cnn")
    if source is not None:
        _load_file(model, source, "small-cnn")
    return ImageModel(model, None)


def _head(inputs, features, num_classes: int, dropout: float, name: str) -> keras.Model:
    x = keras.layers.Dropout(dropout, name="head_dropout")(features)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=f"{name.replace('-', '_')}_classifier")
