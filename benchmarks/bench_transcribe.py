"""Spoken digits, leave one speaker out: the closed-set reference of the transcribe benchmark.

FSDD (`--data`, ../shared/data/fsdd: transcripts.tsv + recordings/, 3,000 clips at 8 kHz, six
speakers). For each held-out speaker (`--speakers`, default all six) every side trains on the
other five speakers' clips, keeps its best weights on a seeded 10% of them (`--seed`), and is
scored once on all 500 clips of the held-out speaker: the figure is about unseen voices.

The side here is the usual tutorial model, written in plain Keras: MFCCs (tf.signal: 25 ms
frames, 10 ms hop, 64 mel bands, 20 coefficients, clips padded or cut to 1 s) into a small CNN
(three Conv2D blocks with batch normalisation and pooling, global average pooling, dropout,
softmax over the ten digits), Adam, trained for `--minutes` of wall time per fold, best
weights on the validation clips. It can only ever answer one of the ten digit words, so its
WER is 1 - accuracy.

Beside it, at the same training wall time (`train_minutes`), the recipe `SpeechRecognizer`
with its defaults (`--sides`): the Whisper-style encoder-decoder over characters ("transformer",
open vocabulary: it may write any string) and the CTC model ("ctc"). It trains on the same
five speakers' clips (its own seeded 10% validation split), at FSDD's 8 kHz
(`sample_rate=8000`, as recipes/transcribe_fsdd.toml), and transcribes the held-out
speaker's clips; the same jiwer scoring applies to every side.

`python benchmarks/bench_transcribe.py --data ../shared/data/fsdd [--speakers george,theo
--minutes 10 --sides classifier,transformer,ctc --json out.json]`
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import common  # noqa: I001  (sets the TensorFlow log level and sys.path first)
import keras
import numpy as np
import tensorflow as tf

RATE = 8000
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COLUMNS = ["held-out speaker", "side", "WER", "exact match", "train wall s", "epochs"]


def read_fsdd(folder: Path) -> list[dict]:
    """Every clip of transcripts.tsv: {"wave": int16 samples, "word", "speaker"}."""
    import soundfile

    clips = []
    with open(folder / "transcripts.tsv", newline="") as table:
        for row in csv.DictReader(table, delimiter="\t"):
            wave, rate = soundfile.read(folder / row["path"], dtype="int16")
            if rate != RATE:
                raise SystemExit(f"{row['path']}: {rate} Hz, expected {RATE}")
            clips.append({"wave": wave, "word": row["transcript"], "speaker": row["speaker"]})
    return clips


def mfcc(waves):
    """int16 clips (B, RATE) -> MFCC images (B, frames, 20, 1), as the tutorials make them."""
    signal = tf.cast(waves, tf.float32) / 32768.0
    spectrum = tf.abs(tf.signal.stft(signal, 200, 80, 256))
    mel = tf.signal.linear_to_mel_weight_matrix(64, 129, RATE, 20.0, RATE / 2)
    log_mel = tf.math.log(tf.tensordot(spectrum, mel, 1) + 1e-6)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :20, None]


def fixed_length(clips: list[dict]) -> np.ndarray:
    """Each clip padded with silence or cut to one second."""
    out = np.zeros((len(clips), RATE), np.int16)
    for row, clip in zip(out, clips, strict=True):
        wave = clip["wave"][:RATE]
        row[: len(wave)] = wave
    return out


def classifier(input_shape):
    inputs = keras.Input(input_shape)
    x = keras.layers.Normalization(axis=None)(inputs)
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model(inputs, keras.layers.Dense(len(WORDS), activation="softmax")(x))


class WallClock(keras.callbacks.Callback):
    """Stops training once `seconds` of it have passed (checked after each batch)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.started > self.seconds:
            self.model.stop_training = True


