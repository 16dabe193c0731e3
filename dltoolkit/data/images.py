"""Labelled images for classification: find them, check them, and feed them to Keras.

`load_image_source` accepts a folder of class subfolders (optionally split into
train/val/test folders), a CSV file or DataFrame of paths and labels, `tfds:NAME`, a
built-in sample name, or an `(x, y)` pair of arrays. Image files stay on disk and are
decoded by `decode_image_bytes`, the same TF function the exported serving signature
traces, so training and serving preprocess identically.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image

from dltoolkit.core.errors import DataError
from dltoolkit.core.records import Bad
from dltoolkit.core.runtime import with_shard_policy
from dltoolkit.data.samples import SAMPLES, load_sample
from dltoolkit.data.splits import stratified_splits

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_PIL_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "GIF"}  # MPO: multi-picture JPEG from cameras
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_PATH_COLUMNS = ("path", "image", "file", "filename", "filepath", "image_path", "img")
_LABEL_COLUMNS = ("label", "class", "category", "target")
SPLIT_VALUES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
_CACHE_BYTES = 2 * 1024**3  # decoded files are cached in memory below this size
_SHUFFLE_BYTES = 256 * 1024**2  # memory for the shuffle buffer of decoded images
_CHUNK = 1024  # arrays are converted this many images at a time


@dataclass
class ImageSet:
    """Labelled images of one split: either file paths or an in-memory array."""

    labels: np.ndarray  # int32 class indices (N,)
    paths: np.ndarray | None = None  # str file paths (N,)
    images: np.ndarray | None = None  # (N, H, W, C) uint8, or float in [0, 255]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> ImageSet:
        def pick(a):
            return None if a is None else a[idx]

        return ImageSet(self.labels[idx], pick(self.paths), pick(self.images))


@dataclass
class ImageSource:
    splits: dict[str, ImageSet]  # "train" always; "val"/"test" when the source defines them
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    description: str = ""


def load_image_source(
    data,
    *,
    strict: bool = False,
    path_col: str | None = None,
    label_col: str | None = None,
    tfds_data_dir: str | None = None,
    class_names: list[str] | None = None,
    unlabelled: bool = False,
) -> ImageSource:
    """Load labelled images from a folder, CSV, DataFrame, `tfds:NAME`, sample name or (x, y).

    An existing path wins over a sample of the same name. Unreadable image files are
    skipped and listed in `skipped`, or raise with `strict`. With `class_names` (a trained
    model's classes) labels are mapped onto them; otherwise at least two classes are needed
    and val/test may only hold classes that train has. With `unlabelled` (e.g. for image
    generation) one class is enough, and a folder of loose images is one class "images".
    """
    if isinstance(data, tuple):
        if len(data) != 2:
            raise DataError(f"array data must be a pair (x, y); got a tuple of {len(data)}")
        source = _from_arrays(*data)
    elif isinstance(data, pd.DataFrame):
        source = _from_table(data, Path.cwd(), "table", strict, path_col, label_col)
    else:
        source = _from_string(
            os.fspath(data), strict, path_col, label_col, tfds_data_dir, unlabelled
        )
    if class_names is not None:
        _map_classes(source, list(class_names))
    else:
        _check_classes(source, min_classes=1 if unlabelled else 2)
    return source


def _from_string(text, strict, path_col, label_col, tfds_data_dir, unlabelled=False) -> ImageSource:
    if text.startswith("tfds:"):
        return _from_tfds(text[len("tfds:") :], tfds_data_dir)
    path = Path(text).expanduser()
    if path.is_dir():
        if unlabelled and _loose_images(path):
            files = walk_images(path)
            return _file_source(
                {"train": (files, [0] * len(files))}, ["images"], f"folder {text}", strict
            )
        return _from_folder(path, text, strict)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(
                f"{text} is a file but not a .csv; give a CSV of image paths and labels "
                "or a folder with one subfolder per class"
            )
        try:
            table = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read CSV {text}: {first_line(e)}; fix the file") from e
        return _from_table(table, path.parent, f"CSV {text}", strict, path_col, label_col)
    if SAMPLES.get(text) and SAMPLES[text].kind == "images":
        return _from_sample(text)
    raise DataError(
        f"{text} does not exist; give a folder with one subfolder per class, a CSV file, "
        f"tfds:NAME or a built-in sample ({', '.join(_image_samples())})"
    )


def _from_folder(root: Path, text: str, strict: bool) -> ImageSource:
    root = root.absolute()
    split_dirs = {
        SPLIT_VALUES[d.name.lower()]: d
        for d in sorted(root.iterdir())
        if d.is_dir() and d.name.lower() in ("train", "val", "validation", "test")
    }
    if "train" not in split_dirs or len(split_dirs) < 2:
        split_dirs = {"train": root}
    found = {split: _scan_classes(folder) for split, folder in split_dirs.items()}
    names = sorted(found["train"])
    for split, classes in found.items():
        extra = sorted(set(classes) - set(names))
        if extra:
            raise DataError(
                f"{split_dirs[split]} has class folder(s) {', '.join(extra)} that train/ lacks; "
                "add them to train/ or remove them"
            )
    raw = {
        split: (
            [p for c in names for p in classes.get(c, [])],
            [i for i, c in enumerate(names) for _ in classes.get(c, [])],
        )
        for split, classes in found.items()
    }
    return _file_source(raw, names, f"folder {text}", strict)


def _loose_images(folder: Path) -> bool:
    """Whether `folder` holds images directly and no class subfolders of images."""
    has_files = any(_is_image_name(f) for f in folder.iterdir() if f.is_file())
    has_classes = any(
        d.is_dir() and not d.name.startswith(".") and walk_images(d) for d in folder.iterdir()
    )
    return has_files and not has_classes


def _scan_classes(folder: Path) -> dict[str, list[str]]:
    """Class name -> image files found recursively in each (non-hidden) subfolder."""
    classes = {
        d.name: walk_images(d)
        for d in sorted(folder.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }
    classes = {name: files for name, files in classes.items() if files}
    if not classes:
        if any(_is_image_name(f) for f in folder.iterdir() if f.is_file()):
            raise DataError(
                f"the images in {folder} must be in one subfolder per class "
                f"(e.g. {folder / 'cat' / '1.jpg'}); move them into class folders"
            )
        raise DataError(
            f"no images found in {folder}; expected one subfolder per class holding "
            ".jpg/.jpeg/.png/.bmp/.gif files"
        )
    return classes


def _from_table(table, base: Path, where, strict, path_col, label_col) -> ImageSource:
    pcol = _find_column(table, path_col, _PATH_COLUMNS, "image-path", where)
    lcol = _find_column(table, label_col, _LABEL_COLUMNS, "label", where)
    scol = _find_column(table, None, ("split",), "split", where, required=False)
    empty = table[[pcol, lcol]].isna().any(axis=1)
    if empty.any():
        raise DataError(
            f"{where}: {int(empty.sum())} row(s) have no {pcol} or {lcol} value; fill or remove them"
        )
    base = base.absolute()
    paths = [str(base / Path(p).expanduser()) for p in table[pcol].astype(str)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"{where} names {len(missing)} file(s) that do not exist, e.g. {missing[0]}; "
            f"fix the paths (relative ones are resolved against {base})"
        )
    names, labels = _encode_labels(table[lcol].to_numpy())
    splits = np.full(len(table), "train", dtype=object)
    if scol is not None:
        values = table[scol].astype(str).str.strip().str.lower()
        bad = sorted(set(values) - set(SPLIT_VALUES))
        if bad:
            raise DataError(
                f"{where}: column {scol} has value(s) {', '.join(bad[:5])}; use train, val or test"
            )
        splits = values.map(SPLIT_VALUES).to_numpy()
    if not (splits == "train").any():
        raise DataError(f"{where} has no rows for the train split; mark some rows train")
    raw = {
        split: (
            [p for p, s in zip(paths, splits, strict=True) if s == split],
            labels[splits == split].tolist(),
        )
        for split in ("train", "val", "test")
        if (splits == split).any()
    }
    return _file_source(raw, names, where, strict)


def _find_column(table, given, candidates, what, where, required=True) -> str | None:
    lower = {str(c).lower(): c for c in table.columns}
    if given is not None and given in table.columns:
        return given
    if given is None:
        for name in candidates:
            if name in lower:
                return lower[name]
        if not required:
            return None
    named = f" {given!r}" if given is not None else ""
    raise DataError(
        f"{where} has no {what} column{named} (its columns: "
        f"{', '.join(map(str, table.columns))}); name them with --path-col and --label-col"
    )


def _file_source(raw, names, where, strict) -> ImageSource:
    """Check every file cheaply with PIL, then build the splits from the readable ones."""
    reasons = unreadable_reasons([p for paths, _ in raw.values() for p in paths])
    skipped = [(p, r) for p, r in reasons.items() if r]
    if skipped and strict:
        raise DataError(
            f"{len(skipped)} unreadable or non-image file(s), first {skipped[0][0]} "
            f"({skipped[0][1]}); fix or remove them, or turn strict mode off to skip them"
        )
    splits = {}
    for split, (paths, labels) in raw.items():
        keep = [i for i, p in enumerate(paths) if not reasons[p]]
        if not keep:
            raise DataError(f"{where} has no readable images in its {split} split; add some")
        splits[split] = ImageSet(
            labels=np.asarray(labels, np.int32)[keep], paths=np.asarray(paths, dtype=str)[keep]
        )
    return ImageSource(splits, names, skipped, describe_source(where, splits, names, skipped))


def unreadable_reasons(paths: list[str]) -> dict[str, str]:
    """Each file's `_unreadable_reason` ("" for a readable one), checked in parallel."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(zip(paths, pool.map(_unreadable_reason, paths), strict=True))


def _unreadable_reason(path: str) -> str:
    """Why TensorFlow could not decode this file, from its header only ("" if it can)."""
    try:
        with Image.open(path) as im:
            if im.format not in _PIL_FORMATS:
                return f"{im.format} is not JPEG, PNG, BMP or GIF"
            if im.format == "BMP" and im.mode in ("1", "P"):  # TF misreads or rejects these
                return "1-bit or palette BMP is not supported; re-save it as PNG"
    except Exception as e:  # PIL raises many types for broken files
        return f"not a readable image: {first_line(e)}"
    return ""


def _from_tfds(name: str, data_dir: str | None) -> ImageSource:
    """Load a fixed-size tfds image data set fully into memory (fine at mnist/cifar scale)."""
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir)
    info = builder.info
    keys = info.supervised_keys
    if not keys or not all(isinstance(k, str) for k in keys[:2]):
        raise DataError(
            f"tfds dataset {name!r} has no (image, label) supervised keys; pick another"
        )
    image, label = info.features[keys[0]], info.features[keys[1]]
    if not isinstance(image, tfds.features.Image) or None in image.shape:
        raise DataError(
            f"tfds dataset {name!r} does not have fixed-size images ({keys[0]}: {image}); "
            "export it to a folder of class subfolders instead"
        )
    if not isinstance(label, tfds.features.ClassLabel):
        raise DataError(f"tfds dataset {name!r} has no class-label feature; pick another")
    wanted = {"train": "train", "validation": "val", "test": "test"}
    if "train" not in info.splits:
        raise DataError(
            f"tfds dataset {name!r} has no train split (it has {', '.join(info.splits)})"
        )
    splits = {}
    for tfds_split, split in wanted.items():
        if tfds_split in info.splits:
            ds = builder.as_dataset(split=tfds_split, as_supervised=True, batch_size=-1)
            x, y = tfds.as_numpy(ds)
            splits[split] = ImageSet(labels=y.astype(np.int32), images=x)
    names = list(label.names)
    return ImageSource(splits, names, [], describe_source(f"tfds {name}", splits, names, []))


