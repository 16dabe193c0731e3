"""A segmentation model applied to one whole image: resized, or in overlapping tiles.

Pure TensorFlow ops, so `ImageSegmenter.predict`, its evaluation and the exported serving
signature share them.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from dltoolkit.data.mask_batches import tile_origins


def image_probabilities(
    model: keras.Model, image, size: tuple[int, int], *, tile: bool, overlap: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """One float32 image (H, W, C) in [0, 255] -> class probabilities (H, W, K) at its own
    size, and (h, w, K) at the model's `size`.

    Resized: the model sees the image fitted to `size`. Tiled: the model sees overlapping
    `size` tiles of the full-resolution image, blended with weights that fall towards
    each tile's edges, so every pixel is predicted with context around it.
    """
    full = tf.shape(image)[:2]
    if not tile:
        small = tf.cast(model(image[None], training=False)[0], tf.float32)
        return tf.image.resize(small, full, method="bilinear"), small
    probabilities = _tiled(model, image, size, overlap)
    return probabilities, tf.image.resize(probabilities, size, method="bilinear")


def _tiled(model, image, size, overlap: float) -> tf.Tensor:
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    padded_h, padded_w = tf.maximum(height, size[0]), tf.maximum(width, size[1])
    image = tf.pad(image, [[0, padded_h - height], [0, padded_w - width], [0, 0]])
    origins = tile_origins(tf.stack([padded_h, padded_w]), size, overlap)
    tiles = tf.map_fn(
        lambda o: image[o[0] : o[0] + size[0], o[1] : o[1] + size[1]],
        origins,
        fn_output_signature=tf.TensorSpec([*size, image.shape[-1]], tf.float32),
    )
    probabilities = tf.cast(model(tiles, training=False), tf.float32)
    window = _window(size)
    canvas = tf.zeros([padded_h, padded_w, probabilities.shape[-1]])
    weights = tf.zeros([padded_h, padded_w, 1])
    for_each = tf.range(tf.shape(origins)[0])

    def place(index, values):
        y, x = origins[index][0], origins[index][1]
        paddings = [[y, padded_h - y - size[0]], [x, padded_w - x - size[1]], [0, 0]]
        return tf.pad(values, paddings)

    def add(totals, index):
        canvas, weights = totals
        return (
            canvas + place(index, probabilities[index] * window),
            weights + place(index, window),
        )

    canvas, weights = tf.foldl(add, for_each, initializer=(canvas, weights))
    return (canvas / weights)[:height, :width]


def _window(size) -> tf.Tensor:
    """(h, w, 1) blending weights: 1 at a tile's centre, falling linearly to 0.1 at its edges."""

    def ramp(n):
        position = (tf.range(n, dtype=tf.float32) + 0.5) / n
        return 1.0 - 0.9 * tf.abs(2.0 * position - 1.0)

    return (ramp(size[0])[:, None] * ramp(size[1])[None, :])[..., None]
