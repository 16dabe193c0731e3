"""Readers of the box formats that `dltoolkit.data.boxes` loads: each turns one format into
`Parsed`, its images with raw boxes, before any box is checked.

Raw boxes are x1, y1, x2, y2: in pixels, or in fractions of the image's width and height when
`Annotated.normalized` (YOLO, tfds). Pascal VOC's 1-based corners are made 0-based here
(x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax), so every format's boxes cover the same
pixels: pixel i spans [i, i + 1).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from dltoolkit.core.errors import DataError
from dltoolkit.data.images import SPLIT_VALUES, first_line, tfds_builder, walk_images
from dltoolkit.data.masks import read_coco, split_folders, stack_images

_CLASS_FILES = ("classes.txt", "classes.names", "data.yaml", "data.yml")
_TABLE_COLUMNS = {
    "path": ("path", "filename", "image", "file", "filepath", "image_path"),
    "x1": ("xmin", "x1", "left"),
    "y1": ("ymin", "y1", "top"),
    "x2": ("xmax", "x2", "right"),
    "y2": ("ymax", "y2", "bottom"),
    "label": ("label", "class", "category", "name"),
}
_OPTIONAL_COLUMNS = {"width": ("width",), "height": ("height",), "split": ("split",)}


@dataclass
class Annotated:
    """One image and its raw boxes, before they are checked."""

    name: str  # short name for reports
    file: str  # what a problem with its boxes names: label file, XML, CSV, JSON, "train y[3]"
    path: str | None = None  # the image file, or
    image: np.ndarray | None = None  # the image itself
    size: tuple[int, int] | None = None  # (height, width) when the format gives it
    boxes: list = field(default_factory=list)  # per box its raw (x1, y1, x2, y2)
    classes: list = field(default_factory=list)  # per box a class id (int) or name (str)
    where: list[str] = field(default_factory=list)  # per box its place in `file`: "line 3"
    normalized: bool = False  # boxes are fractions of the width and height

    def add(self, box, cls, where: str) -> None:
        self.boxes.append(tuple(float(v) for v in box))
        self.classes.append(cls)
        self.where.append(where)


@dataclass
class Parsed:
    """A source's images per split, and how its box classes are named."""

    where: str  # "YOLO folder ./ds"
    splits: dict[str, list[Annotated]]
    root: Path | None = None  # problems name files relative to this folder
    id_names: dict[int, str] | None = None  # class id -> name; None: names, or bare ids
    by_name: bool = False  # classes are names (VOC, CSV), not ids


