"""Images with object boxes, for detection: find them, check them, convert every box once.

`load_box_source` reads a YOLO folder (images/ + labels/), an Ultralytics data YAML, a COCO
JSON, a Pascal VOC folder, a CSV/TSV of one box a row, `tfds:NAME`, arrays `(x, y)` or a dict
of them per split, or the built-in sample "digit-boxes" (readers in `box_formats`). Every box
comes out in one format, BOX_FORMAT "xyxy": x1, y1, x2, y2 float32 in pixels of the original
image, pixel i spanning [i, i + 1) (so VOC's 1-based corners move by one, see `box_formats`).

What is wrong with the data is dropped or mended and listed in `BoxSource.problems`, or
raises a one-line DataError in strict mode: boxes of zero area, inverted or wholly outside
the image are dropped; boxes partly outside are clipped (overshoot up to 1 pixel, rounding,
silently); unknown classes are dropped; an image without a label file (YOLO) or annotation
(VOC) is kept as a negative; unreadable or missing images are skipped. Images without boxes
are valid negatives. Image files stay on disk; their sizes are read from the file headers
when the format does not give them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.data import box_formats as formats
from dltoolkit.data.box_formats import Annotated, Parsed, Problems
from dltoolkit.data.images import unreadable_reasons
from dltoolkit.data.masks import stack_images
from dltoolkit.data.samples import SAMPLES, load_sample

BOX_FORMAT = "xyxy"  # x1, y1, x2, y2 in pixels of the original image
_ROUNDING = 1.0  # pixels a box may overshoot the image before its clipping is reported
_WORKERS = 16  # PIL reads headers with the GIL released while waiting on the disk


@dataclass
class BoxSet:
    """Images and their boxes for one split."""

    boxes: np.ndarray  # (N,) object array, each float32 (n_i, 4) xyxy pixels (n_i may be 0)
    labels: np.ndarray  # (N,) object array, each int32 (n_i,) class indices
    sizes: np.ndarray  # (N, 2) int32 (height, width) of each original image
    paths: np.ndarray | None = None  # (N,) str image file paths, or
    images: np.ndarray | None = None  # (N, H, W, C) uint8 (C 1 or 3); (N,) object if sizes vary
    names: np.ndarray | None = None  # (N,) str short names for reports (file stems / indices)

    def __len__(self) -> int:
        return len(self.boxes)

    def subset(self, idx) -> BoxSet:
        def pick(a):
            return None if a is None else a[idx]

        return BoxSet(
            self.boxes[idx],
            self.labels[idx],
            self.sizes[idx],
            pick(self.paths),
            pick(self.images),
            pick(self.names),
        )


@dataclass
class BoxSource:
    splits: dict[str, BoxSet]  # "train" always; "val"/"test" when the data defines them
    class_names: list[str]  # index -> name
    description: str  # one line, e.g. "YOLO folder ./ds: 120 images, 340 boxes, 3 classes"
    problems: list[tuple[str, str]]  # (file, what was wrong and what was done)


def load_box_source(
    data,
    *,
    images: str | None = None,
    strict: bool = False,
    class_names: list[str] | None = None,
    tfds_data_dir: str | None = None,
) -> BoxSource:
    """Load images and boxes from a YOLO folder or data YAML, COCO JSON, VOC folder, CSV,
    `tfds:NAME`, arrays or the "digit-boxes" sample.

    `images` is the image folder of a COCO JSON or CSV (default: the file's folder, then its
    images/ folder; for a CSV also ../images). COCO crowd boxes (iscrowd=1) are dropped and
    reported: pycocotools ignores crowds only when the ground truth keeps them as crowds, and
    we keep it simple. With `class_names` (a trained model's classes) boxes are mapped onto
    them by name, other classes dropped and reported; class ids of data without names of its
    own (YOLO without a classes file, arrays) index `class_names` directly. With `strict`
    every problem is a DataError.
    """
    problems = Problems(strict)
    parsed = _parse(data, images, tfds_data_dir, problems)
    _drop_unreadable(parsed, problems)
    for split, entries in parsed.splits.items():
        if not entries:
            raise DataError(f"{parsed.where} has no readable images in its {split} split; add some")
    _read_sizes(parsed)
    names, index = _classes(parsed, class_names)
    if not names:
        raise DataError(
            f"{parsed.where} has no classes (no class names, no boxes); label some objects"
        )
    splits = {split: _box_set(e, index, problems) for split, e in parsed.splits.items()}
    boxes = sum(len(b) for b in splits["train"].boxes)
    if not boxes:
        raise DataError(
            f"{parsed.where} has no boxes in its train split (see its problems); a detector "
            "learns from boxes, so label some objects"
        )
    found = _relative(problems, parsed.root)
    return BoxSource(splits, names, _describe(parsed.where, splits, names, found), found)


# --- which format ----------------------------------------------------------------------------


def _parse(data, images, tfds_data_dir, problems: Problems) -> Parsed:
    if isinstance(data, dict | tuple):
        _no_images_option(images, "array data")
        return formats.arrays(data if isinstance(data, dict) else {"train": data}, "arrays")
    text = os.fspath(data)
    path = Path(text).expanduser()
    if text.startswith("tfds:"):
        _no_images_option(images, "tfds data")
        return formats.tfds_boxes(text[len("tfds:") :], tfds_data_dir, problems)
    if path.is_dir():
        _no_images_option(images, "a folder")
        if formats.is_voc(path):
            return formats.voc_folder(path, text, problems)
        return formats.yolo_folder(path, text, problems)
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".yaml", ".yml"):
        _no_images_option(images, "a data YAML")
        return formats.ultralytics_yaml(path, problems)
    if path.is_file() and suffix == ".json":
        return formats.coco_json(path, images, problems)
    if path.is_file() and suffix in (".csv", ".tsv", ".tab"):
        return formats.box_table(path, images, problems)
    if path.is_file():
        raise DataError(
            f"{text} is not a data YAML, COCO .json or .csv/.tsv; give one of those or a YOLO "
            "or VOC folder"
        )
    if text in SAMPLES and SAMPLES[text].kind == "detection":
        _no_images_option(images, "a sample")
        x, boxes, labels, names = load_sample(text)
        targets = [{"boxes": b, "labels": n} for b, n in zip(boxes, labels, strict=True)]
        return formats.arrays({"train": (x, targets)}, f"sample {text}", dict(enumerate(names)))
    samples = sorted(n for n, s in SAMPLES.items() if s.kind == "detection")
    raise DataError(
        f"{text} does not exist; give a YOLO or VOC folder, a data YAML, a COCO .json, a "
        f".csv of boxes, tfds:NAME or a built-in sample ({', '.join(samples)})"
    )


def _no_images_option(images, what: str) -> None:
    if images is not None:
        raise ConfigError(f"images= is for COCO JSON and CSV data, not {what}; leave it out")


# --- images: readable, and their sizes -------------------------------------------------------


def _drop_unreadable(parsed: Parsed, problems: Problems) -> None:
    """Skip (and report) missing and unreadable image files."""
    files = [e.path for entries in parsed.splits.values() for e in entries if e.path]
    present = [path for path in dict.fromkeys(files) if os.path.isfile(path)]
    reasons = unreadable_reasons(present)
    for split, entries in parsed.splits.items():
        kept = []
        for entry in entries:
            if entry.path is not None and entry.path not in reasons:
                problems.add(entry.path, "image file not found", "skipped")
            elif entry.path is not None and reasons[entry.path]:
                problems.add(entry.path, f"unreadable image ({reasons[entry.path]})", "skipped")
            else:
                kept.append(entry)
        parsed.splits[split] = kept


def _read_sizes(parsed: Parsed) -> None:
    """Fill in each image's (height, width): from arrays, else the file header (in parallel)."""
    entries = [e for split in parsed.splits.values() for e in split if e.size is None]
    for entry in entries:
        if entry.image is not None:
            entry.size = entry.image.shape[:2]
    unknown = [e for e in entries if e.size is None]
    with ThreadPoolExecutor(_WORKERS) as pool:
        sizes = list(pool.map(_header_size, [e.path for e in unknown]))
    for entry, size in zip(unknown, sizes, strict=True):
        entry.size = size


def _header_size(path: str) -> tuple[int, int]:
    with Image.open(path) as picture:
        return picture.height, picture.width


# --- classes ---------------------------------------------------------------------------------


def _classes(parsed: Parsed, class_names: list[str] | None):
    """(class names, index) where index(class id or name) is its class index or a reason
    it has none."""
    all_classes = [c for split in parsed.splits.values() for e in split for c in e.classes]
    if parsed.by_name:
        own = sorted(set(all_classes))
    elif parsed.id_names is not None:
        own = list(dict.fromkeys(parsed.id_names[i] for i in sorted(parsed.id_names)))
    else:  # bare ids: "0".."K-1"
        seen = [c for c in all_classes if c >= 0]
        own = [str(i) for i in range(max(seen, default=-1) + 1)]
    names = list(class_names) if class_names is not None else own
    by_name = {name: i for i, name in enumerate(names)}

    def index(cls) -> int | str:
        if parsed.id_names is not None and not parsed.by_name:
            if cls not in parsed.id_names:
                return f"class id {cls} is not one of the {len(parsed.id_names)} classes"
            cls = parsed.id_names[cls]
        elif not parsed.by_name:
            if 0 <= cls < len(names):
                return cls
            return f"class id {cls} is not in 0..{len(names) - 1}"
        if cls not in by_name:
            return f"class {cls!r} is not one the model knows ({', '.join(names[:10])})"
        return by_name[cls]

    return names, index


# --- boxes -----------------------------------------------------------------------------------


def _box_set(entries: list[Annotated], index, problems: Problems) -> BoxSet:
    boxes, labels = np.empty(len(entries), object), np.empty(len(entries), object)
    for i, entry in enumerate(entries):
        boxes[i], labels[i] = _checked(entry, index, problems)
    images = [e.image for e in entries]
    return BoxSet(
        boxes,
        labels,
        np.array([e.size for e in entries], np.int32).reshape(-1, 2),
        paths=np.array([e.path for e in entries], str) if entries[0].path else None,
        images=stack_images(images) if entries[0].image is not None else None,
        names=np.array([e.name for e in entries], str),
    )


def _checked(entry: Annotated, index, problems: Problems) -> tuple[np.ndarray, np.ndarray]:
    """The entry's boxes (float32 (n, 4) xyxy pixels) and class indices after dropping,
    clipping and reporting the bad ones."""
    height, width = entry.size
    boxes = np.asarray(entry.boxes, np.float64).reshape(-1, 4)
    if entry.normalized:
        boxes = boxes * [width, height, width, height]
    keep = np.ones(len(boxes), bool)
    labels = np.zeros(len(boxes), np.int32)
    for i, cls in enumerate(entry.classes):
        found = index(cls)
        if isinstance(found, str):
            problems.add(entry.file, f"{entry.where[i]}: {found}", "box dropped")
            keep[i] = False
        else:
            labels[i] = found
    limits = np.array([width, height, width, height], np.float64)
    sides = boxes[:, 2:] - boxes[:, :2]
    outside = (boxes[:, 2:] <= 0).any(axis=1) | (boxes[:, :2] >= limits[:2]).any(axis=1)
    overshoot = np.maximum(-boxes[:, :2], boxes[:, 2:] - limits[:2]).max(axis=1, initial=0)
    for i in np.flatnonzero(keep):
        problem = (
            "box with non-finite coordinates"
            if not np.isfinite(boxes[i]).all()
            else "inverted box (x2 < x1 or y2 < y1)"
            if (sides[i] < 0).any()
            else "zero-area box"
            if (sides[i] == 0).any()
            else "box wholly outside the image"
            if outside[i]
            else ""
        )
        if problem:
            problems.add(entry.file, f"{entry.where[i]}: {problem}", "dropped")
            keep[i] = False
        elif overshoot[i] > _ROUNDING:
            problems.add(entry.file, f"{entry.where[i]}: box partly outside the image", "clipped")
    clipped = np.clip(boxes[keep], 0, limits)
    return clipped.astype(np.float32), labels[keep]


# --- report ----------------------------------------------------------------------------------


def _relative(problems: Problems, root: Path | None) -> list[tuple[str, str]]:
    """The problems in order, grouped by file (first seen first), files under `root` relative."""
    order: dict[str, int] = {}
    for file, _ in problems.found:
        order.setdefault(file, len(order))
    found = sorted(problems.found, key=lambda item: order[item[0]])
    if root is None:
        return found
    base = os.path.abspath(root)
    return [
        (os.path.relpath(f, base) if os.path.abspath(f).startswith(base + os.sep) else f, what)
        for f, what in found
    ]


def _describe(where: str, splits: dict[str, BoxSet], names: list[str], problems) -> str:
    counts = "/".join(f"{split} {len(s)}" for split, s in splits.items())
    boxes = sum(len(b) for s in splits.values() for b in s.boxes)
    extra = f", {len(problems)} problems" if problems else ""
    return (
        f"{where}: {sum(map(len, splits.values()))} images ({counts}), {boxes} boxes, "
        f"{len(names)} classes{extra}"
    )