def tfds_builder(name: str, data_dir: str | None):
    """The tfds builder of `name`, prepared (downloaded if need be) in `data_dir` (default
    TFDS_DATA_DIR); a DataError says how to prepare it when that fails offline."""
    import tensorflow_datasets as tfds

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name, bad version or config, ...
        raise DataError(
            f"cannot open tfds dataset {name!r}: {first_line(e)}; "
            "check the name in the TFDS catalog"
        ) from e
    if not builder.is_prepared():
        try:
            builder.download_and_prepare()
        except Exception as e:  # offline, manual download needed, ...
            raise DataError(
                f"tfds dataset {name!r} is not prepared in {builder.data_dir} and could not be "
                f"downloaded ({type(e).__name__}: {first_line(e)}); prepare it where there is "
                f"internet (tfds build {name} --data_dir DIR) and pass --tfds-data-dir DIR "
                "or set TFDS_DATA_DIR"
            ) from e
    return builder


def _from_sample(name: str) -> ImageSource:
    x, y, names = load_sample(name)
    splits = {"train": ImageSet(labels=np.asarray(y, np.int32), images=x)}
    return ImageSource(splits, names, [], describe_source(f"sample {name}", splits, names, []))


def _from_arrays(x, y) -> ImageSource:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]
    if y.ndim == 2 and y.shape[1] == 1:  # e.g. keras.datasets.cifar10 labels
        y = y[:, 0]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or y.ndim != 1 or len(x) != len(y) or not len(y):
        raise DataError(
            "arrays must be x of shape (N, H, W) or (N, H, W, C) with C 1, 3 or 4 and y of N "
            f"labels; got x {x.shape} and y {y.shape}"
        )
    names, labels = _encode_labels(y)
    splits = {"train": ImageSet(labels=labels, images=x)}
    return ImageSource(splits, names, [], describe_source("arrays", splits, names, []))


