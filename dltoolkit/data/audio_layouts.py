"""Where speech clips come from: each layout lists its clips as `Entry`s (audio not yet read).

Layouts: a folder with transcripts.tsv/.csv/.jsonl (or such a table given directly), the
LibriSpeech layout (SPEAKER/CHAPTER/*.trans.txt with ID.flac beside), `tfds:NAME` from a local
data_dir, `(waves, texts)` arrays, and the built-in "speech" samples.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dltoolkit.core.errors import DataError
from dltoolkit.core.records import one_line
from dltoolkit.data.samples import SAMPLES, load_sample
from dltoolkit.data.text import read_table, read_utf8

AUDIO_FIELDS = ("path", "audio", "file", "filename", "wav")
TEXT_FIELDS = ("text", "transcript", "transcription", "sentence")
GROUP_FIELDS = ("speaker", "speaker_id", "group", "client_id")
TRANSCRIPT_TABLES = ("transcripts.tsv", "transcripts.csv", "transcripts.jsonl")
TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".parquet")
LAYOUTS = (
    "pass a folder of audio files with transcripts.tsv or .csv (audio path and text columns), "
    "a LibriSpeech folder (SPEAKER/CHAPTER/*.trans.txt beside ID.flac), a JSONL/CSV/TSV/Parquet "
    "table, tfds:NAME, (waves, texts) arrays, or a built-in speech sample ("
)


@dataclass
class Entry:
    """One clip as a layout names it: audio is a path, encoded bytes or an array at `rate`
    (None when the record names no audio)."""

    source: str
    audio: Path | bytes | np.ndarray | None
    text: str
    group: str | None = None
    rate: int | None = None


def layouts_hint() -> str:
    """The one-line list of what `read_clips` accepts."""
    return LAYOUTS + ", ".join(speech_samples()) + ")"


def speech_samples() -> list[str]:
    return sorted(name for name, sample in SAMPLES.items() if sample.kind == "speech")


def entries_of(data, *, text_field, audio_field, group_field, tfds_data_dir, split, array_rate):
    """(entries, description, whether the data names groups) of any supported layout."""
    fields = (text_field, audio_field, group_field)
    if isinstance(data, tuple | list) and len(data) == 2:
        return array_entries(*data, array_rate)
    if not isinstance(data, str | os.PathLike):
        raise DataError(f"cannot read speech clips from a {type(data).__name__}; {layouts_hint()}")
    if isinstance(data, str) and data.startswith("tfds:"):
        return tfds_entries(data[5:], tfds_data_dir, split, *fields, array_rate=array_rate)
    path = Path(data)
    if not path.exists() and isinstance(data, str) and data in SAMPLES:
        return sample_entries(data)
    if path.is_dir():
        table = next((path / n for n in TRANSCRIPT_TABLES if (path / n).is_file()), None)
        if table is not None:
            return table_entries(table, *fields)
        if next(path.rglob("*.trans.txt"), None) is not None:
            return librispeech_entries(path)
        raise DataError(
            f"folder '{path}' holds no transcripts.tsv nor *.trans.txt; {layouts_hint()}"
        )
    if path.is_file() and path.name.endswith(".trans.txt"):
        return librispeech_entries(path)
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        return table_entries(path, *fields)
    what = (
        "does not exist" if not path.exists() else f"is not a table ({path.suffix or 'no suffix'})"
    )
    raise DataError(f"'{data}' {what}; {layouts_hint()}")


# -- tables -------------------------------------------------------------------------------


def table_entries(path: Path, text_field=None, audio_field=None, group_field=None):
    """Rows of a TSV/CSV/JSONL/Parquet table; relative audio paths are relative to the table.
    An audio cell may also hold encoded bytes, or {"bytes": ...} as Hugging Face exports it."""
    frame = _read_tsv(path) if path.suffix.lower() == ".tsv" else read_table(path)
    where = f"'{path}'"
    audio_col = _column(frame, audio_field, AUDIO_FIELDS, "audio", where)
    text_col = _column(frame, text_field, TEXT_FIELDS, "text", where)
    group_col = _column(frame, group_field, GROUP_FIELDS, "group", where, required=False)
    entries = []
    for number, row in enumerate(frame.to_dict("records"), 1):
        audio = row[audio_col]
        if isinstance(audio, dict):
            audio = audio.get("bytes") or audio.get("path")
        if isinstance(audio, bytes) or not _text(audio).strip():
            source = f"{path} row {number}"
            audio = audio if isinstance(audio, bytes) and audio else None
        else:
            audio = path.parent / _text(audio)
            source = str(audio)
        group = _text(row[group_col]) if group_col else None
        entries.append(Entry(source, audio, _text(row[text_col]), group))
    return entries, f"{path} ({audio_col}, {text_col})", group_col is not None


def _read_tsv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(
            io.StringIO(read_utf8(path)), sep="\t", dtype=str, keep_default_na=False, quoting=3
        )
    except (ValueError, OSError) as err:
        raise DataError(f"'{path}' could not be read as TSV: {one_line(err)}") from None


def _column(frame, name, candidates, kind, where, required=True) -> str | None:
    """The column named `name`, else the first candidate present (in any case)."""
    found = [str(c) for c in frame.columns]
    if name:
        if name not in found:
            raise DataError(f"{where}: no {kind} column '{name}'; columns: {', '.join(found)}")
        return name
    by_lower = {c.lower(): c for c in reversed(found)}
    match = next((by_lower[c] for c in candidates if c in by_lower), None)
    if match is None and required:
        raise DataError(
            f"{where}: no {kind} column (looked for {', '.join(candidates)}); columns: "
            f"{', '.join(found) or 'none'}; name it with --{kind}-field"
        )
    return match


def _text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


# -- LibriSpeech --------------------------------------------------------------------------


def librispeech_entries(root: Path):
    """Every `ID TEXT` line of the *.trans.txt files under `root` (or of that one file); the
    audio is ID.flac beside it (ID.wav or ID.ogg when there is no .flac), the group is the
    SPEAKER folder."""
    files = [root] if root.is_file() else sorted(root.rglob("*.trans.txt"))
    entries = []
    for listing in files:
        speaker = listing.parent.parent.name or listing.parent.name
        for line in read_utf8(listing).splitlines():
            if not line.strip():
                continue
            clip_id, _, text = line.partition(" ")
            audio = listing.parent / f"{clip_id}.flac"
            others = [audio.with_suffix(s) for s in (".wav", ".ogg")]
            audio = next((p for p in others if p.exists() and not audio.exists()), audio)
            entries.append(Entry(str(audio), audio, text, speaker))
    return entries, f"{root} (LibriSpeech layout, {len(files)} transcript files)", True


# -- tensorflow-datasets ------------------------------------------------------------------


def tfds_entries(
    name, data_dir, split, text_field=None, audio_field=None, group_field=None, array_rate=16000
):
    """The clips of a prepared tfds data set (never downloaded): its Audio feature (at its
    sample_rate, else `array_rate`) with a text feature, or a ClassLabel whose names become
    the transcripts."""
    import tensorflow_datasets as tfds

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
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
    features = builder.info.features
    audios = [k for k, f in features.items() if isinstance(f, tfds.features.Audio)]
    audio_key = _feature(features, audio_field, audios, "audio", name)
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    texts = [k for k in TEXT_FIELDS if k in features] + labels
    text_key = _feature(features, text_field, texts, "text", name)
    group_key = group_field or next((k for k in GROUP_FIELDS if k in features), None)
    names = features[text_key].names if text_key in labels else None
    if split not in builder.info.splits:
        raise DataError(
            f"tfds:{name} has no split {split!r}; splits: {', '.join(builder.info.splits)}"
        )
    rate = getattr(features[audio_key], "sample_rate", None) or array_rate
    entries = []
    for i, row in enumerate(tfds.as_numpy(builder.as_dataset(split=split))):
        text = names[int(row[text_key])] if names else _decoded(row[text_key])
        group = _decoded(row[group_key]) if group_key else None
        entries.append(Entry(f"tfds:{name}[{split}]#{i}", row[audio_key], text, group, rate))
    return entries, f"tfds:{name} ({split})", group_key is not None


def _feature(features, name, candidates, kind, dataset) -> str:
    if name and name not in features:
        raise DataError(
            f"tfds:{dataset} has no feature '{name}'; features: {', '.join(features.keys())}"
        )
    if name or candidates:
        return name or candidates[0]
    raise DataError(
        f"tfds:{dataset} has no {kind} feature; features: {', '.join(features.keys())}; "
        f"name it with --{kind}-field"
    )


def _decoded(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# -- Python arrays and built-in samples ---------------------------------------------------


def array_entries(waves, texts, rate: int):
    """`(waves, texts)`: a list of 1-D arrays or a 2-D array (one clip per row), at `rate`."""
    if isinstance(waves, np.ndarray) and waves.ndim == 2:
        waves = list(waves)
    if isinstance(texts, str) or not hasattr(texts, "__len__") or len(waves) != len(texts):
        raise DataError(
            "arrays must be (waves, texts): a list of 1-D waves or a 2-D array with one clip "
            "per row, and one transcript per wave"
        )
    entries = [
        Entry(f"array[{i}]", np.asarray(w), _text(t), None, int(rate))
        for i, (w, t) in enumerate(zip(waves, texts, strict=True))
    ]
    return entries, f"{len(entries)} arrays at {rate} Hz", False


def sample_entries(name: str):
    """A built-in "speech" sample: (waves, rate, texts, speakers) from `load_sample`."""
    if SAMPLES[name].kind != "speech":
        raise DataError(
            f"sample {name!r} holds {SAMPLES[name].kind}, not speech; speech samples: "
            f"{', '.join(speech_samples())}"
        )
    waves, rate, texts, speakers = load_sample(name)
    entries = [
        Entry(f"{name}#{i}", w, t, s, rate)
        for i, (w, t, s) in enumerate(zip(waves, texts, speakers, strict=True))
    ]
    return entries, f"sample {name}: {SAMPLES[name].description}", True


def as_wave(array) -> np.ndarray:
    """A float32 mono wave from an array: integers scaled to [-1, 1), channels (the last axis
    of a 2-D array) averaged; a DataError when it is not numbers, empty or not finite. Float
    samples are kept as they are."""
    array = np.asarray(array)
    if array.dtype.kind in "iu":
        unsigned = array.dtype.kind == "u"
        half = (int(np.iinfo(array.dtype).max) + 1) / (2 if unsigned else 1)
        array = (array.astype(np.float64) - (half if unsigned else 0)) / half
    elif array.dtype.kind != "f":
        raise DataError(f"audio of dtype {array.dtype} is not a wave (numbers expected)")
    if array.ndim == 2:
        array = array.mean(axis=1)
    if array.ndim != 1:
        raise DataError(f"a wave is 1-D (or samples x channels), not of shape {array.shape}")
    if not array.size:
        raise DataError("no audio samples (empty recording)")
    if not np.isfinite(array).all():
        raise DataError("the audio holds NaN or infinite samples")
    return array.astype(np.float32)
