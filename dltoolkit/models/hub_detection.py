"""Pretrained object detectors from KerasHub presets (RetinaNet), for the detect-objects recipe.

`hub_detector` loads a KerasHub `ObjectDetector` (a preset name, a `kaggle://` or `hf://`
handle, or a directory made with `save_to_preset`) and fits it to the recipe: boxes are
"xyxy" pixels everywhere (`bounding_box_format="xyxy"` on the task, its anchor generator,
label encoder and decoder, and the image converter), the preprocessor's image size is the
recipe's square letterbox size, and the preset's own value scaling stays in its image
converter, so the model takes float32 letterboxed images with pixel values 0..255.

Training data: `hub_targets` turns the recipe's packed boxes [B, M, 5] (x1, y1, x2, y2,
class; class < 0 = padding) into the `{"boxes", "labels"}` dict RetinaNet's `fit` reads,
padding rows as boxes of -1 and label -1 (KerasHub's convention; its label encoder makes
anchors matched to nothing background). Inference: `hub_detections` runs the image
converter and the network in the graph, decodes the anchor deltas and applies class-aware
NMS with `tf.image.combined_non_max_suppression`, so every threshold may be a tensor
(KerasHub's own `NonMaxSuppression` layer fails to trace with a tensor score threshold or
an unknown batch size).

D-FINE presets are refused: in KerasHub 0.32 a D-FINE preset cannot be loaded with another
number of classes (the class layers' weights fail to load), its Hungarian matcher ignores the
predictions when there are fewer targets than queries (always: it pads the cost matrix with
1e9 in float32, where the costs round away) and its loss reads the matched targets of every
image from the flattened batch with per-image indices (so from the first image's targets);
it also expects normalised centre boxes without padding, and three training steps of a tiny
random D-FINE (64x64, 45k weights) took about 50 s on CPU.
"""

from __future__ import annotations

from pathlib import Path

import keras
import keras_hub
import tensorflow as tf

from dltoolkit.core.errors import ConfigError, WeightsError
from dltoolkit.core.presets import REMOTE_PREFIXES, is_local
from dltoolkit.data.images import first_line
from dltoolkit.models.detection import non_max_suppression

BOX_FORMAT = "xyxy"  # x1, y1, x2, y2 in input pixels
PADDING = -1.0  # label (and box coordinates) of a padding row in hub_targets
SIZE_MULTIPLE = 32  # the coarsest feature-pyramid level the presets merge (stride 32)