class Problems:
    """(file, what was wrong and what was done), de-duplicated, in order; with `strict` the
    first one raises a DataError instead."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.found: dict[tuple[str, str], None] = {}

    def add(self, file, problem: str, done: str) -> None:
        if self.strict:
            raise DataError(f"{file}: {problem}; fix it, or leave strict mode off: {done}")
        self.found[(str(file), f"{problem}, {done}")] = None


# --- YOLO: a folder, or an Ultralytics data YAML ------------------------------------------


def yolo_folder(root: Path, text: str, problems: Problems) -> Parsed:
    """images/ + labels/ (each split into train/val/test subfolders or not), or train/, val/,
    test/ folders each holding images/ + labels/."""
    if (root / "images").is_dir():
        image_root = root / "images"
        folders = {
            split: (d, root / "labels" / d.relative_to(image_root))
            for split, d in split_folders(image_root).items()
        }
    else:
        found = split_folders(root)
        if found == {"train": root}:
            raise DataError(
                f"{text} has no images/ folder; a YOLO folder holds images/ and labels/ (or "
                "train/, val/ each with images/ and labels/), a VOC folder Annotations/"
            )
        folders = {split: (d / "images", d / "labels") for split, d in found.items()}
    splits = {}
    for split, (images, labels) in folders.items():
        for folder, what in ((images, "images"), (labels, "labels")):
            if not folder.is_dir():
                raise DataError(f"{folder} does not exist; the {split} split needs {what} there")
        entries = [
            _yolo_image(path, labels / Path(os.path.relpath(path, images)).with_suffix(".txt"))
            for path in walk_images(images)
        ]
        splits[split] = [entry for entry in entries if _read_yolo_labels(entry, problems)]
    names = _yolo_class_names(root, root / "labels")
    return Parsed(f"YOLO folder {text}", splits, root, names)


def ultralytics_yaml(path: Path, problems: Problems) -> Parsed:
    """An Ultralytics data YAML: `path` (root, relative to the YAML's folder), `train`, `val`,
    `test` (folders, image files or .txt lists of images), `names`, `nc`."""
    doc = _read_yaml(path)
    if not isinstance(doc, dict) or "train" not in doc:
        raise DataError(f"{path} is not an Ultralytics data YAML: it needs a train: entry")
    root = path.parent / str(doc.get("path") or "")
    labels = _LabelFolders(path)
    splits = {}
    for key in ("train", "val", "test"):
        if doc.get(key):
            images = _yaml_images(doc[key], root, f"{path} {key}")
            entries = [_yolo_image(image, labels.of(Path(image))) for image in images]
            splits[key] = [entry for entry in entries if _read_yolo_labels(entry, problems)]
    moved = sorted({f.name for f in labels.found.values() if f.name != "labels"})
    where = f"YOLO data {path}" + (f" (labels in {', '.join(moved)})" if moved else "")
    return Parsed(where, splits, root, _yaml_names(doc, path))


def _yolo_image(path: str, label_file: Path) -> Annotated:
    return Annotated(Path(path).stem, str(label_file), path=path, normalized=True)


def _read_yolo_labels(entry: Annotated, problems: Problems) -> bool:
    """Read lines `class cx cy w h` (fractions of the image), or YOLO-seg polygons `class x y
    x y ...` (their tight box); False when the label file is unreadable (the image is skipped).
    An image without a label file is a negative, reported."""
    try:
        text = Path(entry.file).read_text()
    except FileNotFoundError:
        problems.add(entry.file, "no label file", "its image kept as a negative")
        return True
    except (OSError, UnicodeDecodeError) as e:
        problems.add(entry.file, f"unreadable label file ({first_line(e)})", "its image skipped")
        return False
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        values = _numbers(parts)
        shape_ok = len(parts) == 5 or (len(parts) >= 7 and len(parts) % 2)
        if values is None or not shape_ok or values[0] != int(values[0]):
            problems.add(entry.file, f"line {number} is not 'class cx cy w h'", "dropped")
            continue
        if len(parts) == 5:
            cx, cy, w, h = values[1:]
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        else:
            xs, ys = values[1::2], values[2::2]
            box = (min(xs), min(ys), max(xs), max(ys))
        entry.add(box, int(values[0]), f"line {number}")
    return True


def _numbers(parts: list[str]) -> list[float] | None:
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    return values if all(np.isfinite(values)) else None


def _yolo_class_names(*folders: Path) -> dict[int, str] | None:
    """Class names from classes.txt / classes.names (one a line) or a data YAML's names, in
    the first folder that has one; None when none does (ids are then the names)."""
    for folder in folders:
        for name in _CLASS_FILES:
            file = folder / name
            if not file.is_file():
                continue
            if file.suffix in (".yaml", ".yml"):
                return _yaml_names(_read_yaml(file), file)
            lines = [line.strip() for line in file.read_text().splitlines()]
            return dict(enumerate(line for line in lines if line))
    return None


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"cannot read YAML {path}: {first_line(e)}; fix the file") from e


def _yaml_names(doc, path: Path) -> dict[int, str] | None:
    """`names` (a list, or {id: name}) and `nc` of a data YAML, as {id: name}."""
    doc = doc if isinstance(doc, dict) else {}
    names, count = doc.get("names"), doc.get("nc")
    if isinstance(names, list):
        names = dict(enumerate(names))
    elif isinstance(names, dict):
        try:
            names = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: names must map class ids to names, e.g. 0: cat") from e
    elif names is None and isinstance(count, int):
        names = {i: str(i) for i in range(count)}
    elif names is not None:
        raise DataError(f"{path}: names must be a list or a mapping of class ids to names")
    if names is not None and isinstance(count, int) and count != len(names):
        raise DataError(f"{path} says nc: {count} but names lists {len(names)}; make them agree")
    return None if names is None else {i: str(n) for i, n in names.items()}


def _yaml_images(value, root: Path, where: str) -> list[str]:
    """The image files of a YAML split: folders, image files, or .txt files listing images
    (relative lines are relative to the .txt's folder)."""
    found = []
    for item in value if isinstance(value, list) else [value]:
        path = root / str(item)
        if path.is_dir():
            found += walk_images(path)
        elif path.is_file() and path.suffix.lower() == ".txt":
            lines = [line.strip() for line in path.read_text().splitlines()]
            found += [str(path.parent / line) for line in lines if line]
        elif path.is_file():
            found.append(str(path))
        else:
            raise DataError(f"{where}: {path} does not exist; fix the path (relative to {root})")
    if not found:
        raise DataError(f"{where} holds no .jpg/.jpeg/.png/.bmp/.gif images; add some")
    return found


class _LabelFolders:
    """Ultralytics' rule: an image's label file is its path with the last images/ part made
    labels/ and .txt for its extension. When that labels/ folder is missing, a sibling folder
    whose name ends in labels is used: the only one, or the one whose prefix the YAML's name
    starts with (det_config.yaml -> det_labels/)."""

    def __init__(self, yaml_path: Path):
        self.yaml_name = yaml_path.stem.lower()
        self.found: dict[Path, Path] = {}

    def of(self, image: Path) -> Path:
        parts = image.parts
        if "images" not in parts:
            return image.with_suffix(".txt")
        at = len(parts) - 1 - parts[::-1].index("images")
        parent = Path(*parts[:at])
        if parent not in self.found:
            self.found[parent] = self._folder(parent)
        return (self.found[parent] / Path(*parts[at + 1 :])).with_suffix(".txt")

    def _folder(self, parent: Path) -> Path:
        standard = parent / "labels"
        if standard.is_dir():
            return standard
        others = [
            d for d in sorted(parent.iterdir()) if d.is_dir() and d.name.lower().endswith("labels")
        ]
        if len(others) > 1:
            others = [d for d in others if self.yaml_name.startswith(_prefix(d.name))]
        if len(others) != 1:
            raise DataError(
                f"{standard} does not exist; Ultralytics reads the labels of images/ from "
                "labels/ beside it, so rename your label folder to labels/"
            )
        return others[0]


def _prefix(name: str) -> str:
    return name.lower()[: -len("labels")].rstrip("_-.") or "\0"


# --- COCO JSON -------------------------------------------------------------------------------


def coco_json(path: Path, images, problems: Problems) -> Parsed:
    """COCO instances: bbox [x, y, w, h] in pixels; crowd boxes (iscrowd=1) are dropped and
    reported; images without annotations are negatives."""
    doc = read_coco(path)
    entries = doc["images"]
    folder = _image_folder(
        [e["file_name"] for e in entries], images, [path.parent, path.parent / "images"], path
    )
    by_id = {}
    for entry in entries:
        by_id[entry["id"]] = Annotated(
            Path(entry["file_name"]).stem,
            str(path),
            path=str(folder / entry["file_name"]),
            size=(int(entry["height"]), int(entry["width"])),
        )
    for ann in doc["annotations"]:
        where = f"annotation {ann.get('id', '?')}"
        bbox = ann.get("bbox")
        if ann.get("image_id") not in by_id:
            problems.add(
                path, f"{where} has image_id {ann.get('image_id')!r}, not in images", "dropped"
            )
        elif ann.get("iscrowd"):
            problems.add(path, f"{where} is a crowd box (iscrowd=1)", "dropped")
        elif not isinstance(bbox, list) or len(bbox) != 4 or _numbers(list(map(str, bbox))) is None:
            problems.add(path, f"{where} has no bbox [x, y, w, h]", "dropped")
        else:
            x, y, w, h = map(float, bbox)
            by_id[ann["image_id"]].add((x, y, x + w, y + h), ann.get("category_id"), where)
    names = {c["id"]: str(c["name"]) for c in sorted(doc["categories"], key=lambda c: c["id"])}
    return Parsed(f"COCO {path}", {"train": list(by_id.values())}, path.parent, names)


def _image_folder(files: list[str], images, candidates: list[Path], where: Path) -> Path:
    """`images` if given, else the first candidate folder holding any of `files`."""
    if images is not None:
        folder = Path(images).expanduser()
        if not folder.is_dir():
            raise DataError(f"image folder {images} does not exist; check the path")
        return folder
    for folder in candidates:
        if any((folder / file).is_file() for file in files):
            return folder
    tried = ", ".join(map(str, candidates))
    raise DataError(
        f"none of the images {where} names (e.g. {files[0] if files else '?'}) is in {tried}; "
        "pass images=FOLDER, the folder they are in"
    )


# --- Pascal VOC ------------------------------------------------------------------------------


def voc_folder(root: Path, text: str, problems: Problems) -> Parsed:
    """Annotations/*.xml + JPEGImages/ (or annotations/ + images/); ImageSets/Main/{train,val,
    test}.txt give splits. Objects marked difficult are kept. Corners are 1-based in VOC:
    x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax."""
    notes, image_dir = _voc_folders(root)
    if not image_dir.is_dir():
        raise DataError(f"{image_dir} does not exist; a VOC folder keeps its images there")
    by_stem = {Path(p).stem: p for p in walk_images(image_dir)}
    lists = _voc_lists(root)
    splits = {}
    for split, stems in lists.items():
        splits[split] = []
        for stem in stems:
            xml = notes / f"{stem}.xml"
            if xml.is_file():
                entry = _read_voc(xml, image_dir, by_stem, problems)
            elif stem in by_stem:
                problems.add(by_stem[stem], "no annotation XML", "kept as a negative")
                entry = Annotated(stem, str(xml), path=by_stem[stem])
            else:
                problems.add(xml, "neither this file nor its image exists", "skipped")
                entry = None
            if entry is not None:
                splits[split].append(entry)
    if not lists:
        entries = [
            _read_voc(xml, image_dir, by_stem, problems) for xml in sorted(notes.glob("*.xml"))
        ]
        splits["train"] = [entry for entry in entries if entry is not None]
        used = {entry.path for entry in splits["train"]}
        for path in sorted(set(by_stem.values()) - used):
            problems.add(path, "no annotation XML", "kept as a negative")
            splits["train"].append(Annotated(Path(path).stem, path, path=path))
    return Parsed(f"VOC folder {text}", splits, root, by_name=True)


def is_voc(root: Path) -> bool:
    return any((root / name).is_dir() for name in ("Annotations", "annotations"))


def _voc_folders(root: Path) -> tuple[Path, Path]:
    if (root / "Annotations").is_dir():
        return root / "Annotations", root / "JPEGImages"
    return root / "annotations", root / "images"


def _voc_lists(root: Path) -> dict[str, list[str]]:
    """Split -> image ids from ImageSets/Main/{train,val,test}.txt (trainval when no train)."""
    main = root / "ImageSets" / "Main"
    files = {s: main / f"{s}.txt" for s in ("train", "val", "test")}
    if not files["train"].is_file():
        files["train"] = main / "trainval.txt"
    return {
        split: [line.split()[0] for line in file.read_text().splitlines() if line.strip()]
        for split, file in files.items()
        if file.is_file()
    }


def _read_voc(xml: Path, image_dir: Path, by_stem: dict, problems: Problems) -> Annotated | None:
    try:
        tree = ElementTree.parse(xml).getroot()
    except (OSError, ElementTree.ParseError) as e:
        problems.add(xml, f"unreadable XML ({first_line(e)})", "its image skipped")
        return None
    filename = (tree.findtext("filename") or "").strip()
    if filename and (image_dir / filename).is_file():
        path = str(image_dir / filename)
    else:  # e.g. a wrong extension in <filename>
        path = by_stem.get(Path(filename).stem) or by_stem.get(xml.stem)
    if path is None:
        problems.add(xml, f"its image {filename or xml.stem} is not in {image_dir}", "skipped")
        return None
    width, height = (_int(tree.findtext(f"size/{key}")) for key in ("width", "height"))
    entry = Annotated(Path(path).stem, str(xml), path=path)
    entry.size = (height, width) if width and height else None
    for number, obj in enumerate(tree.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        corners = [obj.findtext(f"bndbox/{key}") for key in ("xmin", "ymin", "xmax", "ymax")]
        values = _numbers([c or "" for c in corners])
        if not name or values is None:
            problems.add(xml, f"object {number} lacks a name or a numeric bndbox", "dropped")
            continue
        xmin, ymin, xmax, ymax = values
        entry.add((xmin - 1, ymin - 1, xmax, ymax), name, f"object {number}")
    return entry


def _int(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0


# --- CSV / TSV -------------------------------------------------------------------------------


def box_table(path: Path, images, problems: Problems) -> Parsed:
    """One row per box: image path, x1 y1 x2 y2 in pixels and a class, columns found by name
    (optional width, height, split). A row without box values marks a negative image."""
    table = _read_table(path)
    columns = {key: _column(table, names, path) for key, names in _TABLE_COLUMNS.items()}
    optional = {key: _column(table, names) for key, names in _OPTIONAL_COLUMNS.items()}
    files = [str(f).strip() if pd.notna(f) else "" for f in table[columns["path"]]]
    folder = _image_folder(
        files, images, [path.parent, path.parent / "images", path.parent.parent / "images"], path
    )
    corners = table[[columns[k] for k in ("x1", "y1", "x2", "y2")]]
    numbers = corners.apply(pd.to_numeric, errors="coerce").to_numpy(float)
    empty = corners.isna().to_numpy().all(axis=1)
    labels, sizes = table[columns["label"]].tolist(), _table_sizes(table, optional)
    splits = _row_splits(table, optional["split"], path)
    entries: dict[str, Annotated] = {}
    by_split: dict[str, list[Annotated]] = defaultdict(list)
    for row, (file, label) in enumerate(zip(files, labels, strict=True)):
        line = f"line {row + 2}"  # the header is line 1
        if not file:
            problems.add(path, f"{line} has no image path", "dropped")
            continue
        if file not in entries:
            size = tuple(sizes[row]) if sizes is not None and sizes[row].all() else None
            entries[file] = Annotated(Path(file).stem, str(path), str(folder / file), size=size)
            by_split[splits[row]].append(entries[file])
        if empty[row]:
            continue
        if np.isnan(numbers[row]).any():
            problems.add(path, f"{line} has missing or non-numeric box values", "dropped")
        elif pd.isna(label) or not str(label).strip():
            problems.add(path, f"{line} has a box without a class", "dropped")
        else:
            entries[file].add(numbers[row], _label_name(label), line)
    return Parsed(f"CSV {path}", dict(by_split), path.parent, by_name=True)


def _read_table(path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        return pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {first_line(e)}; fix the file") from e


def _column(table: pd.DataFrame, names: tuple[str, ...], required: Path | None = None):
    lower = {str(c).strip().lower(): c for c in table.columns}
    found = next((lower[name] for name in names if name in lower), None)
    if found is None and required is not None:
        raise DataError(
            f"{required} has no {names[0]} column (one of {', '.join(names)}); its columns are "
            f"{', '.join(map(str, table.columns))}"
        )
    return found


def _row_splits(table: pd.DataFrame, column, path: Path) -> list[str]:
    if column is None:
        return ["train"] * len(table)
    values = table[column].astype(str).str.strip().str.lower()
    bad = sorted(set(values) - set(SPLIT_VALUES))
    if bad:
        raise DataError(f"{path}: column {column} has {', '.join(bad[:5])}; use train, val or test")
    return values.map(SPLIT_VALUES).tolist()


def _table_sizes(table: pd.DataFrame, optional: dict) -> np.ndarray | None:
    """Each row's (height, width) from the height and width columns, 0 where not a number."""
    if optional["width"] is None or optional["height"] is None:
        return None
    sizes = table[[optional["height"], optional["width"]]].apply(pd.to_numeric, errors="coerce")
    return sizes.fillna(0).clip(lower=0).to_numpy().astype(np.int64)


def _label_name(value) -> str:
    """A class cell as a name: 3.0 (a number column with gaps) is "3"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# --- tfds, arrays ----------------------------------------------------------------------------


def tfds_boxes(name: str, data_dir: str | None, problems: Problems) -> Parsed:
    """A tfds detection set (voc, coco/2017): `image` and `objects` with `bbox` (fractions,
    ymin xmin ymax xmax) and `label`, loaded into memory. Crowd boxes are dropped, reported."""
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir)
    features = dict(builder.info.features.items())
    objects = features.get("objects")
    if "image" not in features or not {"bbox", "label"} <= set(getattr(objects, "feature", ())):
        raise DataError(
            f"tfds dataset {name!r} has no image and objects with bbox and label (its features: "
            f"{', '.join(features)}); pick a detection set such as voc or coco/2017"
        )
    if "train" not in builder.info.splits:
        raise DataError(f"tfds dataset {name!r} has no train split; pick another")
    splits = {}
    for tfds_split, split in (("train", "train"), ("validation", "val"), ("test", "test")):
        if tfds_split in builder.info.splits:
            examples = tfds.as_numpy(builder.as_dataset(split=tfds_split))
            splits[split] = [
                _tfds_example(e, f"tfds {name} {tfds_split} example {i}", i, problems)
                for i, e in enumerate(examples)
            ]
    names = dict(enumerate(objects.feature["label"].names))
    return Parsed(f"tfds {name}", splits, None, names)


def _tfds_example(example: dict, file: str, index: int, problems: Problems) -> Annotated:
    image = example["image"]
    entry = Annotated(str(index), file, image=image, normalized=True)
    crowd = example["objects"].get("is_crowd", np.zeros(len(example["objects"]["label"]), bool))
    for number, (bbox, label, is_crowd) in enumerate(
        zip(example["objects"]["bbox"], example["objects"]["label"], crowd, strict=True)
    ):
        if is_crowd:
            problems.add(file, f"box {number} is a crowd box", "dropped")
        else:
            entry.add(bbox[[1, 0, 3, 2]], int(label), f"box {number}")
    return entry


def arrays(pairs: dict, where: str, id_names: dict[int, str] | None = None) -> Parsed:
    """{"train": (x, y), ...}: x (N, H, W[, C]) uint8 or a list of images, y a list of
    {"boxes": (n, 4) x1 y1 x2 y2 pixels, "labels": (n,) class ids}."""
    unknown = sorted(set(pairs) - {"train", "val", "test"})
    if "train" not in pairs or unknown:
        raise DataError(
            "array data must be (x, y) or a dict of them with keys train, val, test; "
            f"got keys {', '.join(map(str, pairs))}"
        )
    splits = {}
    for split, pair in pairs.items():
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise DataError(f"the {split} array data must be a pair (x, y)")
        images, targets = _check_images(pair[0], split), pair[1]
        if len(targets) != len(images):
            raise DataError(f"{split}: {len(images)} images but {len(targets)} targets in y")
        splits[split] = [
            _array_entry(image, target, f"{split} y[{i}]", i)
            for i, (image, target) in enumerate(zip(images, targets, strict=True))
        ]
    return Parsed(where, splits, None, id_names)


def _check_images(x, split: str) -> np.ndarray:
    """(N, H, W, C) uint8, or an (N,) object array of (H, W, C) uint8 images of varied size."""
    images = [np.asarray(image) for image in x]
    for i, image in enumerate(images):
        if image.ndim == 2:
            images[i] = image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or not image.size:
            raise DataError(
                f"{split} x[{i}] must be (H, W) or (H, W, C), C 1, 3 or 4; got {image.shape}"
            )
        if image.dtype != np.uint8:
            if image.dtype.kind not in "iuf" or image.min() < 0 or image.max() > 255:
                raise DataError(f"{split} x[{i}] must hold pixel values in [0, 255]")
            images[i] = np.round(image).astype(np.uint8)
        images[i] = images[i][..., :3]
    if not images:
        raise DataError(f"the {split} array data holds no images; add some")
    return stack_images(images)


def _array_entry(image: np.ndarray, target, file: str, index: int) -> Annotated:
    if not isinstance(target, dict) or not {"boxes", "labels"} <= target.keys():
        raise DataError(f"{file} must be a dict with boxes (n, 4) and labels (n,)")
    boxes = np.asarray(target["boxes"], float).reshape(-1, 4) if len(target["boxes"]) else None
    labels = np.asarray(target["labels"]).reshape(-1)
    if (boxes is None and len(labels)) or (boxes is not None and len(boxes) != len(labels)):
        raise DataError(f"{file} has {len(target['boxes'])} boxes but {len(labels)} labels")
    if labels.dtype.kind not in "iu" and len(labels):
        raise DataError(f"{file} labels must be integer class ids; got {labels.dtype}")
    entry = Annotated(str(index), file, image=image)
    for number, label in enumerate(labels):
        entry.add(boxes[number], int(label), f"box {number}")
    return entry