def _encode_labels(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sorted unique labels (numerically for ints) as strings, and each value's index."""
    if values.dtype.kind not in "iub":
        values = np.array([str(v).strip() for v in values])
    uniq, codes = np.unique(values, return_inverse=True)
    return [str(u) for u in uniq], codes.astype(np.int32)


def _map_classes(source: ImageSource, class_names: list[str]) -> None:
    index = {name: i for i, name in enumerate(class_names)}
    present = {source.class_names[i] for s in source.splits.values() for i in np.unique(s.labels)}
    unseen = sorted(present - set(index))
    if unseen:
        raise DataError(
            f"the model never saw label(s) {', '.join(unseen[:10])} (it knows "
            f"{', '.join(class_names[:20])}); remove those images or use a model trained on them"
        )
    lookup = np.array([index.get(name, -1) for name in source.class_names], np.int32)
    for split in source.splits.values():
        split.labels = lookup[split.labels]
    source.class_names = class_names


def _check_classes(source: ImageSource, min_classes: int = 2) -> None:
    if len(source.class_names) < min_classes:
        raise DataError(
            f"{source.description} has only one class ({', '.join(source.class_names)}); "
            "image classification needs at least two, so add images of another class"
        )
    trained = set(np.unique(source.splits["train"].labels))
    for split, images in source.splits.items():
        extra = sorted(set(np.unique(images.labels)) - trained)
        if extra:
            raise DataError(
                f"the {split} split of {source.description} has class(es) "
                f"{', '.join(source.class_names[i] for i in extra)} with no training images; "
                "add training images for them or remove them"
            )


def describe_source(where, splits, names, skipped) -> str:
    count = f"{sum(len(s) for s in splits.values()):,} images"
    if len(splits) > 1:
        count += " in " + "/".join(splits)
    extra = f", {len(skipped)} unreadable skipped" if skipped else ""
    return f"{where} ({count}, {len(names)} classes{extra})"


def _image_samples() -> list[str]:
    return sorted(name for name, sample in SAMPLES.items() if sample.kind == "images")


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def split_stratified(
    images: ImageSet, fractions: dict[str, float], seed: int
) -> dict[str, ImageSet]:
    """Carve stratified splits, e.g. {"val": 0.1, "test": 0.1}, out of `images` by class."""
    return stratified_splits(images, images.labels, fractions, seed, unit="images")


def infer_image_shape(images: ImageSet, max_side: int = 128) -> tuple[int, int, int]:
    """(H, W, C) to train at: the data's size scaled down so the longer side <= max_side.

    Arrays give their own size; files give the most common size among up to 50 of them
    (spread over the set), read with PIL. C is 1 when all looked-at images are grayscale.
    """
    sizes, gray = sampled_sizes(images)
    (h, w), channels = sizes.most_common(1)[0][0], 1 if gray else 3
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale)), channels


