"""SpeechRecognizer end to end on tones it can learn in seconds ("do", "re", "mi" are three
pitches): training, the run, save/load, predict on files and folders, chunked long
recordings, evaluation, the CTC model, and bad input as one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import soundfile
from test_cli import assert_user_error, cli

from dltoolkit import SpeechRecognizer, load
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.errors import DataError

RATE = 8000  # the tiny model's sample rate (every other rate is resampled to it)
NOTES = {"do": 330.0, "re": 880.0, "mi": 1900.0}  # each word is a tone at its pitch
WINDOW = 0.5  # seconds: every training clip fits; longer recordings go in chunks of it
# One encoder and one decoder layer of width 32 learn the tones in 15 short epochs.
TINY = dict(
    sample_rate=RATE,
    n_mels=16,
    d_model=32,
    layers=1,
    heads=2,
    ff_dim=64,
    dropout=0.0,
    spec_augment=False,
    max_seconds=WINDOW,
    max_tokens=8,
    epochs=15,
    batch_size=8,
    learning_rate=3e-3,
    report_examples=2,
    seed=0,
)


def tone(word: str, rng: np.random.Generator, rate: int = RATE) -> np.ndarray:
    """`word` as a 0.2-0.3 s tone at its pitch, with a little silence around it and noise."""
    length = int(rate * rng.uniform(0.2, 0.3))
    sound = rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * NOTES[word] * np.arange(length) / rate)
    parts = [np.zeros(int(rate * rng.uniform(0.02, 0.15))), sound * np.hanning(length)]
    wave = np.concatenate([*parts, np.zeros(int(rate * rng.uniform(0.02, 0.05)))])
    return (wave + rng.normal(0.0, 0.01, len(wave))).astype(np.float32)


def tone_words(rng: np.random.Generator, count: int) -> list[str]:
    return [sorted(NOTES)[i] for i in rng.integers(len(NOTES), size=count)]


def tones(count: int, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """`count` seeded clips of one tone each, and their words."""
    rng = np.random.default_rng(seed)
    words = tone_words(rng, count)
    return [tone(w, rng) for w in words], words


def write_wav(path: Path, wave: np.ndarray, rate: int = RATE, subtype="PCM_16") -> str:
    soundfile.write(path, wave, rate, subtype=subtype)
    return str(path)


def write_tone_folder(root: Path, count=40, seed=0, texts=None) -> Path:
    """WAV files (16-bit PCM, every third at 16 kHz) + transcripts.tsv (path, text, speaker:
    two groups); `texts` replaces the transcripts."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i, word in enumerate(tone_words(rng, count)):  # the words of tones(count, seed)
        rate = 16000 if i % 3 == 0 else RATE
        name = write_wav(root / f"clip{i:02d}.wav", tone(word, rng, rate), rate)
        rows.append({"path": Path(name).name, "text": word, "speaker": "ab"[i % 2]})
    frame = pd.DataFrame(rows)
    if texts is not None:
        frame["text"] = texts
    frame.to_csv(root / "transcripts.tsv", sep="\t", index=False)
    return root


def melody(words, rate: int = RATE, seed: int = 3) -> np.ndarray:
    """One recording of `words`, each tone alone in its own model window."""
    rng = np.random.default_rng(seed)
    window = int(WINDOW * rate)
    return np.concatenate(
        [np.pad(w := tone(word, rng, rate), (0, window - len(w))) for word in words]
    )


@pytest.fixture(scope="module")
def fitted(fits):
    """TINY on a folder of 40 WAVs + transcripts.tsv (contract_cases.TRANSCRIBE); the run is
    folder / "run"."""
    return fits.get("transcribe")


def test_fit_learns_the_tones_and_writes_its_run(fitted):
    recognizer, folder = fitted
    run = folder / "run"
    for name in ("recipe.toml", "model.keras", "state.json", "metrics.json", "report.html"):
        assert (run / name).is_file(), name
    losses = [row["loss"] for row in read_history(run / "history.csv")]
    assert len(losses) == 15 and losses[-1] < 0.4 * losses[0], losses
    m = json.loads((run / "metrics.json").read_text())
    assert {"wer", "cer", "exact_match", "per_group"} <= set(m)
    assert m["wer"] <= 0.25 and m["exact_match"] >= 0.75, m
    assert m["wer"] < m["baseline_wer"] and set(m["per_group"]) <= {"a", "b"}
    assert recognizer.vocabulary_[4:] == sorted(set("doremi"))
    report = (run / "report.html").read_text()
    assert "Scores on the test split" in report and "Worst clips" in report


def test_save_load_transcribes_the_same_text(fitted, tmp_path):
    recognizer, _ = fitted
    waves, words = tones(6, seed=11)
    texts = recognizer.transcribe(waves)
    assert np.mean([t == w for t, w in zip(texts, words, strict=True)]) >= 5 / 6, texts
    loaded = load(recognizer.save(tmp_path / "saved"))
    assert loaded.transcribe(waves) == texts
    assert loaded.model_.tokenizer.vocabulary == recognizer.vocabulary_
    assert isinstance(keras.saving.load_model(recognizer.run_.model_file), type(loaded.model_))


