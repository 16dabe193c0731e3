"""Document/summary pairs and plain documents from files, folders, tfds, or Python lists,
and the WordPiece tokenizer trained on them.

Sources of pairs: a JSONL, CSV or Parquet file with a text field and a summary field, a
folder of paired files (`NAME.txt` with `NAME.summary.txt`), `tfds:NAME[/CONFIG]` (read
from a local data_dir, never downloaded), a DataFrame, or a list of (text, summary) pairs.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dltoolkit.core.errors import DataError
from dltoolkit.core.records import Bad, attempt

TEXT_FIELDS = ("text", "document", "article", "dialogue", "source", "content", "body")
SUMMARY_FIELDS = ("summary", "highlights", "abstract", "target", "headline", "title")
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
SUMMARY_SUFFIX = ".summary.txt"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


@dataclass
class Pairs:
    """Documents with their reference summaries (references may be None for predict)."""

    texts: list[str]
    summaries: list[str] | None
    description: str
    names: list[str] = field(default_factory=list)
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, indices) -> Pairs:
        pick = [int(i) for i in indices]
        return Pairs(
            [self.texts[i] for i in pick],
            None if self.summaries is None else [self.summaries[i] for i in pick],
            self.description,
            [self.names[i] for i in pick] if self.names else [],
        )


def read_pairs(
    data,
    text_field=None,
    summary_field=None,
    *,
    strict=False,
    tfds_data_dir=None,
    split="train",
    need_summaries=True,
) -> Pairs:
    """Read document/summary pairs; empty ones are skipped and counted (an error if `strict`)."""
    if isinstance(data, Pairs):
        return data
    return _check(
        _unchecked_pairs(data, text_field, summary_field, tfds_data_dir, split, need_summaries),
        strict,
        need_summaries,
    )


def _unchecked_pairs(data, text_field, summary_field, tfds_data_dir, split, need_summaries):
    """`read_pairs` before blank documents or summaries are dropped."""
    if isinstance(data, pd.DataFrame):
        frame, description = data, "DataFrame"
    elif isinstance(data, list | tuple):
        frame = pd.DataFrame(list(data), columns=["text", "summary"][: len(data[0]) if data else 2])
        description = f"{len(frame)} pairs"
    elif isinstance(data, str) and data.startswith("tfds:"):
        frame, description = _read_tfds(data[5:], tfds_data_dir, split), data
    else:
        path = Path(data)
        if path.is_dir():
            return _read_folder(path, need_summaries)
        frame, description = read_table(path), str(path)
    text_col = _choose(frame, text_field, TEXT_FIELDS, "text", description)
    summary_col = None
    if need_summaries or summary_field or any(f in frame.columns for f in SUMMARY_FIELDS):
        summary_col = _choose(frame, summary_field, SUMMARY_FIELDS, "summary", description)
    texts = [_as_text(v) for v in frame[text_col]]
    summaries = [_as_text(v) for v in frame[summary_col]] if summary_col else None
    return Pairs(
        texts,
        summaries,
        f"{description} ({text_col} -> {summary_col})" if summary_col else description,
        [f"{description}#{i}" for i in range(len(texts))],
    )


def read_table(path: Path) -> pd.DataFrame:
    """A JSONL/JSON, CSV or Parquet file as a DataFrame; non-UTF-8 text is a DataError."""
    if not path.is_file():
        raise DataError(
            f"'{path}' does not exist; pass a JSONL, CSV or Parquet file, a folder "
            "of NAME.txt + NAME.summary.txt files, or tfds:NAME"
        )
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"'{path}': unsupported file type '{suffix}'; use "
            f"{', '.join(TABLE_SUFFIXES)} or a folder of .txt files"
        )
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        text = read_utf8(path)
        if suffix == ".csv":
            import io

            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        return _read_json_lines(text, path)
    except (ValueError, OSError) as err:
        raise DataError(f"'{path}' could not be read: {str(err).splitlines()[0]}") from None


def _read_json_lines(text: str, path: Path) -> pd.DataFrame:
    stripped = text.lstrip()
    if stripped.startswith("["):
        return pd.DataFrame(json.loads(text))
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(
                    f"'{path}' line {number} is not valid JSON ({err.msg}); "
                    "JSONL needs one JSON object per line"
                ) from None
    return pd.DataFrame(rows)


def read_utf8(path: Path) -> str:
    """The file's text (gunzipped when it ends in .gz); a DataError names the first byte
    that is not UTF-8."""
    raw = Path(path).read_bytes()
    if Path(path).suffix.lower() == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(
                f"'{path}' is not a whole gzip file ({err}); compress it again"
            ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"'{path}' is not UTF-8 text (byte {err.start}); re-encode it, e.g. "
            f"iconv -f latin1 -t utf-8"
        ) from None


def json_lines(text: str) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """The JSON objects of JSONL text with their 1-based line numbers, and (line number,
    reason) of every non-blank line that is not a JSON object."""
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append((number, f"not valid JSON ({err.msg})"))
            continue
        if isinstance(row, dict):
            rows.append((number, row))
        else:
            problems.append((number, "not a JSON object"))
    return rows, problems


def _folder_documents(folder: Path) -> list[Path]:
    """The .txt documents under `folder` (not their .summary.txt files), sorted."""
    docs = sorted(p for p in folder.rglob("*.txt") if not p.name.endswith(SUMMARY_SUFFIX))
    if not docs:
        raise DataError(
            f"folder '{folder}' has no .txt documents; put NAME.txt files there "
            f"(with NAME{SUMMARY_SUFFIX} beside each for training)"
        )
    return docs


def _read_folder(folder: Path, need_summaries: bool) -> Pairs:
    docs = _folder_documents(folder)
    summaries = [p.with_name(p.name[:-4] + SUMMARY_SUFFIX) for p in docs]
    if not need_summaries:
        return Pairs([read_utf8(p) for p in docs], None, str(folder), [str(p) for p in docs])
    missing = [d.name for d, s in zip(docs, summaries, strict=True) if not s.is_file()]
    if len(missing) == len(docs):
        raise DataError(
            f"folder '{folder}' has .txt documents but no {SUMMARY_SUFFIX} summaries; "
            f"add NAME{SUMMARY_SUFFIX} beside each NAME.txt"
        )
    if missing:
        raise DataError(
            f"folder '{folder}': {len(missing)} documents have no summary (e.g. "
            f"{missing[0]}); add NAME{SUMMARY_SUFFIX} for each or remove them"
        )
    return Pairs(
        [read_utf8(p) for p in docs],
        [read_utf8(p) for p in summaries],
        str(folder),
        [str(p) for p in docs],
    )


def _read_tfds(name: str, data_dir, split: str) -> pd.DataFrame:
    import tensorflow_datasets as tfds

    try:
        dataset = tfds.load(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # tfds raises many types; the user needs the fix, not the type
        raise DataError(
            f"tfds:{name} ({split} split) is not prepared in "
            f"{data_dir or 'TFDS_DATA_DIR or ~/tensorflow_datasets'} ({type(err).__name__}); "
            "prepare it there first, or pass --tfds-data-dir"
        ) from None
    rows = [
        {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in row.items()}
        for row in tfds.as_numpy(dataset)
    ]
    return pd.DataFrame(rows)


def _choose(frame: pd.DataFrame, name, candidates, kind: str, description: str) -> str:
    found = [str(c) for c in frame.columns]
    if name:
        if name not in frame.columns:
            raise DataError(
                f"{description}: no {kind} field '{name}'; fields found: {', '.join(found)}"
            )
        return name
    for candidate in candidates:
        if candidate in frame.columns:
            return candidate
    raise DataError(
        f"{description}: no {kind} field; fields found: {', '.join(found) or 'none'}; "
        f"name it with --{kind}-field"
    )


def _as_text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def _check(pairs: Pairs, strict: bool, need_summaries: bool) -> Pairs:
    """Drop pairs whose document or summary is blank (or fail if `strict`)."""
    keep = [
        i
        for i, t in enumerate(pairs.texts)
        if t.strip() and (not need_summaries or pairs.summaries[i].strip())
    ]
    dropped = len(pairs) - len(keep)
    if dropped and strict:
        raise DataError(
            f"{pairs.description}: {dropped} empty document(s) or summary(ies); "
            "fill or remove them, or leave out --strict to skip them"
        )
    kept = pairs.take(keep)
    kept.skipped = dropped
    if not kept.texts:
        raise DataError(f"{pairs.description}: every document or summary is empty")
    return kept


def read_documents(inputs) -> list[tuple[str, str] | Bad]:
    """Documents to summarise, in order: (name, text) per .txt file (alone or in a folder) or
    table row (JSONL/CSV/Parquet with a text field), or a Bad for one that cannot be read
    (not UTF-8, a table that does not parse, blank text)."""
    documents = []
    for item in inputs:
        found = attempt({"input": str(item)}, _documents_in, item)
        documents += [found] if isinstance(found, Bad) else found
    return documents


def _documents_in(item) -> list[tuple[str, str] | Bad]:
    """The documents of one input: a .txt file, a folder of them, or a table."""
    path = Path(item)
    if path.is_dir():
        return [_text_file(p) for p in _folder_documents(path)]
    if path.is_file() and path.suffix.lower() == ".txt":
        return [_text_file(path)]
    pairs = _unchecked_pairs(item, None, None, None, "train", False)
    return [as_document(n, t) for n, t in zip(pairs.names, pairs.texts, strict=True)]


def _text_file(path: Path) -> tuple[str, str] | Bad:
    text = attempt({"input": str(path)}, read_utf8, path)
    return text if isinstance(text, Bad) else as_document(str(path), text)


def as_document(name: str, text: str) -> tuple[str, str] | Bad:
    """(name, text), or a Bad when the text is blank."""
    if text.strip():
        return name, text
    return Bad({"input": name}, "empty document: there is no text in it")


def split_indices(n: int, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train and validation indices."""
    order = np.random.default_rng(seed).permutation(n)
    count = int(round(n * val_split)) if n > 1 else 0
    count = min(max(count, 1 if val_split > 0 and n > 1 else 0), n - 1)
    return np.sort(order[count:]), np.sort(order[:count])


# -- tokenizer ------------------------------------------------------------------------------


def train_vocabulary(texts: list[str], size: int, reserved=SPECIAL_TOKENS) -> list[str]:
    """A lower-cased WordPiece vocabulary of about `size` entries learned from `texts`, the
    `reserved` tokens first (ids 0, 1, ...)."""
    import keras_hub
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(256)
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        dataset, size, lowercase=True, reserved_tokens=list(reserved)
    )
    if len(vocabulary) < len(reserved) + 10:
        raise DataError(
            f"the training text yields only {len(vocabulary)} word pieces; "
            "more (or longer) documents are needed"
        )
    return vocabulary


def tidy_spacing(strings):
    """Undo the word-piece spacing around punctuation: 'hi , # person1 # !' -> 'hi, #person1#!'."""
    import tensorflow as tf

    strings = tf.strings.regex_replace(strings, r" ([.,!?;:%)\]}'])", r"\1")
    strings = tf.strings.regex_replace(strings, r"([(\[{$]) ", r"\1")
    strings = tf.strings.regex_replace(strings, r"' (s|t|re|ve|ll|d|m)\b", r"'\1")
    return tf.strings.regex_replace(strings, r"# (\w+)#", r"#\1#")