def run_classifier(train: list[dict], val: list[dict], test: list[dict], args) -> dict:
    """The plain-Keras MFCC + CNN side on one fold."""
    keras.utils.set_random_seed(args.seed)
    features = {
        name: mfcc(fixed_length(part)).numpy()
        for name, part in (("train", train), ("val", val), ("test", test))
    }
    labels = {
        name: np.array([WORDS.index(c["word"]) for c in part])
        for name, part in (("train", train), ("val", val), ("test", test))
    }
    model = classifier(features["train"].shape[1:])
    model.layers[1].adapt(features["train"])
    model.compile(
        keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    best = keras.callbacks.ModelCheckpoint(
        str(Path(args.work) / "classifier.weights.h5"),
        monitor="val_accuracy",
        save_best_only=True,
        save_weights_only=True,
    )
    started = time.perf_counter()
    history = model.fit(
        features["train"],
        labels["train"],
        batch_size=64,
        epochs=10_000,
        validation_data=(features["val"], labels["val"]),
        callbacks=[WallClock(args.minutes * 60), best],
        verbose=0,
    )
    train_s = time.perf_counter() - started
    model.load_weights(best.filepath)
    predicted = model.predict(features["test"], verbose=0).argmax(axis=1)
    return score([WORDS[i] for i in predicted], test, train_s, len(history.history["loss"]))


def run_recipe(model: str, train: list[dict], val: list[dict], test: list[dict], args) -> dict:
    """The recipe's `model` side on one fold: fit on train + validation clips (it splits off its
    own validation share), transcribe the held-out speaker."""
    from dltoolkit import SpeechRecognizer

    rest = train + val
    waves = [c["wave"].astype(np.float32) / 32768.0 for c in rest]
    recognizer = SpeechRecognizer(
        model=model, sample_rate=RATE, train_minutes=args.minutes, seed=args.seed
    )
    started = time.perf_counter()
    recognizer.fit(
        (waves, [c["word"] for c in rest]),
        Path(args.work) / f"transcribe_{model}",
        overwrite=True,
        progress=False,
    )
    train_s = time.perf_counter() - started
    epochs = len(recognizer.run_.history_file.read_text().splitlines()) - 1
    hypotheses = recognizer.transcribe([c["wave"].astype(np.float32) / 32768.0 for c in test])
    return score(hypotheses, test, train_s, epochs)


SIDES = {
    "classifier": ("MFCC + CNN classifier (plain Keras)", run_classifier),
    "transformer": ("recipe: Whisper-style, characters", lambda *a: run_recipe("transformer", *a)),
    "ctc": ("recipe: CTC", lambda *a: run_recipe("ctc", *a)),
}


def score(hypotheses: list[str], test: list[dict], train_s: float, epochs: int) -> dict:
    """WER (jiwer) and exact match of `hypotheses` on the held-out clips."""
    import jiwer

    references = [c["word"] for c in test]
    exact = float(np.mean([h == r for h, r in zip(hypotheses, references, strict=True)]))
    return {
        "WER": float(jiwer.wer(references, hypotheses)),
        "exact match": exact,
        "train wall s": round(train_s),
        "epochs": epochs,
    }


def folds(clips: list[dict], speaker: str, seed: int):
    """(train, val, test) for one held-out speaker: a seeded 10% of the rest validates."""
    rest = [c for c in clips if c["speaker"] != speaker]
    order = np.random.default_rng(seed).permutation(len(rest))
    cut = len(rest) // 10
    return (
        [rest[i] for i in order[cut:]],
        [rest[i] for i in order[:cut]],
        [c for c in clips if c["speaker"] == speaker],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the fsdd folder")
    parser.add_argument("--speakers", help="held-out speakers, comma-separated (default: all)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall time per fold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sides", default=",".join(SIDES), help="comma-separated: " + ", ".join(SIDES)
    )
    parser.add_argument("--work", default="/tmp", help="scratch folder for best weights")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    header = f"{' '.join(sys.argv)}\n{common.machine()}; load before: {common.load_average()}"
    print(header, flush=True)
    clips = read_fsdd(args.data)
    speakers = sorted({c["speaker"] for c in clips})
    held_out = args.speakers.split(",") if args.speakers else speakers
    unknown = sorted(set(held_out) - set(speakers))
    if unknown:
        raise SystemExit(f"unknown speakers {unknown}; FSDD has {', '.join(speakers)}")
    sides = args.sides.split(",")
    if set(sides) - set(SIDES):
        raise SystemExit(
            f"unknown sides {sorted(set(sides) - set(SIDES))}; choose from {list(SIDES)}"
        )
    rows = []
    for speaker in held_out:
        train, val, test = folds(clips, speaker, args.seed)
        for side in sides:
            name, run = SIDES[side]
            rows.append({"held-out speaker": speaker, "side": name, **run(train, val, test, args)})
            common.print_table(f"{speaker} done", rows[-1:], COLUMNS)
    means = [
        {
            "held-out speaker": "mean",
            "side": SIDES[side][0],
            **{
                k: float(np.mean([r[k] for r in rows if r["side"] == SIDES[side][0]]))
                for k in ("WER", "exact match", "train wall s")
            },
        }
        for side in sides
    ]
    print(f"\n{header}\nload after: {common.load_average()}")
    common.print_table(
        f"FSDD, leave one speaker out, {args.minutes:g} min of training per fold",
        [*rows, *means],
        COLUMNS,
    )
    if args.json:
        args.json.write_text(json.dumps({"command": sys.argv, "rows": rows, "means": means}))


if __name__ == "__main__":
    main()
