"""Letterboxing: an image of any size scaled (aspect kept) into a square canvas, and its boxes
mapped into the canvas and back. TensorFlow ops only: training, `predict` and the SavedModel
export share them.
"""

from __future__ import annotations

import tensorflow as tf

PAD_VALUE = 114.0  # grey of the canvas around the scaled image (as YOLO's letterbox)


def geometry(height, width, size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(scale, inner [..., 2] as height, width, offset [..., 2] as x, y) of letterboxing images
    of `height` x `width` (scalars or arrays) into a `size` square."""
    shape = tf.cast(tf.stack([height, width], axis=-1), tf.float32)
    scale = size / tf.reduce_max(shape, axis=-1)
    inner = tf.maximum(tf.cast(tf.round(shape * scale[..., None]), tf.int32), 1)
    offset = tf.cast((size - inner[..., ::-1]) // 2, tf.float32)
    return scale, inner, offset


def letterbox(image: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(canvas float32 [size, size, C], scale, offset [x, y]) for an image [H, W, C].

    The image is resized so that its longer side is `size` and centred on a PAD_VALUE canvas;
    a point (x, y) of the image lands at (x, y) * scale + offset on the canvas.
    """
    scale, inner, offset = geometry(tf.shape(image)[0], tf.shape(image)[1], size)
    resized = tf.image.resize(tf.cast(image, tf.float32), inner, antialias=True)
    left, top = tf.unstack(tf.cast(offset, tf.int32))
    canvas = tf.pad(
        resized - PAD_VALUE,
        [[top, size - inner[0] - top], [left, size - inner[1] - left], [0, 0]],
    )
    return canvas + PAD_VALUE, scale, offset


def to_canvas(boxes: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
    """xyxy boxes [..., 4] in image pixels -> canvas pixels."""
    return boxes * scale + tf.concat([offset, offset], axis=-1)


def from_canvas(boxes: tf.Tensor, scale, offset, height, width) -> tf.Tensor:
    """xyxy boxes [B, K, 4] in canvas pixels -> pixels of each image, clipped to it; `scale`,
    `height`, `width` are [B] and `offset` [B, 2] (one image: scalars and [2], boxes [K, 4])."""
    batched = len(boxes.shape) == 3
    scale, offset = (scale[:, None, None], offset[:, None, :]) if batched else (scale, offset)
    boxes = (boxes - tf.concat([offset, offset], axis=-1)) / scale
    limit = tf.cast(tf.stack([width, height, width, height], axis=-1), boxes.dtype)
    return tf.clip_by_value(boxes, 0.0, limit[:, None, :] if batched else limit)
