"""Images with per-pixel class masks, for segmentation: find them, check them, encode the masks.

`load_mask_source` accepts a folder with images/ and masks/ (or an image folder and `masks=`),
a COCO instances JSON with `images=`, `tfds:NAME`, arrays `(x, y)` or a dict of them per split,
or a built-in sample name. Every mask is read once at load: checked against its image's size
and the class list, mapped to class indices (0..K-1, IGNORE for unlabeled pixels) and kept as
PNG bytes. Image files stay on disk.
"""

from __future__ import annotations

import io
import json
import os
import re
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.data.images import (
    SPLIT_VALUES,
    describe_source,
    first_line,
    tfds_builder,
    unreadable_reasons,
    walk_images,
)
from dltoolkit.data.samples import SAMPLES, load_sample

IGNORE = 255  # internal class index of pixels no loss or metric counts; so at most 255 classes
_SPLIT_FOLDER = re.compile(r"(train|val|valid|validation|test)\d*")  # e.g. train2017
_IGNORE_NAMES = {"unlabeled", "unlabelled", "void", "ignore"}
_MASK_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}
_SHOWN = 3  # files named in an error about many
_WORKERS = 8  # PIL and zlib release the GIL while decoding and encoding


@dataclass
class MaskSet:
    """Images and their class-index masks for one split."""

    masks: np.ndarray  # (N,) object array of PNG bytes: uint8 (H, W) class indices or IGNORE
    paths: np.ndarray | None = None  # (N,) str image file paths, or
    images: np.ndarray | None = None  # (N, H, W, C) uint8 (C 1 or 3); (N,) object if sizes vary
    names: np.ndarray | None = None  # (N,) str short names for reports (file stems / indices)

    def __len__(self) -> int:
        return len(self.masks)

    def subset(self, idx) -> MaskSet:
        def pick(a):
            return None if a is None else a[idx]

        return MaskSet(self.masks[idx], pick(self.paths), pick(self.images), pick(self.names))


@dataclass
class MaskSource:
    splits: dict[str, MaskSet]  # "train" always; "val"/"test" when the data defines them
    class_names: list[str]  # index -> name
    colors: list[tuple[int, int, int]]  # index -> RGB for drawn masks (IGNORE is drawn black)
    description: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image path, reason)


def encode_mask(index_map: np.ndarray) -> bytes:
    """A uint8 (H, W) class-index map -> PNG bytes (fast compression)."""
    if index_map.dtype != np.uint8 or index_map.ndim != 2:
        raise ValueError(f"a mask must be uint8 (H, W); got {index_map.dtype} {index_map.shape}")
    buffer = io.BytesIO()
    Image.fromarray(index_map).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_mask(png: bytes) -> np.ndarray:
    """PNG bytes from `encode_mask` -> the uint8 (H, W) class-index map."""
    with Image.open(io.BytesIO(png)) as image:
        return np.array(image)


def load_mask_source(
    data,
    *,
    images=None,
    masks=None,
    classes=None,
    ignore_value: int | None = None,
    strict: bool = False,
    tfds_data_dir: str | None = None,
    class_names: list[str] | None = None,
) -> MaskSource:
    """Load images and masks from a folder, COCO JSON, `tfds:NAME`, arrays or a sample name.

    Mask values are contiguous class indices 0..K-1, or exactly 0 and 255 (binary), unless
    `classes` (a file) maps values or RGB colours to class names; `ignore_value` and entries
    named unlabeled/void/ignore become IGNORE. Unreadable image files are skipped and listed
    in `skipped`, or raise with `strict`. With `class_names` (a trained model's classes) the
    masks are mapped onto them by name.
    """
    if ignore_value is not None and not 0 <= ignore_value <= 255:
        raise ConfigError(f"ignore_value {ignore_value} is not a mask value; give one in 0..255")
    mapping = _read_classes(Path(classes).expanduser(), ignore_value) if classes else None
    pending = _pending(data, images, masks, mapping, strict, tfds_data_dir)
    if pending.class_names is not None and (mapping is not None or ignore_value is not None):
        raise ConfigError(
            f"classes and ignore_value apply to masks of values; {pending.where} names its "
            "classes itself, so leave them out"
        )
    return _finish(pending, mapping, ignore_value, class_names)


# --- sources: where the images are and how to read each mask --------------------------------