def test_predict_files_and_folders_with_an_error_row_for_a_corrupt_file(fitted, tmp_path):
    recognizer, _ = fitted
    rng = np.random.default_rng(5)
    folder = tmp_path / "calls"
    folder.mkdir()
    write_wav(folder / "a.wav", tone("mi", rng))
    write_wav(folder / "b.flac", tone("do", rng, 16000), 16000)
    write_wav(folder / "c.wav", tone("re", rng), subtype="FLOAT")
    broken = folder / "d.wav"
    broken.write_bytes(b"RIFF not really a wave")
    rows = recognizer.predict([str(folder)])
    assert [Path(r["input"]).name for r in rows] == ["a.wav", "b.flac", "c.wav", "d.wav"]
    assert [r["text"] for r in rows[:3]] == ["mi", "do", "re"]
    assert all(set(r) == {"input", "text", "seconds"} for r in rows[:3])
    assert 0.2 < rows[1]["seconds"] < 0.55
    assert set(rows[3]) == {"input", "error"} and rows[3]["input"] == str(broken)
    assert recognizer.predict(str(folder / "a.wav")) == rows[:1]
    with pytest.raises(DataError, match="d.wav"):
        recognizer.predict([str(folder)], strict=True)


def test_a_recording_longer_than_the_window_is_transcribed_in_chunks(fitted, tmp_path):
    recognizer, _ = fitted
    path = write_wav(tmp_path / "melody.wav", melody(["do", "mi", "re"]))
    [row] = recognizer.predict([path])
    assert row["seconds"] == pytest.approx(3 * WINDOW)
    assert row["text"] == "do mi re"


def test_evaluate_scores_wer_and_counts_unknown_characters(fitted, tmp_path):
    recognizer, _ = fitted
    texts = [*tones(8, seed=21)[1][:7], "fa"]  # "f" and "a" were never heard
    data = write_tone_folder(tmp_path / "test", count=8, seed=21, texts=texts)
    metrics = recognizer.evaluate(str(data))
    assert metrics["clips"] == 8 and metrics["words"] == 8
    assert 1 / 8 <= metrics["wer"] <= 3 / 8 and metrics["exact_match"] >= 5 / 8, metrics
    assert metrics["unknown_characters"] == {"f": 1, "a": 1}
    assert set(metrics["per_group"]) == {"a", "b"}


def test_a_tiny_ctc_model_trains_and_transcribes(tmp_path):
    waves, words = tones(16, seed=2)
    recognizer = SpeechRecognizer(
        **{**TINY, "epochs": 2, "spec_augment": True},
        model="ctc",
        rnn_units=16,
        rnn_layers=1,
        val_split=0,
        test_split=0.25,
    )
    recognizer.fit((waves, words), tmp_path / "run", progress=False)
    assert len(read_history(tmp_path / "run" / "history.csv")) == 2
    assert recognizer.metrics_["clips"] == 4 and "wer" in recognizer.metrics_
    texts = recognizer.transcribe(waves[:3] + [melody(["re", "do"])])
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)


def test_no_usable_clips_is_a_one_line_data_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no transcripts.tsv"):
        SpeechRecognizer(**TINY).fit(str(empty), tmp_path / "run", progress=False)
    untranscribed = tmp_path / "untranscribed"
    untranscribed.mkdir()
    write_wav(untranscribed / "a.wav", tones(1)[0][0])
    with pytest.raises(DataError, match="holds no transcripts.tsv"):
        SpeechRecognizer(**TINY).fit(str(untranscribed), tmp_path / "run", progress=False)
    lost = tmp_path / "lost"
    lost.mkdir()
    (lost / "transcripts.tsv").write_text("path\ttext\nnowhere.wav\tdo\n")
    with pytest.raises(DataError, match="no usable clip among 1 record.*no such audio file"):
        SpeechRecognizer(**TINY).fit(str(lost), tmp_path / "run", progress=False)
    for data in (empty, untranscribed, lost):
        out = tmp_path / "cli"
        code, stdout, err = cli(capsys, "transcribe", "--data", data, "--out", out)
        assert_user_error(code, stdout, err, str(data))
        assert not out.exists()
    assert not (tmp_path / "run").exists()


def test_long_clips_refuse_names_max_seconds(tmp_path, capsys):
    data = write_tone_folder(tmp_path / "clips", count=6)
    write_wav(data / "clip00.wav", melody(["do", "re"]))  # 1 s, twice the window
    with pytest.raises(DataError, match="--max-seconds") as error:
        SpeechRecognizer(**TINY, long_clips="refuse").fit(
            str(data), tmp_path / "run", progress=False
        )
    assert "clip00.wav" in str(error.value) and "\n" not in str(error.value)
    out = tmp_path / "cli"
    code, stdout, err = cli(
        capsys,
        "transcribe",
        "--data",
        data,
        "--set",
        "max_seconds=0.5",
        "--long-clips",
        "refuse",
        "--out",
        out,
    )
    assert_user_error(code, stdout, err, "--max-seconds", "--long-clips cut")
    assert not out.exists()
