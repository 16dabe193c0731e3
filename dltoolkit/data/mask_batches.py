"""tf.data pipelines of (image, class-index mask) pairs for segmentation, and joint augmentation.

Images become float32 [0, 255] with the model's channels; masks int32 class indices with
IGNORE for unlabeled pixels. Images are either resized to the model's size (masks with
nearest neighbour) or, with `tile`, kept at full resolution and cut into tiles of that size:
random tiles in training, a grid of tiles for validation.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.core.runtime import with_shard_policy
from dltoolkit.data.images import image_elements, read_pixels, seeded_order
from dltoolkit.data.masks import IGNORE, MaskSet
from dltoolkit.specs.segment import AUGMENT_LEVELS, FLIPS

_CACHE_BYTES = 2 * 1024**3  # decoded pairs are cached in memory below this size
_FLIP_MODES = {
    "horizontal": "horizontal",
    "vertical": "vertical",
    "both": "horizontal_and_vertical",
}


def segmentation_dataset(
    pairs: MaskSet,
    image_shape: tuple[int, int, int],
    batch_size: int,
    *,
    training: bool,
    tile: bool = False,
    seed: int = 0,
    augment=None,
    shard: tuple[int, int] | None = None,
    repeat: int = 1,
) -> tf.data.Dataset:
    """Batches of (float32 images (B, h, w, C) in [0, 255], int32 masks (B, h, w)).

    Training data is shuffled each epoch, passed `repeat` times per epoch, and
    `augment(images, masks)` mapped over its batches. `shard` (workers, index) gives each worker of a multi-worker run its own share
    of the pairs (see `runtime.file_shard`).
    """
    order = seeded_order(len(pairs), training=training, seed=seed, shard=shard)
    pairs = pairs.subset(order)
    size, channels = image_shape[:2], image_shape[2]
    ds = image_elements(pairs.paths, pairs.images, pairs.masks.astype(bytes))
    ds = ds.map(
        lambda image, mask: _decode_pair(image, mask, channels, None if tile else size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if training:  # an image that passed the header check but cannot be decoded
        ds = ds.ignore_errors(log_warning=True)
    if _decoded_bytes(pairs, image_shape) < _CACHE_BYTES:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True).repeat(repeat)
        if tile:
            ds = ds.map(lambda x, y: _random_tile(x, y, size), num_parallel_calls=tf.data.AUTOTUNE)
    elif tile:
        ds = ds.flat_map(lambda x, y: tf.data.Dataset.from_tensor_slices(_grid_tiles(x, y, size)))
    ds = ds.batch(batch_size).map(_as_labels)
    if training and augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    if shard is not None:
        ds = with_shard_policy(ds, tf.data.experimental.AutoShardPolicy.OFF)
    return ds.prefetch(tf.data.AUTOTUNE)


def _decode_pair(image, mask_png, channels: int, size):
    pixels = read_pixels(image, channels)
    mask = tf.io.decode_png(mask_png, channels=1)
    if size is not None:
        pixels = tf.image.resize(pixels, size, method="bilinear", antialias=True)
        mask = tf.image.resize(mask, size, method="nearest")
    return tf.ensure_shape(pixels, [*(size or (None, None)), channels]), mask


def _decoded_bytes(pairs: MaskSet, image_shape) -> int:
    if pairs.images is not None:
        return 0  # in memory already
    return len(pairs) * 5 * int(np.prod(image_shape))  # float32 pixels and a uint8 mask


def _pad_to(image, mask, size):
    """Pad image (zeros) and mask (IGNORE) at the bottom/right to at least `size`."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    pad = [[0, tf.maximum(size[0] - height, 0)], [0, tf.maximum(size[1] - width, 0)], [0, 0]]
    return tf.pad(image, pad), tf.pad(mask, pad, constant_values=IGNORE)


def _random_tile(image, mask, size):
    """A random `size` crop of the pair (padded first if smaller)."""
    image, mask = _pad_to(image, mask, size)
    joined = tf.concat([image, tf.cast(mask, tf.float32)], axis=-1)
    crop = tf.image.random_crop(joined, [*size, joined.shape[-1]])
    return crop[..., :-1], tf.cast(crop[..., -1:], tf.uint8)


def _grid_tiles(image, mask, size):
    """The pair cut into a grid of `size` tiles covering it (the last row/column may overlap)."""
    image, mask = _pad_to(image, mask, size)
    origins = tile_origins(tf.shape(image)[:2], size, overlap=0.0)
    images = tf.map_fn(
        lambda o: image[o[0] : o[0] + size[0], o[1] : o[1] + size[1]],
        origins,
        fn_output_signature=tf.TensorSpec([*size, image.shape[-1]], tf.float32),
    )
    masks = tf.map_fn(
        lambda o: mask[o[0] : o[0] + size[0], o[1] : o[1] + size[1]],
        origins,
        fn_output_signature=tf.TensorSpec([*size, 1], tf.uint8),
    )
    return images, masks


def tile_origins(shape, size, overlap: float) -> tf.Tensor:
    """Top-left corners (N, 2) of `size` tiles covering an image of `shape` (>= size), each
    step `size * (1 - overlap)`; the last row and column end at the image's edge."""

    def starts(extent, tile):
        step = max(1, int(tile * (1 - overlap)))
        count = (tf.maximum(extent - tile, 0) + step - 1) // step + 1
        return tf.minimum(tf.range(count) * step, extent - tile)

    ys, xs = starts(shape[0], size[0]), starts(shape[1], size[1])
    grid = tf.stack(tf.meshgrid(ys, xs, indexing="ij"), axis=-1)
    return tf.reshape(grid, [-1, 2])


def build_mask_augmenter(level: str, flip: str, seed: int = 0):
    """A function (images, masks) -> (images, masks) moving both together, or None.

    `standard`: small shifts, rotations and zooms; `strong`: those plus contrast and
    brightness (images only). `flip` adds random flips. Pixels moved in from outside the
    image get IGNORE in the mask.
    """
    if level not in AUGMENT_LEVELS or flip not in FLIPS:
        raise ValueError(f"augment {level!r} / flip {flip!r}")
    layers = []
    if flip != "none":
        layers.append(keras.layers.RandomFlip(_FLIP_MODES[flip], seed=seed))
    if level in ("standard", "strong"):
        layers += [
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomRotation(0.05, fill_mode="constant", seed=seed),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed),
        ]
    if level == "strong":
        layers += [
            keras.layers.RandomContrast(0.3, value_range=(0, 255), seed=seed),
            keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed),
        ]
    if not layers:
        return None

    def augment(images, masks):
        # Masks shifted by one, so that the layers' zero fill becomes IGNORE afterwards.
        batch = {
            "images": tf.cast(images, tf.float32),
            "segmentation_masks": tf.cast(masks, tf.float32)[..., None] + 1,
        }
        for layer in layers:
            batch = layer(batch, training=True)
        shifted = tf.cast(tf.round(batch["segmentation_masks"][..., 0]), tf.int32)
        return batch["images"], tf.where(shifted == 0, IGNORE, shifted - 1)

    return augment


def _as_labels(images, masks):
    """(images, uint8 masks (B, h, w, 1)) -> (images, int32 masks (B, h, w))."""
    return images, tf.cast(masks[..., 0], tf.int32)