@dataclass
class _Pending:
    """A source before its masks are read: per split the set and a reader per mask."""

    where: str
    sets: dict[str, dict]  # split -> MaskSet fields except masks
    readers: dict[str, list[Callable[[], np.ndarray]]]  # -> uint8 values or packed RGB
    labels: dict[str, list[str]]  # what an error calls each mask
    class_names: list[str] | None = None  # set when the readers give class indices
    first_file: str | None = None  # a mask file, whose palette (if any) colours the classes
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _pending(data, images, masks, mapping, strict, tfds_data_dir) -> _Pending:
    if isinstance(data, dict | tuple):
        _refuse(images, masks, mapping, "array data")
        return _from_arrays(data if isinstance(data, dict) else {"train": data}, "arrays")
    text = os.fspath(data)
    path = Path(text).expanduser()
    if text.startswith("tfds:"):
        _refuse(images, masks, mapping, "tfds data")
        return _from_tfds(text[len("tfds:") :], tfds_data_dir)
    if path.is_dir():
        _refuse(images, None, None, "folder data")
        return _from_folders(path, masks, text, strict, isinstance(mapping, _ColourClasses))
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise DataError(
                f"{text} is a file but not a COCO .json; give a folder with images/ and masks/ "
                "or a COCO instances JSON with images=FOLDER"
            )
        _refuse(None, masks, None, "COCO data")
        return _from_coco(path, images, strict)
    if text in SAMPLES and SAMPLES[text].kind == "segmentation":
        _refuse(images, masks, None, "a sample")
        return _from_sample(text)
    samples = sorted(n for n, s in SAMPLES.items() if s.kind == "segmentation")
    raise DataError(
        f"{text} does not exist; give a folder with images/ and masks/, a COCO JSON file, "
        f"tfds:NAME or a built-in sample ({', '.join(samples)})"
    )


def _refuse(images, masks, mapping, what: str) -> None:
    """A ConfigError for options that `what` does not take."""
    if images is not None:
        raise ConfigError(f"images= is for COCO JSON data, not {what}; leave it out")
    if masks is not None:
        raise ConfigError(f"masks= is for a folder of images, not {what}; leave it out")
    if isinstance(mapping, _ColourClasses):
        raise ConfigError(
            f"{mapping.file} maps colours, which only RGB mask files have, not {what}; give a "
            "classes file of mask values"
        )


def _from_folders(root: Path, masks, text: str, strict: bool, rgb: bool) -> _Pending:
    """`root`/images + `root`/masks, or image folder `root` + mask folder `masks`."""
    if masks is None:
        image_root, mask_root, where = root / "images", root / "masks", f"folder {text}"
        if not image_root.is_dir() or not mask_root.is_dir():
            raise DataError(
                f"{text} needs an images/ and a masks/ subfolder (files paired by name); or "
                "pass masks=FOLDER, with the data folder holding the images"
            )
    else:
        image_root, mask_root = root, Path(masks).expanduser()
        where = f"folder {text} (masks {masks})"
        if not mask_root.is_dir():
            raise DataError(f"mask folder {masks} does not exist; check the path")
    folders = split_folders(image_root)
    pairs = {s: _pair(d, mask_root / d.relative_to(image_root)) for s, d in folders.items()}
    reasons = unreadable_reasons([image for found in pairs.values() for _, image, _ in found])
    skipped = [(p, r) for p, r in reasons.items() if r]
    if skipped and strict:
        raise DataError(
            f"{len(skipped)} unreadable or non-image file(s), first {skipped[0][0]} "
            f"({skipped[0][1]}); fix or remove them, or turn strict mode off to skip them"
        )
    pending = _Pending(where, {}, {}, {}, skipped=skipped)
    for split, found in pairs.items():
        kept = [pair for pair in found if not reasons[pair[1]]]
        if not kept:
            raise DataError(f"{where} has no readable images in its {split} split; add some")
        names, image_paths, mask_paths = (list(column) for column in zip(*kept, strict=True))
        pending.sets[split] = {
            "paths": np.asarray(image_paths, dtype=str),
            "names": np.asarray(names, dtype=str),
        }
        pending.readers[split] = [
            partial(_read_mask_file, m, i, rgb)
            for i, m in zip(image_paths, mask_paths, strict=True)
        ]
        pending.labels[split] = mask_paths
    pending.first_file = pending.labels["train"][0]
    return pending


