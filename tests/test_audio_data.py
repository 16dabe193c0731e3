"""Reading speech: audio files, the clip layouts, long clips, predict inputs, the sample."""

from __future__ import annotations

import json
import wave

import numpy as np
import pandas as pd
import pytest
import soundfile

from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.records import Bad
from dltoolkit.data.audio import Clips, limit_duration, read_audio, read_audio_inputs, read_clips
from dltoolkit.data.samples import SAMPLES, synthesize_digit_speech

RATE = 8000


def tone(seconds=0.1, frequency=440.0, amplitude=0.5, rate=RATE) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def write(path, data=None, rate=RATE, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, tone() if data is None else data, rate, **kwargs)
    return path


def one_line_error(err) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize(
    "name, subtype, step",
    [
        ("a.wav", "PCM_U8", 2**-7),
        ("a.wav", "PCM_16", 2**-15),
        ("a.wav", "PCM_24", 2**-23),
        ("a.wav", "PCM_32", 2**-31),
        ("a.wav", "FLOAT", 0),
        ("a.wav", "DOUBLE", 0),
        ("a.flac", "PCM_16", 2**-15),
        ("a.flac", "PCM_24", 2**-23),
    ],
)
def test_every_bit_depth_reads_back_equal_within_quantisation(tmp_path, name, subtype, step):
    wave_in = tone()
    got, rate = read_audio(write(tmp_path / name, wave_in, subtype=subtype))
    assert rate == RATE and got.dtype == np.float32 and got.shape == wave_in.shape
    np.testing.assert_allclose(got, wave_in, atol=step + 1e-7)


def test_wave_module_pcm_and_stereo_mix_down(tmp_path):
    left, right = tone(frequency=300), tone(frequency=500, amplitude=0.2)
    pcm = np.round(np.column_stack([left, right]) * 32767).astype("<i2")
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(22050)
        out.writeframes(pcm.tobytes())
    got, rate = read_audio(tmp_path / "stereo.wav")
    assert rate == 22050 and got.ndim == 1
    np.testing.assert_allclose(got, (left + right) / 2, atol=1e-4)


def test_float_audio_is_clipped_and_bad_files_are_one_line_errors(tmp_path):
    loud, _ = read_audio(write(tmp_path / "loud.wav", tone(amplitude=3.0), subtype="FLOAT"))
    assert loud.max() == 1.0 and loud.min() == -1.0
    (tmp_path / "junk.wav").write_bytes(b"RIFF0000WAVEjunk")
    write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    for name, reason in [
        ("junk.wav", "not readable as audio"),
        ("empty.wav", "no audio samples"),
        ("missing.wav", "no such audio file"),
    ]:
        with pytest.raises(DataError) as err:
            read_audio(tmp_path / name)
        assert name in one_line_error(err) and reason in str(err.value)


def clip_folder(tmp_path) -> list[tuple[str, str, str]]:
    """3 good clips in a subfolder, and rows for a missing, a corrupt and an untranscribed one."""
    for i in range(3):
        write(tmp_path / "clips" / f"c{i}.wav", tone(0.1 * (i + 1)))
    (tmp_path / "clips" / "junk.wav").write_bytes(b"not audio")
    write(tmp_path / "clips" / "quiet.wav")
    return [
        ("clips/c0.wav", "Hello, world.", "ann"),
        ("clips/c1.wav", "two", "bob"),
        ("clips/c2.wav", "three", "ann"),
        ("clips/gone.wav", "four", "bob"),
        ("clips/junk.wav", "five", "bob"),
        ("clips/quiet.wav", " ", "ann"),
    ]


