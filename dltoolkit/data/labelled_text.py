"""Texts with their class labels (one per text, or a set for multi-label), from any layout.

Layouts: a CSV/TSV/JSONL/Parquet table (or a DataFrame) with a text and a label column, chosen
by name or by 0-based position; a folder of one subfolder of .txt files per class, optionally
inside train/ test/ split folders (aclImdb); `tfds:NAME` from a local data_dir; `(texts,
labels)` arrays; a built-in "text" sample. A record whose text is empty or not UTF-8, whose
label is missing, or (in training, with rare_labels="drop") whose label is seen only once is
left out and listed in `LabelledTexts.problems`; under `strict` the first is a DataError.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.records import Bad, attempt, one_line
from dltoolkit.data.samples import SAMPLES, load_sample
from dltoolkit.data.text import json_lines

TEXT_FIELDS = (
    "text", "sentence", "content", "review", "comment", "document", "body", "description",
    "tweet", "message", "utterance", "question", "title",
)  # fmt: skip
LABEL_FIELDS = (
    "label", "labels", "class", "category", "target", "sentiment", "stars", "rating", "tags",
    "topic", "intent", "y",
)  # fmt: skip
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val", "dev"), "test": ("test",)}
UNLABELLED_FOLDERS = ("unsup", "unlabeled", "unlabelled")
DELIMITERS = ("|", ";", ",")
RARE_LABELS = ("drop", "keep")
LAYOUTS = (
    "pass a CSV/TSV/JSONL/Parquet table with a text and a label column, a folder with one "
    "subfolder of .txt files per class (train/ test/ inside allowed), tfds:NAME, "
    "(texts, labels) arrays, or a built-in text sample ("
)


@dataclass
class LabelledTexts:
    """Texts and their labels (a list of labels per text for multi-label), with where each
    came from; `problems` lists (source, reason) of every record left out, `rare_labels` the
    labels seen only once. A table's resolved columns are kept (`text_column`,
    `label_column`, and their positions in `columns`) to read another file like it."""

    texts: list[str]
    labels: list
    sources: list[str]
    problems: list[tuple[str, str]]
    description: str
    multi_label: bool = False
    text_column: str | None = None
    label_column: str | None = None
    columns: tuple[int, int] | None = None
    rare_labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        """Every label present, sorted."""
        found = (lab for labs in self.labels for lab in labs) if self.multi_label else self.labels
        return sorted(set(found))

    def take(self, indices) -> LabelledTexts:
        pick = [int(i) for i in indices]
        return LabelledTexts(
            [self.texts[i] for i in pick],
            [self.labels[i] for i in pick],
            [self.sources[i] for i in pick],
            list(self.problems),
            self.description,
            self.multi_label,
            self.text_column,
            self.label_column,
            self.columns,
            list(self.rare_labels),
        )

    subset = take  # the name data.splits.random_splits uses


@dataclass
class _Raw:
    """Records as a layout holds them: cells not yet decoded nor checked."""

    sources: list[str]
    texts: list
    labels: list
    description: str
    problems: list[tuple[str, str]] = field(default_factory=list)
    text_column: str | None = None
    label_column: str | None = None
    columns: tuple[int, int] | None = None


def read_labelled_texts(
    data,
    *,
    text_field: str | int | None = None,
    label_field: str | int | None = None,
    multi_label: bool = False,
    label_delimiter: str | None = None,
    strict: bool = False,
    tfds_data_dir: str | None = None,
    split: str = "train",
    header_like: LabelledTexts | tuple[int, int] | None = None,
    training: bool = True,
    rare_labels: str = "drop",
) -> LabelledTexts:
    """Labelled texts from any layout of the module docstring.

    Fields are column names, 0-based positions (2, "2" or "#2"), or None for the first of
    `TEXT_FIELDS` / `LABEL_FIELDS` present. `header_like` (the training data, or its
    (text, label) column positions) reads a file whose header differs from the training
    file's by the training columns' positions. Multi-label cells are lists, JSON arrays or
    strings split on `label_delimiter` (default: the first of | ; , the column uses).
    `split` picks a folder's split folder or a tfds split; other sources are in one piece
    (`data_splits` tells which a source has). In `training`, fewer than two classes is an
    error and labels seen once are dropped or kept (`rare_labels`)."""
    if isinstance(data, LabelledTexts):
        return data
    if rare_labels not in RARE_LABELS:
        raise ConfigError(f"rare_labels {rare_labels!r} is not one of {', '.join(RARE_LABELS)}")
    positions = header_like.columns if isinstance(header_like, LabelledTexts) else header_like
    raw = _raw_records(data, text_field, label_field, positions, tfds_data_dir, split)
    texts = _clean(raw, multi_label, label_delimiter, strict)
    if training:
        texts = _handle_rare(texts, rare_labels, strict)
        _check_classes(texts)
    return texts


def data_splits(data, tfds_data_dir: str | None = None) -> list[str]:
    """The named splits ("train", "validation", "test") a folder or tfds:NAME holds ([] for a
    source in one piece), so that a recipe reads them instead of carving its own."""
    if isinstance(data, str) and data.startswith("tfds:"):
        return [s for s in SPLIT_FOLDERS if s in _tfds_builder(data[5:], tfds_data_dir).info.splits]
    if isinstance(data, str | os.PathLike) and Path(data).is_dir():
        return [s for s in SPLIT_FOLDERS if _split_folder(Path(data), s) is not None]
    return []


# -- layouts ------------------------------------------------------------------------------


def _raw_records(data, text_field, label_field, positions, tfds_data_dir, split) -> _Raw:
    fields = (text_field, label_field, positions)
    if isinstance(data, pd.DataFrame):
        return _table_records(data, "DataFrame", "DataFrame row", *fields)
    if isinstance(data, tuple) and len(data) == 2:
        return _array_records(*data)
    if not isinstance(data, str | os.PathLike):
        raise DataError(f"cannot read labelled texts from a {type(data).__name__}; {_hint()}")
    if isinstance(data, str) and data.startswith("tfds:"):
        return _tfds_records(data[5:], tfds_data_dir, split, text_field, label_field)
    path = Path(data)
    if not path.exists() and isinstance(data, str) and data in SAMPLES:
        return _sample_records(data)
    if path.is_dir():
        return _folder_records(path, split)
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        frame, problems = _read_file(path)
        raw = _table_records(frame, str(path), f"{path} row", *fields)
        raw.problems[:0] = problems
        return raw
    what = (
        "does not exist" if not path.exists() else f"is not a table ({path.suffix or 'no suffix'})"
    )
    raise DataError(f"'{data}' {what}; {_hint()}")


def _hint() -> str:
    samples = sorted(name for name, sample in SAMPLES.items() if sample.kind == "text")
    return LAYOUTS + ", ".join(samples) + ")"


def _read_file(path: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """A table file as a DataFrame of undecoded cells, and the rows that could not be parsed.
    Bytes that are not UTF-8 survive as surrogates (`_as_text` flags them per record)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path), []
        text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
        if suffix in (".jsonl", ".json"):
            return _json_rows(text, path)
        problems = []

        def bad_line(cells):  # a row with more cells than the header: left out
            start = cells[0][:30] if cells else ""
            problems.append((str(path), f"a row of {len(cells)} cells ({start!r}...): skipped"))

        frame = pd.read_csv(
            io.StringIO(text),
            sep="\t" if suffix == ".tsv" else ",",
            quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL,
            dtype=object,  # arrow strings cannot hold the surrogates of undecodable bytes
            keep_default_na=False,
            engine="python",
            on_bad_lines=bad_line,
        )
        return frame, problems
    except (ValueError, OSError, csv.Error) as err:
        raise DataError(f"'{path}' could not be read as {suffix[1:]}: {one_line(err)}") from None