def split_folders(root: Path) -> dict[str, Path]:
    """Split -> folder for train/val/test subfolders (also e.g. train2017), else train -> root."""
    found = {}
    for folder in sorted(root.iterdir()):
        match = _SPLIT_FOLDER.fullmatch(folder.name.lower())
        if match and folder.is_dir():
            split = SPLIT_VALUES[match[1]]
            if split in found:
                raise DataError(f"{found[split]} and {folder} are both a {split} split; keep one")
            found[split] = folder
    if "train" not in found:
        return {"train": root}
    return {split: found[split] for split in ("train", "val", "test") if split in found}


def _pair(image_dir: Path, mask_dir: Path) -> list[tuple[str, str, str]]:
    """(name, image, mask) of the files that share a relative path without extension."""
    if not mask_dir.is_dir():
        raise DataError(
            f"{mask_dir} does not exist; the mask folder needs the image folder's split "
            f"subfolders ({image_dir.name})"
        )
    images, masks = _by_name(image_dir), _by_name(mask_dir)
    if not images:
        raise DataError(f"no .jpg/.jpeg/.png/.bmp/.gif images found in {image_dir}; add some")
    _check_paired(images, mask_dir, masks, "image(s)", "mask")
    _check_paired(masks, image_dir, images, "mask(s)", "image")
    return [(name, images[name], masks[name]) for name in sorted(images)]


def _check_paired(files: dict, other_dir: Path, others: dict, what: str, other: str) -> None:
    lonely = sorted(files.keys() - others.keys())
    if lonely:
        shown = ", ".join(files[name] for name in lonely[:_SHOWN])
        more = f" and {len(lonely) - _SHOWN} more" if len(lonely) > _SHOWN else ""
        raise DataError(
            f"{len(lonely)} {what} have no {other} of the same name in {other_dir}: "
            f"{shown}{more}; images and masks pair by name (a.jpg with a.png), so add the "
            f"missing {other}s or remove those files"
        )


def _by_name(folder: Path) -> dict[str, str]:
    """Relative path without extension -> image file, for the image files under `folder`."""
    found = {}
    for path in walk_images(folder):
        name = os.path.splitext(os.path.relpath(path, folder))[0]
        if name in found:
            raise DataError(
                f"{found[name]} and {path} have the same name; images and masks pair by "
                "name, so rename one"
            )
        found[name] = path
    return found


def _read_mask_file(mask: str, image: str, rgb: bool) -> np.ndarray:
    """The mask's values (uint8) or, with `rgb`, its packed colours, checked against the image."""
    try:
        with Image.open(mask) as picture:
            picture.load()
            values = _mask_values(picture, mask, rgb)
    except DataError:
        raise
    except Exception as e:  # PIL raises many types for broken files
        raise DataError(f"cannot read mask {mask}: {first_line(e)}; fix or replace it") from e
    with Image.open(image) as picture:
        width, height = picture.size
    if values.shape != (height, width):
        raise DataError(
            f"mask {mask} is {values.shape[1]}x{values.shape[0]} but its image {image} is "
            f"{width}x{height}; a mask needs its image's size"
        )
    return values


def _mask_values(picture: Image.Image, path: str, rgb: bool) -> np.ndarray:
    if picture.mode not in _MASK_MODES:
        raise DataError(
            f"mask {path} has mode {picture.mode}; save masks as 8-bit grayscale, palette or RGB"
        )
    if rgb:
        colours = np.asarray(picture.convert("RGB")).astype(np.int32)
        return colours[..., 0] << 16 | colours[..., 1] << 8 | colours[..., 2]
    if picture.mode in ("L", "P"):  # palette masks: the palette indices are the values
        return np.asarray(picture)
    if picture.mode in ("1", "LA"):
        return np.asarray(picture.convert("L"))
    colours = np.asarray(picture.convert("RGB"))
    if (colours[..., 0] != colours[..., 1]).any() or (colours[..., 1] != colours[..., 2]).any():
        raise DataError(f"RGB mask {path}: give classes=FILE mapping each colour to a class")
    return colours[..., 0]


def _palette(path: str) -> np.ndarray | None:
    """The (256, 3) palette of a palette-mode mask file, else None."""
    with Image.open(path) as picture:
        if picture.mode != "P":
            return None
        palette = np.zeros(768, np.uint8)
        values = picture.getpalette() or []
        palette[: len(values)] = values
        return palette.reshape(256, 3)