def test_folder_with_transcripts_tsv_counts_and_lists_bad_records(tmp_path):
    rows = clip_folder(tmp_path)
    lines = ["path\ttranscript\tspeaker"] + ["\t".join(r) for r in rows]
    (tmp_path / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    clips = read_clips(tmp_path)
    assert len(clips) == 3 and clips.texts == ["Hello, world.", "two", "three"]
    assert clips.groups == ["ann", "bob", "ann"] and clips.rates == [RATE] * 3
    np.testing.assert_allclose(clips.durations(), [0.1, 0.2, 0.3])
    reasons = {src.rsplit("/", 1)[-1]: why for src, why in clips.problems}
    assert set(reasons) == {"gone.wav", "junk.wav", "quiet.wav"}
    assert reasons["gone.wav"] == "no such audio file"
    assert "not readable" in reasons["junk.wav"] and reasons["quiet.wav"] == "empty transcript"
    with pytest.raises(DataError, match="gone.wav: no such audio file") as err:
        read_clips(tmp_path, strict=True)
    one_line_error(err)
    two = clips.take([2, 0])
    assert two.texts == ["three", "Hello, world."] and two.groups == ["ann", "ann"]
    assert two.problems == clips.problems
    assert isinstance(two, Clips) and read_clips(two) is two


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_table_files_with_other_column_names(tmp_path, kind):
    frame = pd.DataFrame(clip_folder(tmp_path), columns=["File", "sentence", "client_id"])
    table = tmp_path / f"data.{kind}"
    if kind == "csv":
        frame.to_csv(table, index=False)
    elif kind == "jsonl":
        table.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")))
    else:
        frame.to_parquet(table)
    clips = read_clips(table)
    assert clips.texts == ["Hello, world.", "two", "three"] and clips.groups == [
        "ann",
        "bob",
        "ann",
    ]
    assert len(clips.problems) == 3
    by_name = read_clips(table, text_field="client_id", group_field="sentence")
    assert by_name.texts == ["ann", "bob", "ann", "ann"]  # quiet.wav now has a text
    with pytest.raises(DataError, match="no text column 'words'; columns: File") as err:
        read_clips(table, text_field="words")
    one_line_error(err)


def test_librispeech_layout_groups_by_speaker(tmp_path):
    root = tmp_path / "dev-clean"
    for speaker, chapter, texts in [("19", "198", ["A B", "", "C"]), ("84", "121", ["D E F"])]:
        folder = root / speaker / chapter
        lines = []
        for i, text in enumerate(texts):
            clip_id = f"{speaker}-{chapter}-{i:04d}"
            write(folder / f"{clip_id}.flac", tone(0.05 * (i + 1)), rate=16000)
            lines.append(f"{clip_id} {text}".rstrip())
        lines.append(f"{speaker}-{chapter}-0099 NO AUDIO")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    clips = read_clips(root)
    assert clips.texts == ["A B", "C", "D E F"] and clips.groups == ["19", "19", "84"]
    assert clips.rates == [16000] * 3 and clips.sources[0].endswith("19-198-0000.flac")
    reasons = sorted(why for _, why in clips.problems)
    assert reasons == ["empty transcript", "no such audio file", "no such audio file"]
    assert read_clips(root / "84").texts == ["D E F"]


def test_arrays_and_a_sample_of_another_kind():
    batch = np.stack([tone(), tone(frequency=200)])
    clips = read_clips((batch, ["a", "b"]), array_rate=RATE)
    assert len(clips) == 2 and clips.groups is None and clips.rates == [RATE, RATE]
    ints = read_clips(([np.full(10, 16384, np.int16), np.zeros(0)], ["x", "y"]))
    assert ints.rates == [16000] and ints.waves[0][0] == 0.5
    assert ints.problems == [("array[1]", "no audio samples (empty recording)")]
    with pytest.raises(DataError, match="one transcript per wave"):
        read_clips(([tone()], ["a", "b"]))
    with pytest.raises(DataError, match="holds images, not speech"):
        read_clips("digits")


def test_tfds_is_never_downloaded(tmp_path):
    with pytest.raises(DataError, match="'spoken_digit' is not prepared.*never downloaded") as err:
        read_clips("tfds:spoken_digit", tfds_data_dir=str(tmp_path))
    one_line_error(err)


def test_nothing_usable_names_the_layouts(tmp_path):
    (tmp_path / "transcripts.csv").write_text("path,text\nmissing.wav,hi\n")
    with pytest.raises(DataError, match="no usable clip among 1 record.*LibriSpeech") as err:
        read_clips(tmp_path)
    one_line_error(err)
    with pytest.raises(DataError, match="does not exist; pass a folder"):
        read_clips(tmp_path / "nowhere")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="no transcripts.tsv nor"):
        read_clips(tmp_path / "empty_dir")