def sampled_sizes(images: ImageSet, samples: int = 50) -> tuple[Counter, bool]:
    """(How many images have each (H, W), whether all are grayscale) for `images`.

    Arrays give their own size; files give the sizes of up to `samples` of them (spread
    over the set), read with PIL.
    """
    if images.images is not None:
        arr = images.images
        return Counter({tuple(arr.shape[1:3]): len(arr)}), arr.ndim == 3 or arr.shape[-1] == 1
    picks = np.unique(np.linspace(0, len(images) - 1, min(samples, len(images))).astype(int))
    sizes, gray = Counter(), True
    for path in images.paths[picks]:
        try:
            with Image.open(path) as im:
                sizes[(im.height, im.width)] += 1
                gray = gray and _is_gray(im)
        except Exception:  # unreadable files are dropped by the data set too
            continue
    if not sizes:
        raise DataError(f"none of the images, e.g. {images.paths[0]}, can be read; check them")
    return sizes, gray


def _is_gray(im: Image.Image) -> bool:
    if im.mode == "P":  # e.g. grayscale GIFs
        palette = np.asarray(im.getpalette() or [0, 0, 0]).reshape(-1, 3)
        return bool((palette == palette[:, :1]).all())
    return im.mode in _GRAY_MODES


def decode_image_bytes(data: tf.Tensor, image_shape: tuple[int, int, int]) -> tf.Tensor:
    """One encoded JPEG/PNG/BMP/GIF (scalar tf.string) -> float32 (H, W, C) in [0, 255].

    Pure TF ops: also traced into the exported serving signature.
    """
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return to_image_shape(image, image_shape)