def _from_coco(path: Path, images, strict: bool) -> _Pending:
    """COCO instances: categories by id -> 1..K, 0 = background, iscrowd regions IGNORE."""
    from pycocotools.coco import COCO

    if images is None:
        raise DataError(
            f"COCO file {path} needs images=FOLDER, the folder its file_name entries are in"
        )
    folder = Path(images).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder {images} does not exist; check the path")
    doc = read_coco(path)
    coco = COCO()
    coco.dataset = doc
    with redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    ids = sorted(category["id"] for category in doc["categories"])
    index = {category_id: i + 1 for i, category_id in enumerate(ids)}
    _check_annotations(doc, index, path)
    entries = doc["images"]
    paths = [str(folder / entry["file_name"]) for entry in entries]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"{path} names {len(missing)} image file(s) missing from {folder}, e.g. "
            f"{missing[0]}; fix images= or the file names"
        )
    reasons = unreadable_reasons(paths)
    skipped = [(p, r) for p, r in reasons.items() if r]
    if skipped and strict:
        raise DataError(
            f"{len(skipped)} unreadable or non-image file(s), first {skipped[0][0]} "
            f"({skipped[0][1]}); fix or remove them, or turn strict mode off to skip them"
        )
    kept = [(entry, p) for entry, p in zip(entries, paths, strict=True) if not reasons[p]]
    if not kept:
        raise DataError(f"{path} lists no readable images; add some")
    names = ["background"] + [coco.cats[category_id]["name"] for category_id in ids]
    return _Pending(
        where=f"COCO {path}",
        sets={
            "train": {
                "paths": np.asarray([p for _, p in kept], dtype=str),
                "names": np.asarray([Path(p).stem for _, p in kept], dtype=str),
            }
        },
        readers={"train": [partial(_coco_mask, coco, e, p, index, path) for e, p in kept]},
        labels={"train": [p for _, p in kept]},
        class_names=names,
        skipped=skipped,
    )


def read_coco(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read COCO JSON {path}: {first_line(e)}; fix the file") from e
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise DataError(
            f"{path} is not a COCO instances file: it needs images, annotations and "
            "categories lists"
        )
    for what, needed in (
        ("images", {"id", "file_name", "height", "width"}),
        ("categories", {"id", "name"}),
    ):
        for entry in doc[what]:
            if not isinstance(entry, dict) or not needed <= entry.keys():
                raise DataError(
                    f"{path}: an entry of {what} lacks {', '.join(sorted(needed))}: "
                    f"{str(entry)[:80]}; fix the file"
                )
    return doc


def _check_annotations(doc: dict, index: dict, path: Path) -> None:
    image_ids = {entry["id"] for entry in doc["images"]}
    for ann in doc["annotations"]:
        problem = ""
        if not ann.get("segmentation"):
            problem = "has no segmentation (polygons or RLE); segmentation needs masks, not boxes"
        elif ann.get("category_id") not in index:
            problem = f"has category_id {ann.get('category_id')!r}, which categories lacks"
        elif ann.get("image_id") not in image_ids:
            problem = f"has image_id {ann.get('image_id')!r}, which images lacks"
        if problem:
            raise DataError(f"{path}: annotation {ann.get('id', '?')} {problem}; fix the file")


def _coco_mask(coco, entry: dict, image: str, index: dict, path: Path) -> np.ndarray:
    """Class indices of one image: annotations painted in file order, later ones on top."""
    with Image.open(image) as picture:
        width, height = picture.size
    if (entry["height"], entry["width"]) != (height, width):
        raise DataError(
            f"{image} is {width}x{height} but {path} says {entry['width']}x{entry['height']}; "
            "fix the entry or the image"
        )
    mask = np.zeros((height, width), np.uint8)
    for ann in coco.imgToAnns[entry["id"]]:
        mask[coco.annToMask(ann) > 0] = IGNORE if ann.get("iscrowd") else index[ann["category_id"]]
    return mask


def _from_tfds(name: str, data_dir: str | None) -> _Pending:
    """A tfds data set with an image and a segmentation-mask image feature, in memory."""
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir)
    image_key, mask_key = _tfds_keys(builder.info, name)
    if "train" not in builder.info.splits:
        raise DataError(
            f"tfds dataset {name!r} has no train split (it has {', '.join(builder.info.splits)})"
        )
    pending = _Pending(f"tfds {name}", {}, {}, {})
    for tfds_split, split in (("train", "train"), ("validation", "val"), ("test", "test")):
        if tfds_split not in builder.info.splits:
            continue
        examples = list(tfds.as_numpy(builder.as_dataset(split=tfds_split)))
        images = stack_images([example[image_key][..., :3] for example in examples])
        masks = [example[mask_key][..., 0] for example in examples]
        labels = [f"tfds {name} {tfds_split} example {i}" for i in range(len(masks))]
        for label, image, mask in zip(labels, images, masks, strict=True):
            if image.shape[:2] != mask.shape:
                raise DataError(f"{label}: mask {mask.shape} and image {image.shape} differ")
        pending.sets[split] = {"images": images, "names": np.arange(len(masks)).astype(str)}
        pending.readers[split] = [partial(np.asarray, mask) for mask in masks]
        pending.labels[split] = labels
    return pending


