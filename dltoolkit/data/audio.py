"""Speech clips with their transcripts, and audio files to transcribe.

Audio is read by soundfile (WAV PCM 8/16/24/32-bit or float, FLAC, OGG) as float32 in [-1, 1]
and mixed down to mono, at its own sample rate (resampling is the task's). Clips come from the
layouts of `audio_layouts`; a clip whose audio cannot be read or whose transcript is empty is
left out and listed in `Clips.problems` (the first is a DataError under `strict`).
Transcripts are kept as written.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.records import Bad, attempt, one_line
from dltoolkit.data.audio_layouts import Entry, as_wave, entries_of, layouts_hint

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
LONG_CLIP_POLICIES = ("skip", "refuse", "cut")


@dataclass
class Clips:
    """Mono float32 waves with their transcripts; `problems` lists (source, reason) of every
    record left out (or cut) while reading, and `take` keeps them."""

    sources: list[str]
    waves: list[np.ndarray]
    rates: list[int]
    texts: list[str]
    groups: list[str] | None
    problems: list[tuple[str, str]]
    description: str

    def __len__(self) -> int:
        return len(self.waves)

    def take(self, indices) -> Clips:
        pick = [int(i) for i in indices]
        return Clips(
            [self.sources[i] for i in pick],
            [self.waves[i] for i in pick],
            [self.rates[i] for i in pick],
            [self.texts[i] for i in pick],
            None if self.groups is None else [self.groups[i] for i in pick],
            list(self.problems),
            self.description,
        )

    subset = take  # the name data.splits.random_splits uses

    def durations(self) -> np.ndarray:
        """Each clip's length in seconds."""
        return np.array([len(w) / r for w, r in zip(self.waves, self.rates, strict=True)])


def read_audio(path) -> tuple[np.ndarray, int]:
    """(float32 mono wave in [-1, 1], sample rate) of an audio file; a one-line DataError
    when it is missing, unreadable or empty."""
    try:
        return _decode(Path(path))
    except DataError as err:
        raise DataError(f"'{path}': {err}") from None


def _decode(audio: Path | bytes) -> tuple[np.ndarray, int]:
    """`read_audio` of a path or encoded bytes; the DataError's reason does not name it."""
    import soundfile

    if isinstance(audio, Path) and not audio.is_file():
        raise DataError("no such audio file" if not audio.exists() else "not a file")
    try:
        data, rate = soundfile.read(
            io.BytesIO(audio) if isinstance(audio, bytes) else audio, dtype="float32"
        )
    except (soundfile.SoundFileError, RuntimeError, TypeError) as err:
        detail = getattr(err, "error_string", None) or one_line(err)
        raise DataError(f"not readable as audio ({detail.strip()})") from None
    return np.clip(as_wave(data), -1.0, 1.0), int(rate)


def read_clips(
    data,
    *,
    text_field=None,
    audio_field=None,
    group_field=None,
    strict=False,
    tfds_data_dir=None,
    split="train",
    array_rate=16000,
) -> Clips:
    """Clips from a folder with transcripts.tsv/.csv, a LibriSpeech folder, a JSONL/CSV/TSV/
    Parquet table, `tfds:NAME` (local data_dir only), `(waves, texts)` arrays at `array_rate`,
    or a built-in speech sample; a `Clips` is returned as it is."""
    if isinstance(data, Clips):
        return data
    entries, description, has_groups = entries_of(
        data,
        text_field=text_field,
        audio_field=audio_field,
        group_field=group_field,
        tfds_data_dir=tfds_data_dir,
        split=split,
        array_rate=array_rate,
    )
    clips = Clips([], [], [], [], [] if has_groups else None, [], description)
    for entry in entries:
        read = attempt({"input": entry.source}, _read_entry, entry)
        if isinstance(read, Bad):
            if strict:
                raise DataError(
                    f"{entry.source}: {read.reason}; fix or remove it, or leave out --strict "
                    "to skip it"
                )
            clips.problems.append((entry.source, read.reason))
            continue
        clips.sources.append(entry.source)
        clips.waves.append(read[0])
        clips.rates.append(read[1])
        clips.texts.append(entry.text)
        if has_groups:
            clips.groups.append(entry.group or "")
    if not clips.waves:
        first = f" (e.g. {': '.join(clips.problems[0])})" if clips.problems else ""
        raise DataError(
            f"{description}: no usable clip among {len(entries)} record(s){first}; "
            + layouts_hint()
        )
    return clips


def _read_entry(entry: Entry) -> tuple[np.ndarray, int]:
    """An entry's wave and rate, or a DataError saying why it is left out."""
    if not entry.text.strip():
        raise DataError("empty transcript")
    if entry.audio is None:
        raise DataError("no audio path in this row")
    if isinstance(entry.audio, Path | bytes):
        return _decode(entry.audio)
    return as_wave(entry.audio), int(entry.rate)


def limit_duration(clips: Clips, max_seconds: float, policy: str) -> Clips:
    """Clips no longer than `max_seconds`: longer ones are left out ("skip") or cut to it
    ("cut", transcript kept), both listed in `problems`, or they are a DataError ("refuse")."""
    if policy not in LONG_CLIP_POLICIES:
        raise ConfigError(
            f"long clips policy {policy!r} is not one of {', '.join(LONG_CLIP_POLICIES)}"
        )
    if not max_seconds > 0:
        raise ConfigError(f"max_seconds must be above 0, not {max_seconds}")
    limits = [int(round(max_seconds * rate)) for rate in clips.rates]
    long = [i for i, (w, n) in enumerate(zip(clips.waves, limits, strict=True)) if len(w) > n]
    if not long:
        return clips
    seconds = clips.durations()
    if policy == "refuse":
        worst = max(long, key=lambda i: seconds[i])
        raise DataError(
            f"{len(long)} clip(s) are longer than max_seconds={max_seconds:g}, the longest "
            f"{clips.sources[worst]} ({seconds[worst]:.2f} s); raise --max-seconds or pass "
            "--long-clips cut (or skip)"
        )
    if policy == "skip":
        kept = clips.take(sorted(set(range(len(clips))) - set(long)))
        kept.problems += [
            (clips.sources[i], f"longer than {max_seconds:g} s ({seconds[i]:.2f} s): skipped")
            for i in long
        ]
        return kept
    cut = clips.take(range(len(clips)))
    for i in long:
        cut.waves[i] = clips.waves[i][: limits[i]]
        cut.problems.append((clips.sources[i], f"cut: {seconds[i]:.2f} s cut to {max_seconds:g} s"))
    return cut


def read_audio_inputs(inputs) -> list[tuple[str, np.ndarray, int] | Bad]:
    """Audio to transcribe, in order: (name, wave, rate) per file given or per .wav/.flac/.ogg
    file under a folder given (sorted), or a Bad for one that cannot be read."""
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                found.append(
                    Bad({"input": str(path)}, f"no {', '.join(AUDIO_SUFFIXES)} files in folder")
                )
            found += [_input(p) for p in files]
        else:
            found.append(_input(path))
    return found


def _input(path: Path) -> tuple[str, np.ndarray, int] | Bad:
    read = attempt({"input": str(path)}, _decode, path)
    return read if isinstance(read, Bad) else (str(path), *read)
