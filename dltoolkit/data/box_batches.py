"""tf.data pipelines of letterboxed images and their boxes for detection, and box-aware
augmentation by Keras core layers.

A batch is (float32 images [B, S, S, C] in [0, 255], float32 targets [B, M, 5]): each target
row is x1, y1, x2, y2 in canvas pixels ("xyxy", BOX_FORMAT) and the class index; rows with a
negative class are padding, so images with no objects are plain negatives.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.core.runtime import with_shard_policy
from dltoolkit.data.boxes import BOX_FORMAT, BoxSet
from dltoolkit.data.images import image_elements, read_pixels, seeded_order
from dltoolkit.data.letterbox import PAD_VALUE, letterbox, to_canvas

_CACHE_BYTES = 2 * 1024**3  # letterboxed images are cached in memory below this size
MIN_SIDE = 2.0  # boxes narrower or lower than this (pixels) after augmentation are dropped
_FLIP_MODES = {
    "horizontal": "horizontal",
    "vertical": "vertical",
    "both": "horizontal_and_vertical",
}


def pack_targets(boxes: BoxSet, max_boxes: int | None = None) -> np.ndarray:
    """float32 [N, M, 5] of each image's boxes (original pixels) and class, padded with -1
    rows; M = the most boxes of any image (or `max_boxes`, keeping the largest boxes)."""
    counts = [len(b) for b in boxes.boxes]
    width = max(1, max(counts, default=0) if max_boxes is None else max_boxes)
    packed = np.full((len(boxes), width, 5), -1.0, np.float32)
    for row, image_boxes, labels in zip(packed, boxes.boxes, boxes.labels, strict=True):
        image_boxes = np.asarray(image_boxes, np.float32).reshape(-1, 4)
        areas = (image_boxes[:, 2] - image_boxes[:, 0]) * (image_boxes[:, 3] - image_boxes[:, 1])
        keep = np.argsort(-areas, kind="stable")[:width]
        row[: len(keep), :4] = image_boxes[keep]
        row[: len(keep), 4] = np.asarray(labels)[keep]
    return packed


def detection_dataset(
    boxes: BoxSet,
    image_size: int,
    channels: int,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    augment=None,
    shard: tuple[int, int] | None = None,
    repeat: int = 1,
    max_boxes: int | None = None,
) -> tf.data.Dataset:
    """Batches of (letterboxed images, targets) as the module docstring says.

    Training data is shuffled each epoch, passed `repeat` times per epoch, and
    `augment(images, targets)` mapped over its batches; `shard` (workers, index) gives each
    worker of a multi-worker run its own share of the images (see `runtime.file_shard`).
    """
    boxes = boxes.subset(seeded_order(len(boxes), training=training, seed=seed, shard=shard))
    ds = image_elements(boxes.paths, boxes.images, pack_targets(boxes, max_boxes))
    ds = ds.map(
        lambda image, targets: _letterboxed(image, targets, image_size, channels),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if training:  # an image that passed the header check but cannot be decoded
        ds = ds.ignore_errors(log_warning=True)
    if boxes.images is None and len(boxes) * 4 * image_size**2 * channels < _CACHE_BYTES:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(len(boxes), seed=seed, reshuffle_each_iteration=True).repeat(repeat)
    ds = ds.batch(batch_size)
    if training and augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    if shard is not None:
        ds = with_shard_policy(ds, tf.data.experimental.AutoShardPolicy.OFF)
    return ds.prefetch(tf.data.AUTOTUNE)


def _letterboxed(image, targets, size: int, channels: int):
    canvas, scale, offset = letterbox(read_pixels(image, channels), size)
    real = targets[:, 4:] >= 0
    placed = tf.where(real, to_canvas(targets[:, :4], scale, offset), -1.0)
    return tf.ensure_shape(canvas, [size, size, channels]), tf.concat([placed, targets[:, 4:]], 1)


def build_box_augmenter(level: str, flip: str, seed: int = 0):
    """A function (images, targets) -> (images, targets) moving boxes with the pixels, or None.

    `standard`: flips as `flip` says, shifts and zooms (scale) of up to 10 %, colour jitter
    (brightness, contrast, saturation, hue); `strong`: shifts and zooms of up to 25 % and more
    colour. Boxes are clipped to the canvas; those left under MIN_SIDE pixels become padding.
    """
    layers = []
    if flip != "none":
        layers.append(
            keras.layers.RandomFlip(_FLIP_MODES[flip], seed=seed, bounding_box_format=BOX_FORMAT)
        )
    if level in ("standard", "strong"):
        shift, colour = (0.1, 0.2) if level == "standard" else (0.25, 0.4)
        layers += [
            keras.layers.RandomTranslation(
                shift, shift, fill_value=PAD_VALUE, seed=seed, bounding_box_format=BOX_FORMAT
            ),
            keras.layers.RandomZoom(
                shift, fill_value=PAD_VALUE, seed=seed, bounding_box_format=BOX_FORMAT
            ),
            keras.layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=colour,
                contrast_factor=colour,
                saturation_factor=(0.5 - colour, 0.5 + colour),
                hue_factor=colour / 4,
                seed=seed,
                bounding_box_format=BOX_FORMAT,
            ),
        ]
    if not layers:
        return None

    def augment(images, targets):
        channels = images.shape[-1]
        real = targets[..., 4] >= 0
        batch = {
            "images": tf.image.grayscale_to_rgb(images) if channels == 1 else images,
            "bounding_boxes": {"boxes": targets[..., :4], "labels": targets[..., 4]},
        }
        for layer in layers:
            batch = layer(batch, training=True)
        moved = batch["bounding_boxes"]["boxes"]
        sides = moved[..., 2:] - moved[..., :2]
        kept = real & tf.reduce_all(sides >= MIN_SIDE, axis=-1)
        packed = tf.concat([moved, targets[..., 4:]], axis=-1)
        images = batch["images"]
        return (
            tf.image.rgb_to_grayscale(images) if channels == 1 else images,
            tf.where(kept[..., None], packed, -1.0),
        )

    return augment