def _tfds_keys(info, name: str) -> tuple[str, str]:
    """(image feature, mask feature): the image features, the mask named *mask*/*segmentation*."""
    import tensorflow_datasets as tfds

    pictures = [k for k, f in info.features.items() if isinstance(f, tfds.features.Image)]
    masks = [k for k in pictures if "mask" in k or "segmentation" in k]
    images = [k for k in pictures if k not in masks]
    if not masks or not images:
        raise DataError(
            f"tfds dataset {name!r} has no image and segmentation-mask image features "
            f"(its features: {', '.join(info.features)}); pick another"
        )
    image = "image" if "image" in images else images[0]
    if info.features[masks[0]].dtype != np.uint8 or info.features[masks[0]].shape[-1] != 1:
        raise DataError(f"tfds dataset {name!r}: {masks[0]} is not an 8-bit one-channel mask")
    return image, masks[0]


def stack_images(images: list[np.ndarray]) -> np.ndarray:
    """(N, H, W, C) when all images have one size, else an (N,) object array of them."""
    if len({image.shape for image in images}) == 1:
        return np.stack(images)
    stacked = np.empty(len(images), dtype=object)
    stacked[:] = images
    return stacked


def _from_sample(name: str) -> _Pending:
    x, y, names = load_sample(name)
    pending = _from_arrays({"train": (x, y)}, f"sample {name}")
    pending.class_names = list(names)
    return pending


def _from_arrays(pairs: dict, where: str) -> _Pending:
    unknown = sorted(set(pairs) - {"train", "val", "test"})
    if "train" not in pairs or unknown:
        raise DataError(
            "array data must be (x, y) or a dict of them with keys train, val, test; "
            f"got keys {', '.join(map(str, pairs))}"
        )
    pending = _Pending(where, {}, {}, {})
    for split, pair in pairs.items():
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise DataError(f"the {split} array data must be a pair (x, y)")
        x, y = _check_arrays(*pair, split)
        pending.sets[split] = {"images": x, "names": np.arange(len(y)).astype(str)}
        pending.readers[split] = [partial(np.asarray, mask) for mask in y]
        pending.labels[split] = [f"{split} y[{i}]" for i in range(len(y))]
    return pending