def test_limit_duration_policies():
    clips = read_clips(([tone(0.5), tone(2.0), tone(3.0)], ["a", "b", "c"]), array_rate=RATE)
    assert limit_duration(clips, 5.0, "refuse") is clips
    skipped = limit_duration(clips, 1.0, "skip")
    assert skipped.texts == ["a"] and [s for s, _ in skipped.problems] == ["array[1]", "array[2]"]
    cut = limit_duration(clips, 1.0, "cut")
    assert cut.texts == clips.texts and list(cut.durations()) == [0.5, 1.0, 1.0]
    assert len(cut.problems) == 2 and all(why.startswith("cut") for _, why in cut.problems)
    assert len(clips.waves[2]) == 3 * RATE and not clips.problems  # the input is left alone
    with pytest.raises(DataError, match=r"longest array\[2\] \(3.00 s\).*--long-clips") as err:
        limit_duration(clips, 1.0, "refuse")
    one_line_error(err)
    with pytest.raises(ConfigError):
        limit_duration(clips, 1.0, "trim")


def test_read_audio_inputs_keeps_going_past_a_corrupt_file(tmp_path):
    folder = tmp_path / "calls"
    write(folder / "b.flac")
    (folder / "a.wav").write_bytes(b"RIFF corrupt")
    (folder / "notes.txt").write_text("not audio")
    write(folder / "sub" / "c.ogg", subtype="VORBIS")
    (tmp_path / "empty").mkdir()
    single = write(tmp_path / "one.wav")
    found = read_audio_inputs([folder, single, tmp_path / "missing.wav", tmp_path / "empty"])
    assert [f.where["input"] if isinstance(f, Bad) else f[0] for f in found] == [
        str(folder / "a.wav"),
        str(folder / "b.flac"),
        str(folder / "sub" / "c.ogg"),
        str(single),
        str(tmp_path / "missing.wav"),
        str(tmp_path / "empty"),
    ]
    bad = [f for f in found if isinstance(f, Bad)]
    assert [b.reason.split(" (")[0] for b in bad] == [
        "not readable as audio",
        "no such audio file",
        "no .wav, .flac, .ogg files in folder",
    ]
    name, data, rate = found[1]
    assert rate == RATE and data.dtype == np.float32 and len(data) == len(tone())


def test_synth_digits_sample_is_deterministic_and_shaped_as_documented():
    assert SAMPLES["synth-digits"].kind == "speech"
    clips = read_clips("synth-digits")
    assert len(clips) == 1200 and not clips.problems and set(clips.rates) == {16000}
    assert all(w.dtype == np.float32 and w.ndim == 1 for w in clips.waves)
    seconds = clips.durations()
    assert seconds.max() < 3.0 and seconds.min() > 0.2
    assert max(np.abs(w).max() for w in clips.waves) <= 1.0
    digits = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert {len(t.split()) for t in clips.texts} == {1, 2, 3}
    assert {w for t in clips.texts for w in t.split()} == digits
    assert len(set(clips.groups)) == 6
    waves, rate, texts, speakers = synthesize_digit_speech(count=20)
    assert rate == 16000 and texts == clips.texts[:20] and speakers == clips.groups[:20]
    assert all(np.array_equal(a, b) for a, b in zip(waves, clips.waves[:20], strict=True))
    assert synthesize_digit_speech(count=20, seed=1)[2] != texts