def hub_detector(preset: str, num_classes: int, image_size: int) -> keras.Model:
    """KerasHub's object detector from `preset` for `num_classes` classes at `image_size`
    square "xyxy" pixel input; the classification head is new when the preset's classes
    differ (the box head and every other weight of the preset are kept)."""
    if image_size % SIZE_MULTIPLE:
        nearest = max(SIZE_MULTIPLE, image_size // SIZE_MULTIPLE * SIZE_MULTIPLE)
        raise ConfigError(
            f"a KerasHub detector needs an image size divisible by {SIZE_MULTIPLE}, got "
            f"{image_size}; pass e.g. --image-size {nearest}"
        )
    task = _load_detector(preset)
    if isinstance(task, keras_hub.models.DFineObjectDetector):
        raise ConfigError(
            f"preset {preset!r} is a D-FINE detector, which KerasHub 0.32 cannot fine-tune "
            "(its loss matches predictions to targets wrongly); pass a RetinaNet preset "
            "such as retinanet_resnet50_fpn_coco"
        )
    fixed = task.input_shape[1:3]
    if None not in fixed and tuple(fixed) != (image_size, image_size):
        raise ConfigError(
            f"preset {preset!r} takes {fixed[0]}x{fixed[1]} images; pass --image-size {fixed[0]}"
        )
    return _refitted(task, num_classes, image_size)


def _load_detector(preset: str) -> keras.Model:
    """The preset's detector as saved; a one-line error if there is none."""
    local = is_local(preset)
    path = Path(preset).expanduser()
    if local and not (path / "config.json").is_file():
        raise ConfigError(
            f"--preset '{preset}' is not a KerasHub preset directory (no config.json); save one "
            "with detector.save_to_preset(dir) or pass a preset name such as "
            "retinanet_resnet50_fpn_coco"
        )
    names = sorted(keras_hub.models.ObjectDetector.presets)
    if not local and not preset.startswith(REMOTE_PREFIXES) and preset not in names:
        raise ConfigError(
            f"unknown object-detector preset '{preset}'; pass a local preset directory or one "
            f"of: {', '.join(names)}"
        )
    try:
        return keras_hub.models.ObjectDetector.from_preset(str(path) if local else preset)
    except Exception as err:  # wrong model type, broken files or a failed download
        if local:
            raise ConfigError(
                f"--preset '{preset}' could not be loaded as a KerasHub object detector "
                f"({first_line(err)}); pass a RetinaNet preset directory or name such as "
                "retinanet_resnet50_fpn_coco"
            ) from None
        raise WeightsError(
            f"preset '{preset}' could not be downloaded or loaded as an object detector "
            f"({type(err).__name__}: {first_line(err)[:80]}); offline, pass a local preset "
            "directory instead: --preset ./my_local_preset (made with save_to_preset)"
        ) from None


def _refitted(task: keras.Model, num_classes: int, image_size: int) -> keras.Model:
    """`task` rebuilt with BOX_FORMAT in every part (anchor generator, label encoder, decoder,
    image converter), `num_classes` classes and a converter to `image_size`. Every weight
    whose shape does not depend on the number of classes is copied; the others start afresh.

    (A loaded task keeps the preset's format in its parts, and RetinaNet's compute_loss then
    converts the targets in place, which Keras refuses inside fit.)"""
    config = _in_box_format(task.get_config())
    config.update(
        num_classes=num_classes,
        backbone=task.backbone,
        preprocessor=_preprocessor(task, image_size),
    )
    new = type(task).from_config(config)
    for old_weight, new_weight in zip(task.weights, new.weights, strict=True):
        if old_weight.shape == new_weight.shape:
            new_weight.assign(old_weight)
    return new


def _in_box_format(config):
    """A copy of a (nested) Keras config with every `bounding_box_format` set to BOX_FORMAT."""
    if isinstance(config, dict):
        return {
            key: BOX_FORMAT if key == "bounding_box_format" else _in_box_format(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_in_box_format(value) for value in config]
    return config


def _preprocessor(task: keras.Model, image_size: int):
    """The task's preprocessor with an image converter to (image_size, image_size) in
    BOX_FORMAT, keeping the preset's value scaling (to [0, 1] when it has none)."""
    preprocessor = task.preprocessor
    if preprocessor is None:
        converter_cls = task.preprocessor_cls.image_converter_cls
        config = {"scale": 1 / 255}
    else:
        converter_cls = type(preprocessor.image_converter)
        config = preprocessor.image_converter.get_config()
    config.update(image_size=(image_size, image_size), bounding_box_format=BOX_FORMAT)
    return task.preprocessor_cls(image_converter=converter_cls.from_config(config))


def hub_compile_args(model: keras.Model) -> dict:
    """What `model.compile` takes besides the optimizer: RetinaNet's own losses (Huber on
    the anchor deltas, sigmoid focal cross-entropy on the classes, both summed and divided
    by the positive anchors in the task's compute_loss). Pass no `loss` or `metrics`."""
    return {
        "box_loss": keras.losses.Huber(reduction="sum"),
        "classification_loss": keras.losses.BinaryFocalCrossentropy(
            from_logits=_from_logits(model), reduction="sum"
        ),
    }


def hub_targets(packed: tf.Tensor) -> dict[str, tf.Tensor]:
    """Packed boxes float32 [B, M, 5] (x1, y1, x2, y2 pixels, class; class < 0 = padding)
    -> `{"boxes": [B, M, 4], "labels": [B, M]}` for the detector's fit, padding rows -1."""
    packed = tf.convert_to_tensor(packed, tf.float32)
    labels = packed[..., 4]
    real = labels >= 0
    return {
        "boxes": tf.where(real[..., None], packed[..., :4], PADDING),
        "labels": tf.where(real, labels, PADDING),
    }


def hub_detections(
    model: keras.Model,
    images: tf.Tensor,
    *,
    score_threshold=0.25,
    iou_threshold=0.5,
    max_detections: int = 100,
    candidates: int = 1000,
) -> dict[str, tf.Tensor]:
    """Letterboxed float32 images [B, S, S, 3] (0..255) -> the NMS'ed detections, in graph ops
    (the thresholds and `max_detections` may be scalar tensors): {"boxes": float32
    [B, max, 4] xyxy pixels (zero rows after `count`), "scores": float32 [B, max],
    "labels": int32 [B, max] (-1 after `count`), "count": int32 [B]}. Only the `candidates`
    anchors of highest class score go into NMS."""
    inputs = model.preprocessor.image_converter(tf.cast(images, tf.float32))
    boxes, scores = _anchor_detections(model, model(inputs, training=False), inputs)
    return non_max_suppression(
        boxes, scores, score_threshold, iou_threshold, max_detections, candidates
    )


def _anchor_detections(model, outputs, images) -> tuple[tf.Tensor, tf.Tensor]:
    """RetinaNet's raw outputs on `images` (its converted input) -> boxes [B, A, 4] (xyxy
    pixels, clipped to the image) and class probabilities [B, A, K], decoded as its label
    encoder encoded them."""
    anchors = model.anchor_generator(images)
    anchors = keras.ops.concatenate(list(anchors.values()), axis=0)
    encoder = model.label_encoder
    boxes = keras.utils.bounding_boxes.decode_deltas_to_boxes(
        anchors=anchors,
        boxes_delta=tf.cast(outputs["bbox_regression"], tf.float32),
        anchor_format=model.anchor_generator.bounding_box_format,
        box_format=BOX_FORMAT,
        encoded_format=encoder.encoding_format,
        variance=encoder.box_variance,
        image_shape=keras.ops.shape(images)[1:],
    )
    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)
    boxes = tf.clip_by_value(boxes, 0.0, tf.stack([width, height, width, height]))
    scores = tf.cast(outputs["cls_logits"], tf.float32)
    return boxes, tf.sigmoid(scores) if _from_logits(model) else scores


def _from_logits(model) -> bool:
    return keras.activations.get(model.activation) != keras.activations.sigmoid