def _check_arrays(x, y, split: str) -> tuple[np.ndarray, np.ndarray]:
    """x as uint8 (N, H, W, 1 or 3) and y as uint8 (N, H, W), or a DataError."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or y.shape != x.shape[:3] or not len(y):
        raise DataError(
            f"{split} arrays must be x (N, H, W) or (N, H, W, C) with C 1, 3 or 4 and y "
            f"(N, H, W) of class indices; got x {x.shape} and y {y.shape}"
        )
    if y.dtype.kind not in "iub" or y.min() < 0 or y.max() > 255:
        raise DataError(
            f"{split} y must hold integer class indices 0..255; got {y.dtype} {y.min()}..{y.max()}"
        )
    if x.dtype != np.uint8:
        if x.dtype.kind not in "iuf" or x.min() < 0 or x.max() > 255:
            raise DataError(f"{split} x must hold pixel values in [0, 255]; got {x.dtype}")
        x = np.round(x).astype(np.uint8)
    return x[..., :3], y.astype(np.uint8)


# --- classes files: mask value or colour -> class -------------------------------------------


@dataclass
class _ValueClasses:
    """Mask values -> classes, from a classes file."""

    file: Path
    names: list[str]
    lut: np.ndarray  # (256,) int16: value -> class index, IGNORE, or -1 (not in the file)

    def apply(self, values: np.ndarray, where: str) -> np.ndarray:
        mapped = self.lut[values]
        if (mapped < 0).any():
            value = values[mapped < 0][0]
            raise DataError(
                f"mask {where} has value {value}, which {self.file} does not list; add it "
                "(name it unlabeled to ignore those pixels)"
            )
        return mapped.astype(np.uint8)


@dataclass
class _ColourClasses:
    """Packed RGB colours (r << 16 | g << 8 | b) -> classes, from a classes file."""

    file: Path
    names: list[str]
    keys: np.ndarray  # sorted packed colours
    targets: np.ndarray  # class index or IGNORE of each key
    colors: list[tuple[int, int, int]]  # each class's first colour

    def apply(self, packed: np.ndarray, where: str) -> np.ndarray:
        colours, inverse = np.unique(packed, return_inverse=True)
        at = np.searchsorted(self.keys, colours).clip(max=len(self.keys) - 1)
        unknown = self.keys[at] != colours
        if unknown.any():
            value = int(colours[unknown][0])
            raise DataError(
                f"mask {where} has colour #{value:06x} ({value >> 16}, {value >> 8 & 255}, "
                f"{value & 255}), which {self.file} does not list; add it (name it unlabeled "
                "to ignore those pixels)"
            )
        return self.targets[at][inverse].reshape(packed.shape).astype(np.uint8)


def _read_classes(path: Path, ignore_value: int | None) -> _ValueClasses | _ColourClasses:
    """Classes in the file's order (value order for values); unlabeled/void/ignore -> IGNORE."""
    entries = [(_mask_key(key, path), str(name).strip()) for key, name in _class_entries(path)]
    if not entries:
        raise DataError(f"classes file {path} lists no classes; add 'value name' entries")
    rgb = isinstance(entries[0][0], tuple)
    if any(isinstance(key, tuple) != rgb for key, _ in entries):
        raise DataError(f"classes file {path} mixes mask values and colours; use one kind")
    keys = [key for key, _ in entries]
    repeated = next((key for i, key in enumerate(keys) if key in keys[:i]), None)
    if repeated is not None:
        raise DataError(f"classes file {path} lists {repeated} twice; keep one")
    if rgb and ignore_value is not None:
        raise ConfigError(
            f"ignore_value is for masks of values; name the colour 'unlabeled' in {path} instead"
        )
    if not rgb:
        entries.sort(key=lambda entry: entry[0])
    ignored = [name.lower() in _IGNORE_NAMES or key == ignore_value for key, name in entries]
    names = list(
        dict.fromkeys(n for (_, n), skip in zip(entries, ignored, strict=True) if not skip)
    )
    if len(names) > IGNORE:
        raise DataError(f"classes file {path} has {len(names)} classes; at most {IGNORE} fit")
    targets = np.array(
        [IGNORE if skip else names.index(n) for (_, n), skip in zip(entries, ignored, strict=True)]
    )
    if rgb:
        packed = np.array([r << 16 | g << 8 | b for r, g, b in keys])
        order = np.argsort(packed)
        colors = [next(k for (k, n) in entries if n == name) for name in names]
        return _ColourClasses(path, names, packed[order], targets[order], colors)
    lut = np.full(256, -1, np.int16)
    lut[[key for key, _ in entries]] = targets
    if ignore_value is not None:
        lut[ignore_value] = IGNORE
    return _ValueClasses(path, names, lut)