def prepare_array(images: np.ndarray, image_shape) -> np.ndarray:
    """Images (N, H, W[, C]) -> float32 (N, H, W, C) in [0, 255] of `image_shape`."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    chunks = [
        to_image_shape(x[i : i + _CHUNK], image_shape).numpy()
        for i in range(0, max(len(x), 1), _CHUNK)
    ]
    return np.concatenate(chunks)


def to_image_shape(image, image_shape) -> tf.Tensor:
    """Image or batch with 1, 3 or 4 channels -> float32 with the channels and size of `image_shape`.

    Alpha is dropped, grayscale made with tf.image.rgb_to_grayscale, and the size changed
    with antialiased bilinear tf.image.resize (so downscaling does not alias). Pure TF ops:
    use it for raw-pixel serving inputs so they match training.
    """
    h, w, c = image_shape
    image = to_channels(image, c)
    if tuple(image.shape[-3:-1]) != (h, w):
        image = tf.image.resize(image, (h, w), method="bilinear", antialias=True)
    return image


def to_channels(image, channels: int) -> tf.Tensor:
    """Image or batch with 1, 3 or 4 channels -> float32 with `channels` (1 or 3), alpha dropped."""
    image = tf.cast(image, tf.float32)[..., :3]
    if image.shape[-1] == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if image.shape[-1] == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    return image


def make_dataset(
    images: ImageSet,
    image_shape,
    batch_size: int,
    *,
    training: bool,
    num_classes: int,
    seed: int = 0,
    augment=None,
    cache: bool | None = None,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 images [B, H, W, C] in [0, 255], one-hot float32 labels [B, K]).

    Files are read and decoded in parallel (undecodable ones dropped in training), and the decoded
    images cached in memory when they fit in 2 GiB (`cache` forces it on or off; arrays are
    in memory already). Training data is put in a seeded random order first (folders come
    sorted by class), then shuffled again each epoch, and `augment(images, labels)` is
    mapped over the batches.

    `shard` (workers, index) splits files between the workers of a multi-worker run (see
    `runtime.file_shard`): this worker reads and decodes only its equal share (the last
    `files % workers` of the seeded order are left out) and batches stay global-sized, as
    tf.distribute expects of a pipeline sharded by file (policy OFF: nothing more to shard).
    Arrays ignore it: they are in memory, sharded by DATA.
    """
    order = np.random.default_rng(seed).permutation(len(images)) if training else slice(None)
    labels = images.labels[order]
    image_bytes = 4 * int(np.prod(image_shape))
    if images.images is not None:
        x = prepare_array(images.images[order], image_shape)
        ds = tf.data.Dataset.from_tensor_slices((x, labels))
    else:
        paths = images.paths[order]
        if shard is not None:
            workers, index = shard
            mine = slice(index, len(paths) - len(paths) % workers, workers)
            paths, labels = paths[mine], labels[mine]
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        ds = ds.map(
            lambda path, label: (_decode_file(path, image_shape), label),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not training,
        )
        if training:  # a file that passed the header check but cannot be decoded
            ds = ds.ignore_errors(log_warning=True)
        if cache is None:
            cache = len(images) * image_bytes < _CACHE_BYTES
        if cache:
            ds = ds.cache()
    if training:
        buffer = max(1, min(len(images), _SHUFFLE_BYTES // image_bytes))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x, y: (x, tf.one_hot(y, num_classes)))
    if training and augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    if shard is not None and images.images is None:
        ds = with_shard_policy(ds, tf.data.experimental.AutoShardPolicy.OFF)
    return ds.prefetch(tf.data.AUTOTUNE)


def decoded_batches(paths: list[str], image_shape, batch_size: int) -> tf.data.Dataset:
    """Batches of (float32 images [B, H, W, C] in [0, 255], int64 indices into `paths`), in order.

    Decoded as `make_dataset` decodes; a file TensorFlow cannot decode (e.g. a truncated PNG
    whose header passed `unreadable_reasons`) is left out, and the indices show which.
    """
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths, dtype=str), np.arange(len(paths))))
    ds = ds.map(
        lambda path, index: (_decode_file(path, image_shape), index),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.ignore_errors().batch(batch_size).prefetch(tf.data.AUTOTUNE)


def seeded_order(count: int, *, training: bool, seed: int, shard=None) -> np.ndarray:
    """The order a per-image pipeline reads `count` images in: seeded random for training, as
    given otherwise; with `shard` (workers, index) only this worker's equal share of it."""
    order = np.random.default_rng(seed).permutation(count) if training else np.arange(count)
    if shard is not None:
        workers, index = shard
        order = order[index : len(order) - len(order) % workers : workers]
    return order


def image_elements(paths, images, extra: np.ndarray) -> tf.data.Dataset:
    """(image path or pixels, extra[i]) per image, from file `paths` or in-memory `images`;
    images of several sizes (an object array) come from a generator."""
    if images is None:
        return tf.data.Dataset.from_tensor_slices((paths, extra))
    if images.dtype != object:
        return tf.data.Dataset.from_tensor_slices((images, extra))
    return tf.data.Dataset.from_generator(
        lambda: zip(images, extra, strict=True),
        output_signature=(
            tf.TensorSpec([None, None, images[0].shape[-1]], images[0].dtype),
            tf.TensorSpec(extra.shape[1:], tf.as_dtype(extra.dtype)),
        ),
    )


def read_pixels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """An image element (a file path, or pixels) -> float32 [H, W, channels] in [0, 255]."""
    if image.dtype == tf.string:
        image = tf.io.decode_image(tf.io.read_file(image), channels=3, expand_animations=False)
    return to_channels(image, channels)


def decode_error(path: str) -> str:
    """Why TensorFlow cannot decode the image file at `path` ("" if it can)."""
    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError as e:
        message = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", e.message).strip()
        return f"not a decodable image: {first_line(message)}"
    return ""


def _decode_file(path: tf.Tensor, image_shape) -> tf.Tensor:
    return decode_image_bytes(tf.io.read_file(path), image_shape)


def image_files(paths) -> list[str]:
    """Expand files and folders (recursively) to the .jpg/.jpeg/.png/.bmp/.gif files, sorted."""
    paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    found = set()
    for path in map(Path, paths):
        if path.is_dir():
            found.update(walk_images(path))
        elif path.is_file():
            if not _is_image_name(path):
                raise DataError(f"{path} is not a .jpg/.jpeg/.png/.bmp/.gif file; give images")
            found.add(str(path))
        else:
            raise DataError(f"{path} does not exist; check the path")
    if not found:
        raise DataError(f"no .jpg/.jpeg/.png/.bmp/.gif files found in {', '.join(map(str, paths))}")
    return sorted(found)


def image_inputs(inputs) -> list[str]:
    """The image files that `predict` inputs (files and folders) name, sorted."""
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs or [])
    if not items:
        raise DataError("no inputs to predict; pass JPEG/PNG/BMP/GIF files or folders")
    return image_files(items)


def read_images(inputs) -> list[np.ndarray | Bad]:
    """Each image file of `inputs` decoded (see read_image_file)."""
    return [read_image_file(path) for path in image_inputs(inputs)]


def read_image_file(path: str) -> np.ndarray | Bad:
    """An image file's pixels (H, W, 3) uint8, decoded as the exports decode, or a Bad."""
    reason = unreadable_reasons([path])[path]
    if reason:
        return Bad({"input": path}, reason)
    try:
        return tf.io.decode_image(
            tf.io.read_file(path), channels=3, expand_animations=False
        ).numpy()
    except tf.errors.OpError as e:
        return Bad({"input": path}, f"not a decodable image: {e.message.splitlines()[0][:200]}")


def walk_images(folder: Path) -> list[str]:
    """Image files under `folder`, recursively, skipping hidden files and folders."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            os.path.join(root, f) for f in files if not f.startswith(".") and _is_image_name(f)
        ]
    return sorted(found)


def _is_image_name(path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)