def _json_rows(text: str, path: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """JSONL rows (or a JSON array of objects); a line that is not a JSON object is a problem."""
    if text.lstrip().startswith("["):
        try:
            return pd.DataFrame(json.loads(text), dtype=object), []
        except (ValueError, TypeError) as err:
            raise DataError(f"'{path}' is not a JSON array of objects: {one_line(err)}") from None
    rows, bad = json_lines(text)
    problems = [(f"{path} line {number}", reason) for number, reason in bad]
    return pd.DataFrame([row for _, row in rows], dtype=object), problems


def _table_records(frame, description, row_name, text_field, label_field, positions) -> _Raw:
    names = [str(c) for c in frame.columns]
    where = f"'{description}'"
    text_at = _column(names, text_field, TEXT_FIELDS, "text", where, positions, 0)
    label_at = _column(names, label_field, LABEL_FIELDS, "label", where, positions, 1)
    if text_at == label_at:
        raise DataError(
            f"{where}: the text and the label are both column '{names[text_at]}'; "
            "name them with --text-field and --label-field"
        )
    text_col, label_col = names[text_at], names[label_at]
    count = len(frame)
    return _Raw(
        [f"{row_name} {i + 1}" for i in range(count)],
        list(frame.iloc[:, text_at]),
        list(frame.iloc[:, label_at]),
        f"{description} (text: {text_col}, label: {label_col})",
        text_column=text_col,
        label_column=label_col,
        columns=(text_at, label_at),
    )


def _column(names, wanted, candidates, kind, where, positions, slot) -> int:
    """The position of the column named or numbered `wanted`, else of the first candidate
    name present (in any case), else the training file's position (`positions[slot]`)."""
    fallback = positions[slot] if positions and positions[slot] < len(names) else None
    if wanted is not None and str(wanted) in names:
        return names.index(str(wanted))
    number = _position(wanted)
    if number is not None:
        if not 0 <= number < len(names):
            raise DataError(
                f"{where}: no column at position {number} (0-based); it has {len(names)} "
                f"columns: {', '.join(names)}"
            )
        return number
    lower = [n.lower() for n in names]
    if wanted is not None:
        if str(wanted).lower() in lower:
            return lower.index(str(wanted).lower())
        if fallback is not None:
            return fallback
        raise DataError(
            f"{where}: no {kind} column '{wanted}'; columns: {', '.join(names)}; name one, or "
            f"give its 0-based position (--{kind}-field 1)"
        )
    match = next((lower.index(c) for c in candidates if c in lower), fallback)
    if match is None:
        raise DataError(
            f"{where}: no {kind} column (looked for {', '.join(candidates[:6])}, ...); columns: "
            f"{', '.join(names) or 'none'}; name it (or its 0-based position) with --{kind}-field"
        )
    return match


def _position(wanted) -> int | None:
    """A 0-based column position from 2, "2" or "#2"; None for a name."""
    if isinstance(wanted, int | np.integer) and not isinstance(wanted, bool):
        return int(wanted)
    found = re.fullmatch(r"#?(\d+)", str(wanted).strip()) if wanted is not None else None
    return int(found.group(1)) if found else None


def _split_folder(root: Path, split: str) -> Path | None:
    """root/<split> (or its aliases, e.g. dev for validation) when it holds class folders."""
    for name in SPLIT_FOLDERS.get(split, (split,)):
        folder = root / name
        if folder.is_dir() and _class_folders(folder):
            return folder
    return None


def _class_folders(folder: Path) -> list[Path]:
    """The subfolders holding .txt files, unlabelled ones (unsup) left out, sorted."""
    return sorted(
        sub
        for sub in folder.iterdir()
        if sub.is_dir()
        and sub.name.lower() not in UNLABELLED_FOLDERS
        and next(sub.rglob("*.txt"), None) is not None
    )


def _folder_records(root: Path, split: str) -> _Raw:
    """One subfolder of .txt files per class, in root/<split>/ when root has split folders."""
    present = [s for s in SPLIT_FOLDERS if _split_folder(root, s) is not None]
    folder = _split_folder(root, split) if present else root
    if folder is None or (not present and split != "train"):
        raise DataError(
            f"folder '{root}' has no {split}/ folder of class folders (split folders found: "
            f"{', '.join(present) or 'none'})"
        )
    classes = _class_folders(folder)
    if not classes:
        raise DataError(f"folder '{folder}' has no subfolders of .txt files; {_hint()}")
    sources, texts, labels = [], [], []
    for sub in classes:
        for file in sorted(sub.rglob("*.txt")):
            sources.append(str(file))
            texts.append(file.read_bytes())
            labels.append(sub.name)
    names = ", ".join(sub.name for sub in classes[:8]) + (", ..." if len(classes) > 8 else "")
    return _Raw(sources, texts, labels, f"{folder} (a folder per class: {names})")


def _tfds_builder(name: str, data_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # unknown name, version or config: tfds raises many types
        raise DataError(
            f"cannot open tfds dataset {name!r}: {one_line(err)}; check the name in the TFDS catalog"
        ) from None
    if not builder.is_prepared():
        raise DataError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir} (it is never downloaded "
            f"here); prepare it where there is internet (tfds build {name} --data_dir DIR) and "
            "pass --tfds-data-dir DIR or set TFDS_DATA_DIR"
        )
    return builder


def _tfds_records(name, data_dir, split, text_field, label_field) -> _Raw:
    """The rows of a prepared tfds split: a Text feature and a ClassLabel (or string) one."""
    import tensorflow_datasets as tfds

    builder = _tfds_builder(name, data_dir)
    if split not in builder.info.splits:
        raise DataError(
            f"tfds:{name} has no split {split!r}; splits: {', '.join(builder.info.splits)}"
        )
    features = builder.info.features
    keys = list(features.keys())
    texts = [k for k in keys if isinstance(features[k], tfds.features.Text)]
    classes = [k for k in keys if isinstance(features[k], tfds.features.ClassLabel)]
    texts += [k for k in TEXT_FIELDS if k in keys]
    text_key = _feature(keys, text_field, _preferred(texts, TEXT_FIELDS), "text", name)
    label_key = _feature(
        keys, label_field, classes + [k for k in LABEL_FIELDS if k in keys], "label", name
    )
    label_feature = features[label_key]  # a ClassLabel, or a Sequence of them (multi-label)
    names = getattr(getattr(label_feature, "feature", label_feature), "names", None)
    rows = list(tfds.as_numpy(builder.as_dataset(split=split)))
    labels = [row[label_key] for row in rows]
    if names is not None:
        labels = [names[int(v)] if np.ndim(v) == 0 else [names[int(i)] for i in v] for v in labels]
    return _Raw(
        [f"tfds:{name}[{split}]#{i}" for i in range(len(rows))],
        [row[text_key] for row in rows],
        labels,
        f"tfds:{name} ({split}; text: {text_key}, label: {label_key})",
        text_column=text_key,
        label_column=label_key,
    )


def _preferred(keys: list[str], names: tuple[str, ...]) -> list[str]:
    """`keys` with the usual names first."""
    return sorted(keys, key=lambda k: names.index(k) if k in names else len(names))


def _feature(keys, wanted, candidates, kind, dataset) -> str:
    if wanted is not None and str(wanted) not in keys:
        raise DataError(f"tfds:{dataset} has no feature '{wanted}'; features: {', '.join(keys)}")
    if wanted is not None or candidates:
        return str(wanted) if wanted is not None else candidates[0]
    raise DataError(
        f"tfds:{dataset} has no {kind} feature; features: {', '.join(keys)}; "
        f"name it with --{kind}-field"
    )


def _array_records(texts, labels) -> _Raw:
    if isinstance(texts, str) or isinstance(labels, str) or len(texts) != len(labels):
        raise DataError(
            "arrays must be (texts, labels): a sequence of strings and one label (or, for "
            f"multi-label, a list of labels) per text; got {len(texts)} texts and "
            f"{len(labels) if not isinstance(labels, str) else 'a string as'} labels"
        )
    count = len(texts)
    return _Raw([f"array[{i}]" for i in range(count)], list(texts), list(labels), f"{count} texts")


def _sample_records(name: str) -> _Raw:
    if SAMPLES[name].kind != "text":
        raise DataError(f"sample {name!r} holds {SAMPLES[name].kind}, not texts; {_hint()}")
    texts, labels = load_sample(name)
    return _Raw(
        [f"{name}#{i}" for i in range(len(texts))],
        texts,
        labels,
        f"sample {name}: {SAMPLES[name].description}",
    )


# -- cells to texts and labels --------------------------------------------------------------


def _clean(raw: _Raw, multi_label: bool, delimiter: str | None, strict: bool) -> LabelledTexts:
    """Decode every record; those with no text, undecodable bytes or no label become problems."""
    if multi_label and delimiter is None:
        delimiter = _guess_delimiter(raw.labels)
    out = LabelledTexts([], [], [], [], raw.description, multi_label)
    out.text_column, out.label_column, out.columns = raw.text_column, raw.label_column, raw.columns
    for problem in raw.problems:
        _problem(out, *problem, strict)
    for source, text, label in zip(raw.sources, raw.texts, raw.labels, strict=True):
        read = attempt({"input": source}, _record, text, label, multi_label, delimiter)
        if isinstance(read, Bad):
            _problem(out, source, read.reason, strict)
            continue
        out.sources.append(source)
        out.texts.append(read[0])
        out.labels.append(read[1])
    if not out.texts:
        first = f" (e.g. {': '.join(out.problems[0])})" if out.problems else ""
        raise DataError(
            f"{raw.description}: no usable text among {len(raw.texts)} record(s){first}; " + _hint()
        )
    return out


def _problem(out: LabelledTexts, source: str, reason: str, strict: bool) -> None:
    if strict:
        raise DataError(f"{source}: {reason}; fix or remove it, or leave out --strict to skip it")
    out.problems.append((source, reason))


def _record(text, label, multi_label: bool, delimiter: str | None) -> tuple[str, object]:
    """(text, label or labels) of one record; a DataError says why it cannot be used."""
    text = _as_text(text)
    if not text.strip():
        raise DataError("empty text")
    if multi_label:
        return text, _label_set(label, delimiter)
    if isinstance(label, list | tuple | np.ndarray):
        raise DataError("a list of labels; pass --multi-label for texts with several labels")
    label = _as_label(label)
    if not label:
        raise DataError("no label")
    return text, label


def _as_text(value) -> str:
    """A cell as text: bytes are decoded, and bytes that are not UTF-8 are a DataError."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, bytes | np.bytes_):
        try:
            return bytes(value).decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise DataError(f"not UTF-8 text (byte {err.start}); re-encode it") from None
    text = str(value)
    bad = re.search(r"[\udc80-\udcff]", text)  # bytes `_read_file` could not decode
    if bad:
        raise DataError(f"not UTF-8 text (character {bad.start()}); re-encode the file")
    return text


def _as_label(value) -> str:
    """A label as a stripped string; whole floats lose their '.0' (1.0 -> '1')."""
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return _as_text(value).strip()


def _label_set(value, delimiter: str | None) -> list[str]:
    """The labels of a multi-label cell (a list, a JSON array, or delimited), unique, in order."""
    if isinstance(value, list | tuple | np.ndarray):
        items = list(value)
    else:
        text = _as_text(value).strip()
        items = _json_list(text)
        if items is None:
            items = text.split(delimiter) if delimiter else [text]
    labels = [_as_label(item) for item in items]
    return list(dict.fromkeys(label for label in labels if label))


def _json_list(text: str) -> list | None:
    if not text.startswith("["):
        return None
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        return None
    return items if isinstance(items, list) else None


def _guess_delimiter(labels: list) -> str | None:
    """The first of `DELIMITERS` found in the string labels that are not JSON arrays."""
    cells = [v for v in labels if isinstance(v, str) and not v.lstrip().startswith("[")]
    return next((d for d in DELIMITERS if any(d in v for v in cells)), None)


# -- checks of training data --------------------------------------------------------------


def _handle_rare(texts: LabelledTexts, policy: str, strict: bool) -> LabelledTexts:
    """Note the labels seen once; with "drop", leave them out (a problem per record)."""
    label_lists = texts.labels if texts.multi_label else [[lab] for lab in texts.labels]
    counts = Counter(lab for labs in label_lists for lab in labs)
    texts.rare_labels = sorted(lab for lab, n in counts.items() if n < 2)
    if policy == "keep" or not texts.rare_labels:
        return texts
    rare = set(texts.rare_labels)
    keep = []
    for i, labs in enumerate(label_lists):
        dropped = [lab for lab in labs if lab in rare]
        if dropped:
            reason = f"label {dropped[0]!r} is seen only once"
            if strict:
                raise DataError(
                    f"{texts.sources[i]}: {reason}; add examples of it, remove it, or pass "
                    "--rare-labels keep"
                )
            texts.problems.append((texts.sources[i], reason + ": dropped"))
        if texts.multi_label:
            texts.labels[i] = [lab for lab in labs if lab not in rare]
            keep.append(i)
        elif not dropped:
            keep.append(i)
    return texts.take(keep) if len(keep) < len(texts) else texts


def _check_classes(texts: LabelledTexts) -> None:
    """Training needs two classes; a one-line DataError otherwise."""
    classes = texts.classes
    if len(classes) < 2:
        column = f" (label column '{texts.label_column}')" if texts.label_column else ""
        found = f"only the class {classes[0]!r}" if classes else "no labels"
        raise DataError(
            f"{texts.description}: {found}{column} among {len(texts)} texts; a classifier "
            "needs at least two classes: check the label column (--label-field) or add data"
        )