def _class_entries(path: Path) -> list[tuple]:
    """(key, name) pairs in file order from a YAML, JSON, TOML or text classes file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read classes file {path}: {first_line(e)}") from e
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json", ".toml"):
        return _text_entries(text, path)
    try:
        if suffix == ".json":
            doc = json.loads(text)
        elif suffix == ".toml":
            doc = tomllib.loads(text)
        else:
            doc = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:  # JSON and TOML errors are ValueErrors
        raise DataError(f"cannot parse classes file {path}: {first_line(e)}; fix it") from e
    if isinstance(doc, dict) and ("classes" in doc or "names" in doc):
        doc = doc["classes"] if "classes" in doc else doc["names"]
    if isinstance(doc, list):
        return list(enumerate(doc))
    if isinstance(doc, dict):  # value: name, or name: value
        return [(k, v) if _parse_key(k) is not None else (v, k) for k, v in doc.items()]
    raise DataError(
        f"classes file {path} must map mask values or colours to class names, e.g. "
        "'classes: {0: background, 1: cell}', or list the names of values 0, 1, ..."
    )


_TEXT_ENTRY = re.compile(r"\s*(#[0-9a-fA-F]{6}|\d+\s*,\s*\d+\s*,\s*\d+|\d+)\s+(\S.*?)\s*")


def _text_entries(text: str, path: Path) -> list[tuple[str, str]]:
    """'value name', 'r,g,b name' or '#rrggbb name' lines; other lines starting # are comments."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        match = _TEXT_ENTRY.fullmatch(line)
        if match:
            entries.append((match[1], match[2]))
        elif line.strip() and not line.lstrip().startswith("#"):
            raise DataError(
                f"{path} line {number}: {line.strip()[:60]!r} is not 'value name', "
                "'r,g,b name' or '#rrggbb name'"
            )
    return entries


def _mask_key(key, path: Path) -> int | tuple[int, int, int]:
    parsed = _parse_key(key)
    values = parsed if isinstance(parsed, tuple) else (parsed,)
    if parsed is None or not all(0 <= v <= 255 for v in values):
        raise DataError(
            f"classes file {path}: {key!r} is not a mask value 0..255 or an r,g,b colour; fix it"
        )
    return parsed


def _parse_key(key) -> int | tuple[int, ...] | None:
    """A mask value (int), a colour (r, g, b), or None for anything else (e.g. a name)."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key
    if isinstance(key, list | tuple) and len(key) == 3 and all(type(c) is int for c in key):
        return tuple(key)
    if not isinstance(key, str):
        return None
    text = key.strip()
    if text.isdigit():
        return int(text)
    if re.fullmatch(r"#[0-9a-fA-F]{6}", text):
        return tuple(bytes.fromhex(text[1:]))
    match = re.fullmatch(r"[\[(]?\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*[\])]?", text)
    return tuple(int(g) for g in match.groups()) if match else None


# --- reading, mapping and checking the masks ------------------------------------------------


def _finish(pending: _Pending, mapping, ignore_value, class_names) -> MaskSource:
    splits = list(pending.readers)
    labels = [label for split in splits for label in pending.labels[split]]
    readers = [reader for split in splits for reader in pending.readers[split]]
    masks, present = _encode_all(readers, labels, mapping)
    note, palette = "", _palette(pending.first_file) if pending.first_file else None
    if pending.class_names is not None:
        names, colors = pending.class_names, distinct_colors(len(pending.class_names))
    elif isinstance(mapping, _ColourClasses):
        names, colors = mapping.names, mapping.colors
    elif mapping is not None:
        names, colors = mapping.names, _value_colors(palette, mapping.lut, mapping.names)
    else:
        lut, names, note = _value_classes(present, labels, ignore_value, class_names is None)
        masks, present = _remap(masks, present, lut)
        colors = _value_colors(palette, lut, names)
    if class_names is not None:
        lut, colors = _onto(names, colors, present, list(class_names))
        masks, present = _remap(masks, present, lut)
        names = list(class_names)
    sets, start = {}, 0
    for split in splits:  # "train" first
        end = start + len(pending.readers[split])
        sets[split] = MaskSet(masks[start:end], **pending.sets[split])
        start = end
    description = describe_source(pending.where, sets, names, pending.skipped)
    if note:
        description += f"; {note}"
    if class_names is None:
        _check_present(present[: len(sets["train"])], names, description)
    return MaskSource(sets, names, colors, description, pending.skipped)


def _encode_all(readers, labels, mapping) -> tuple[np.ndarray, np.ndarray]:
    """Each mask read, mapped (when a classes file is given) and PNG-encoded, in parallel,
    with the values each holds ((N, 256) bool)."""

    def encode(i: int) -> tuple[bytes, np.ndarray]:
        values = readers[i]()
        if mapping is not None:
            values = mapping.apply(values, labels[i])
        return encode_mask(values), np.bincount(values.ravel(), minlength=256) > 0

    with ThreadPoolExecutor(_WORKERS) as pool:
        results = list(pool.map(encode, range(len(readers))))
    masks = np.empty(len(results), dtype=object)
    masks[:] = [png for png, _ in results]
    return masks, np.array([seen for _, seen in results]).reshape(-1, 256)


def _value_classes(present, labels, ignore_value, contiguous: bool):
    """(lut, class names, note) for masks without a classes file: values 0..K-1 are classes
    "0".."K-1", or 0 and 255 are a binary "0"/"255"; others are refused when `contiguous`."""
    seen = present.any(axis=0)
    if ignore_value is not None:
        seen[ignore_value] = False
    values = np.flatnonzero(seen)
    binary = values.tolist() == [0, 255]
    if contiguous and not binary and (values != np.arange(len(values))).any():
        value = values[np.argmax(values != np.arange(len(values)))]
        where = labels[np.argmax(present[:, value])]
        stray = (
            f", or ignore_value={value} if it marks unlabeled pixels" if value == values[-1] else ""
        )
        raise DataError(
            f"mask {where} has value {value}, but without a classes file mask values must be "
            f"the class indices 0..K-1 (found {_listed(values)}) or exactly 0 and 255; give "
            f"classes=FILE naming each value{stray}"
        )
    if len(values) > IGNORE:
        raise DataError(
            f"the masks use {len(values)} values; at most {IGNORE} classes fit, so give "
            "ignore_value=255 if 255 marks unlabeled pixels"
        )
    lut = np.full(256, IGNORE, np.uint8)
    lut[values] = np.arange(len(values))
    return lut, [str(v) for v in values], "binary masks: 0 and 255" if binary else ""


def _listed(values: np.ndarray) -> str:
    shown = ", ".join(map(str, values[:8]))
    return shown + (", ..." if len(values) > 8 else "")


def _remap(masks: np.ndarray, present: np.ndarray, lut: np.ndarray):
    """Masks and their present values after mapping every value through `lut` (uint8)."""
    lut = lut.astype(np.uint8)
    moved = present[:, lut != np.arange(256)].any(axis=1)
    if not moved.any():
        return masks, present
    masks, mapped = masks.copy(), np.zeros_like(present)
    for i in np.flatnonzero(moved):
        masks[i] = encode_mask(lut[decode_mask(masks[i])])
    for value in np.flatnonzero(present.any(axis=0)):
        mapped[:, lut[value]] |= present[:, value]
    return masks, mapped


def _onto(names, colors, present, class_names):
    """(lut, colours) mapping the source's classes onto a trained model's, by name."""
    index = {name: i for i, name in enumerate(class_names)}
    used = present.any(axis=0)[: len(names)]
    unseen = sorted({name for name, seen in zip(names, used, strict=True) if seen} - set(index))
    if unseen:
        raise DataError(
            f"the model never saw class(es) {', '.join(unseen[:10])} (it knows "
            f"{', '.join(class_names[:20])}); remove those masks or use a model trained on them"
        )
    lut = np.full(256, IGNORE, np.uint8)
    lut[: len(names)] = [index.get(name, IGNORE) for name in names]
    mine = dict(zip(names, colors, strict=True))
    default = distinct_colors(len(class_names))
    return lut, [mine.get(name, default[i]) for i, name in enumerate(class_names)]


def _check_present(present: np.ndarray, names: list[str], description: str) -> None:
    found = np.flatnonzero(present.any(axis=0)[: len(names)])
    if len(found) < 2:
        shown = ", ".join(names[i] for i in found) or "none"
        raise DataError(
            f"{description}: the train masks hold {len(found)} class(es) ({shown}); "
            "segmentation needs at least two (e.g. background and an object), so add masks "
            "with another class"
        )


def _value_colors(palette, lut: np.ndarray, names: list[str]) -> list[tuple[int, int, int]]:
    """The palette colour of each class's first value, when masks have a distinct palette."""
    if palette is None:
        return distinct_colors(len(names))
    colors = [tuple(int(c) for c in palette[np.argmax(lut == i)]) for i in range(len(names))]
    return colors if len(set(colors)) == len(colors) else distinct_colors(len(names))


def distinct_colors(count: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map: index bits spread over the high bits of R, G and B."""
    colors = []
    for index in range(count):
        rgb = [0, 0, 0]
        for shift in range(8):
            for channel in range(3):
                rgb[channel] |= (index >> (3 * shift + channel) & 1) << (7 - shift)
        colors.append(tuple(rgb))
    return colors
