"""SpeechRecognizer: the transcribe-speech recipe (a Whisper-style encoder-decoder or a CTC
model trained from scratch on log-mel features, or a KerasHub Moonshine/Whisper preset)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.core.config import check_preset_choice
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.export import Signature
from dltoolkit.core.optim import time_budget
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.records import Bad, assemble, stop_if_strict
from dltoolkit.core.report import Report
from dltoolkit.core.training import Plan
from dltoolkit.data.audio import Clips, limit_duration, read_audio_inputs, read_clips
from dltoolkit.data.splits import random_splits
from dltoolkit.data.text import SPECIAL_TOKENS, train_vocabulary
from dltoolkit.data.waveforms import decode_wav, is_pcm16_wav, pad_batch, resample
from dltoolkit.layers.audio import LogMelSpectrogram, SpecAugment, mel_normalization
from dltoolkit.layers.text import Characters, WordPieces, character_vocabulary
from dltoolkit.models.seq2seq import SmoothedTokenLoss
from dltoolkit.models.speech import CTCNetwork, SpeechTransformer
from dltoolkit.models.transcription import BOS, EOS, PAD, Transcription, in_windows, joined
from dltoolkit.specs.transcribe import SPEC
from dltoolkit.tasks.speech_eval import (
    constant_baseline,
    normalize_transcript,
    speech_metrics,
    worst_clips,
)

STEP_BUDGET = 500  # default training length in optimizer steps (without train_minutes)
TIMED_EPOCHS = 10_000  # with train_minutes and no epochs, the clock ends training
NORMALIZATION_CLIPS = 512  # training clips the feature statistics are taken from
_AUDIO = tf.TensorSpec([None], tf.string, name="audio")
_TEXT = tf.TensorSpec([None], tf.string)


@dataclass
class _Prepared:
    splits: dict[str, Clips]
    targets: dict[str, list[str]]
    description: str
    held_out: dict = field(default_factory=dict)


class SpeechRecognizer(Recipe):
    """Transcribe speech: train on clips with transcripts, then turn recordings into text.

    >>> SpeechRecognizer().fit("./clips")  # WAV/FLAC files + transcripts.tsv
    >>> SpeechRecognizer(model="ctc").fit("./LibriSpeech/dev-clean").predict(["call.wav"])
    """

    spec = SPEC
    learned = ("vocabulary_",)

    def __init__(self, **params):
        super().__init__(**params)
        self.vocabulary_: list[str] | None = None
        self._tokenizer = None
        self._transcribers: dict = {}

    @property
    def pretrained(self) -> bool:
        return self.config.preset is not None

    # -- parameters -----------------------------------------------------------------------

    def _validate(self) -> None:
        c = self.config
        check_preset_choice(c.model, c.preset)
        if c.preset:
            from dltoolkit.models.hub_speech import check_speech_preset

            check_speech_preset(c.preset)
            if c.sample_rate != 16000:
                raise ConfigError("pretrained speech models take 16 kHz audio: leave sample_rate")
        if c.d_model % c.heads:
            raise ConfigError(f"d_model {c.d_model} must be divisible by heads {c.heads}")

    def _network_kind(self) -> str:
        c = self.config
        return "pretrained" if c.preset else ("ctc" if c.model == "ctc" else "transformer")

    # -- data -----------------------------------------------------------------------------

    def _read(self, data, split: str) -> Clips:
        """Clips of `data`, resampled to the model's rate."""
        c = self.config
        if data is None or (isinstance(data, str) and not data):
            raise DataError(
                "transcribe needs --data: a folder of audio + transcripts.tsv, a LibriSpeech "
                "folder, a JSONL/CSV table of audio paths and texts, or tfds:NAME"
            )
        clips = read_clips(
            data,
            text_field=c.text_field,
            audio_field=c.audio_field,
            group_field=c.group_field,
            strict=c.strict,
            tfds_data_dir=c.tfds_data_dir,
            split=split,
            array_rate=c.sample_rate,
        )
        with self._phase(f"resampling to {c.sample_rate} Hz"):
            clips.waves = [
                self._resampled(w, r) for w, r in zip(clips.waves, clips.rates, strict=True)
            ]
            clips.rates = [c.sample_rate] * len(clips)
        return clips

    def _resampled(self, wave: np.ndarray, rate: int) -> np.ndarray:
        if rate == self.config.sample_rate:
            return wave
        return resample(wave, rate, self.config.sample_rate).numpy()

    def _target(self, text: str) -> str:
        return text.strip() if self.config.case_and_punctuation else normalize_transcript(text)

    def _prepare(self, data, console) -> _Prepared:
        c = self.config
        clips = limit_duration(self._read(data, "train"), c.max_seconds, c.long_clips)
        clips = self._with_targets(clips)
        if len(clips) < 3:
            raise DataError(
                f"{clips.description}: {len(clips)} usable clip(s); at least 3 are needed"
            )
        splits = random_splits(clips, {"val": c.val_split, "test": c.test_split}, c.seed)
        targets = {name: [self._target(t) for t in part.texts] for name, part in splits.items()}
        sizes = ", ".join(f"{name} {len(part)}" for name, part in splits.items())
        problems = f"; {len(clips.problems)} left out or cut" if clips.problems else ""
        if console is not None:
            console.print(f"data: {clips.description}; {sizes}{problems}")
        return _Prepared(splits, targets, f"{clips.description}; {sizes} clips{problems}")

    def _with_targets(self, clips: Clips) -> Clips:
        """`clips` without those whose transcript is empty once normalised (listed as problems)."""
        empty = [i for i, t in enumerate(clips.texts) if not self._target(t)]
        if not empty:
            return clips
        if self.config.strict:
            raise DataError(
                f"{clips.sources[empty[0]]}: empty transcript; fix or remove it, or leave out --strict"
            )
        kept = clips.take(sorted(set(range(len(clips))) - set(empty)))
        kept.problems += [(clips.sources[i], "empty transcript: skipped") for i in empty]
        return kept

    def _out_of_vocabulary(self, texts: list[str]) -> Counter:
        """Characters of `texts` the character vocabulary lacks (none for other tokenizers)."""
        if self.pretrained or self.config.tokens != "characters":
            return Counter()
        known = set(self.vocabulary_)
        return Counter(ch for text in texts for ch in text if ch not in known)

    # -- training -------------------------------------------------------------------------

    def _adopt(self, prepared: _Prepared, run) -> None:
        if self.pretrained:
            return
        texts = prepared.targets["train"]
        if self.vocabulary_ is None:
            if self.config.tokens == "wordpiece":
                self.vocabulary_ = train_vocabulary(texts, self.config.vocabulary_size)
            else:
                self.vocabulary_ = character_vocabulary(texts, SPECIAL_TOKENS)
        self._tokenizer = self._make_tokenizer()
        unknown = self._out_of_vocabulary(
            [t for name in ("val", "test") for t in prepared.targets.get(name, [])]
        )
        if unknown and self.config.strict:
            raise DataError(
                f"held-out transcripts use characters never seen in training: "
                f"{''.join(sorted(unknown))!r}; add clips with them or leave out --strict"
            )
        prepared.held_out["unknown_characters"] = unknown

    def _make_tokenizer(self):
        if self.config.tokens == "wordpiece":
            return WordPieces(self.vocabulary_)
        return Characters(self.vocabulary_)

    def _plan(self, prepared: _Prepared, rt, run) -> Plan:
        c = self.config
        train, val = prepared.splits["train"], prepared.splits.get("val")
        steps = math.ceil(len(train) / c.batch_size)
        epochs = c.epochs or (
            TIMED_EPOCHS if c.train_minutes else max(3, math.ceil(STEP_BUDGET / steps))
        )
        return Plan(
            train=self._dataset(train, prepared.targets["train"], training=True),
            val=self._dataset(val, prepared.targets["val"], training=False) if val else None,
            steps=steps,
            epochs=epochs,
            validation_steps=math.ceil(len(val) / c.batch_size) if val else None,
            repeating=True,
            callbacks=time_budget(c, steps, epochs),
        )

    def _dataset(self, clips: Clips, texts: list[str], training: bool) -> tf.data.Dataset:
        """Batches of clips of similar length, as the model's fit takes them."""
        c = self.config
        lengths = np.array([len(w) for w in clips.waves], np.int32)
        waves = tf.RaggedTensor.from_row_lengths(np.concatenate(clips.waves), lengths)
        labels = (
            tf.constant(texts) if self.pretrained else self._token_ids(texts)[:, : c.max_tokens - 1]
        )
        ds = tf.data.Dataset.from_tensor_slices((waves, lengths, labels)).map(_dense)
        if training:
            ds = ds.shuffle(len(clips), seed=c.seed, reshuffle_each_iteration=True)
        ds = ds.repeat()
        if training:  # similar lengths share a batch: little padding
            edges = sorted({int(q) + 1 for q in np.quantile(lengths, [0.25, 0.5, 0.75])})
            ds = ds.bucket_by_sequence_length(
                lambda wave, length, label: length, edges, [c.batch_size] * (len(edges) + 1)
            )
        else:
            ds = ds.padded_batch(c.batch_size)
        return ds.map(self._as_fit_input, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE
        )

    def _token_ids(self, texts: list[str]) -> tf.RaggedTensor:
        """Transcripts -> ragged ids, as graph ops (KerasHub tokenizers answer lists eagerly)."""
        return tf.function(self._tokenizer, input_signature=[_TEXT])(tf.constant(texts))

    def _as_fit_input(self, waves, lengths, labels):
        kind = self._network_kind()
        if kind == "pretrained":
            return {"audio": waves, "text": labels}
        if kind == "ctc":
            return {"waves": waves, "lengths": lengths}, labels
        batch = tf.shape(labels)[0]
        target_in = tf.concat([tf.fill([batch, 1], BOS), labels], axis=1)
        ended = tf.concat([labels, tf.fill([batch, 1], PAD)], axis=1)
        ends_at = tf.reduce_sum(tf.cast(tf.not_equal(labels, PAD), tf.int32), axis=1)
        target_out = tf.where(tf.range(tf.shape(ended)[1])[None, :] == ends_at[:, None], EOS, ended)
        weights = tf.cast(tf.not_equal(target_out, PAD), tf.float32)
        return {"waves": waves, "lengths": lengths, "target": target_in}, target_out, weights

    def _build(self, prepared: _Prepared, plan: Plan) -> keras.Model:
        c = self.config
        if self.pretrained:
            from dltoolkit.models.hub_speech import load_speech_model

            return load_speech_model(c.preset, c.max_tokens)
        front_end = LogMelSpectrogram(
            c.sample_rate,
            frame_length=round(0.025 * c.sample_rate),
            frame_step=c.sample_rate // 100,
            fft_length=2 ** math.ceil(math.log2(0.025 * c.sample_rate)),
            n_mels=c.n_mels,
        )
        with self._phase("feature statistics"):
            train = prepared.splits["train"]
            normalization = mel_normalization(
                front_end(w[None, :])[0].numpy() for w in train.waves[:NORMALIZATION_CLIPS]
            )
        vocabulary = len(self.vocabulary_)
        if self._network_kind() == "ctc":
            network = CTCNetwork(
                vocabulary, c.n_mels, 32, c.rnn_units, c.rnn_layers, c.dropout, PAD
            )
        else:
            network = SpeechTransformer(
                vocabulary, c.n_mels, c.d_model, c.layers, c.heads, c.ff_dim, c.dropout, PAD
            )
        augment = SpecAugment(seed=c.seed) if c.spec_augment else None
        model = Transcription(
            front_end,
            normalization,
            augment,
            network,
            self._tokenizer,
            window=round(c.max_seconds * c.sample_rate),
        )
        model(
            {
                "waves": np.zeros((1, 800), np.float32),
                "lengths": np.array([800]),
                "target": np.array([[BOS, PAD]], np.int32),
            }
        )
        return model

    def _compile_args(self) -> dict:
        kind = self._network_kind()
        if kind == "ctc":
            return {}
        if kind == "pretrained":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            return {"loss": loss, "weighted_metrics": []}
        return {
            "loss": SmoothedTokenLoss(self.config.label_smoothing),
            "weighted_metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        }

    # -- transcription ----------------------------------------------------------------------

    def _transcribe_graph(self, waves, lengths, beams: int, scores: bool = False) -> dict:
        """Padded waves (B, N) at the model's rate -> {"text"} (and tokens with scores)."""
        c = self.config
        if not self.pretrained:
            return self.model_.transcribe(waves, lengths, c.max_tokens, beams, scores=scores)
        from dltoolkit.models.hub_speech import transcribe_graph

        chunks, chunk_lengths, count = in_windows(waves, lengths, round(c.max_seconds * 16000))
        text = transcribe_graph(self.model_, chunks, c.max_tokens, beams)
        return {"text": joined(text, chunk_lengths, count)}

    def _transcriber(self, beams: int):
        if beams not in self._transcribers:
            self._transcribers[beams] = tf.function(
                lambda waves, lengths: self._transcribe_graph(waves, lengths, beams)["text"],
                input_signature=[
                    tf.TensorSpec([None, None], tf.float32),
                    tf.TensorSpec([None], tf.int32),
                ],
            )
        return self._transcribers[beams]

    def transcribe(self, waves: list[np.ndarray], rate: int | None = None) -> list[str]:
        """Transcripts of mono float waves at `rate` Hz (default: the model's), any length:
        recordings longer than max_seconds are transcribed window by window."""
        self._require_model()
        c = self.config
        waves = [self._resampled(np.asarray(w, np.float32), rate or c.sample_rate) for w in waves]
        beams = c.beams if c.decoding == "beam" else 1
        order = np.argsort([len(w) for w in waves], kind="stable")  # similar lengths per batch
        out = [""] * len(waves)
        for start in range(0, len(waves), c.batch_size):
            batch = order[start : start + c.batch_size]
            padded, lengths = pad_batch([waves[i] for i in batch])
            texts = self._transcriber(beams)(padded, tf.cast(lengths, tf.int32)).numpy()
            for i, text in zip(batch, texts, strict=True):
                out[i] = text.decode("utf-8", errors="replace")
        return out

    # -- evaluation and prediction ----------------------------------------------------------

    def _score(self, clips: Clips, train_texts: list[str]) -> tuple[dict, list[str]]:
        with self._phase(f"transcribing {len(clips)} clips"):
            hypotheses = self.transcribe(clips.waves)
        references = [self._target(t) for t in clips.texts]
        metrics = {
            **speech_metrics(references, hypotheses, clips.groups),
            **(constant_baseline(train_texts, references) if train_texts else {}),
            "decoding": self.config.decoding,
        }
        unknown = self._out_of_vocabulary(references)
        if unknown:
            metrics["unknown_characters"] = dict(unknown.most_common())
        return metrics, hypotheses

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        name = (
            "test" if "test" in prepared.splits else "val" if "val" in prepared.splits else "train"
        )
        clips = prepared.splits[name]
        metrics, hypotheses = self._score(clips, prepared.targets["train"])
        prepared.held_out.update(split=name, clips=clips, hypotheses=hypotheses)
        return {**metrics, "split": name}

    def evaluate(self, data) -> dict:
        """WER, CER and exact match (jiwer, after `normalize_transcript`) on `data`'s clips (tfds
        data: its 'test' split), per group when the data names groups; characters of the
        references the model cannot write are counted in "unknown_characters"."""
        self._require_model()
        clips = self._read(data, "test")
        if self.config.strict and self._out_of_vocabulary([self._target(t) for t in clips.texts]):
            raise DataError(
                "the transcripts use characters this model never learned to write; "
                "leave out --strict to score them anyway"
            )
        metrics, _ = self._score(clips, [])
        if clips.problems:
            metrics["skipped"] = len(clips.problems)
        return metrics

    def predict(self, inputs=None, *, strict: bool = False) -> list[dict]:
        """Transcripts of audio files (WAV, FLAC, OGG) and folders of them: one row
        {input, text, seconds} per recording, long ones transcribed window by window.
        A file that cannot be read gets an error row `{"input", "error"}` in its place; with
        `strict` the first raises a DataError."""
        self._require_model()
        items = [] if inputs is None else [inputs] if isinstance(inputs, str) else list(inputs)
        if not items:
            raise DataError("nothing to transcribe: pass audio files or folders of them")
        found = read_audio_inputs(items)
        stop_if_strict(found, strict=strict)
        good = [f for f in found if not isinstance(f, Bad)]
        waves = [self._resampled(wave, rate) for _, wave, rate in good]
        texts = iter(self.transcribe(waves) if waves else [])
        seconds = iter(len(w) / self.config.sample_rate for w in waves)
        rows = [
            f
            if isinstance(f, Bad)
            else {"input": f[0], "text": next(texts), "seconds": round(next(seconds), 3)}
            for f in found
        ]
        return assemble(rows, strict=strict)

    # -- persistence and export ---------------------------------------------------------------

    def _restored(self) -> None:
        if not self.pretrained:
            self._tokenizer = self.model_.tokenizer

    def _serve(self, audio):
        """WAV bytes (B,) -> transcripts, with the tokens and their probabilities (from scratch)
        and `valid`: False for an item that is not 16-bit PCM WAV (its transcript is empty)."""
        rate = self.config.sample_rate
        valid = tf.map_fn(is_pcm16_wav, audio, fn_output_signature=tf.bool)

        def one(item):
            data, ok = item
            return tf.cond(
                ok, lambda: resample(*decode_wav(data), rate), lambda: tf.zeros([0], tf.float32)
            )

        waves = tf.map_fn(
            one,
            (audio, valid),
            fn_output_signature=tf.RaggedTensorSpec([None], tf.float32, ragged_rank=0),
        )
        padded, lengths = pad_batch(waves)
        out = self._transcribe_graph(
            padded, tf.cast(lengths, tf.int32), 1, scores=not self.pretrained
        )
        return {**out, "valid": valid}

    def _signatures(self) -> dict[str, Signature]:
        return {"serving_default": Signature([_AUDIO], call=self._serve)}

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        c, m, held = self.config, self.metrics_, prepared.held_out
        report.text("Data", prepared.description)
        problems = prepared.splits["train"].problems
        if problems:
            report.table(
                f"Clips left out or cut ({len(problems)}; the first 20)",
                [{"clip": s, "reason": r} for s, r in problems[:20]],
            )
        report.text("Model", self._model_description())
        rows = [{"transcripts": "model", **{k: m[k] for k in ("wer", "cer", "exact_match")}}]
        if "baseline_wer" in m:
            rows.append(
                {
                    "transcripts": "most frequent training transcript",
                    **{k: m[f"baseline_{k}"] for k in ("wer", "cer", "exact_match")},
                }
            )
        report.table(f"Scores on the {held['split']} split ({m['clips']} clips)", rows)
        if m.get("per_group"):
            report.table(
                "Per group",
                [
                    {"group": g, **{k: v[k] for k in ("wer", "cer", "exact_match", "clips")}}
                    for g, v in m["per_group"].items()
                ],
            )
        if held.get("unknown_characters"):
            report.text(
                "Characters the model cannot write",
                "".join(sorted(held["unknown_characters"])) + " (in held-out transcripts only)",
            )
        clips, hypotheses = held["clips"], held["hypotheses"]
        worst = worst_clips(clips.texts, hypotheses, c.report_examples)
        if worst:
            report.figure(
                "Worst clips", self._spectrograms(clips, hypotheses, worst), "worst_clips"
            )

    def _model_description(self) -> str:
        c = self.config
        kind = self._network_kind()
        if kind == "pretrained":
            body = f"pretrained preset {c.preset}, fine-tuned"
        elif kind == "ctc":
            body = (
                f"CTC: conv subsampling + {c.rnn_layers} bidirectional GRU layers of {c.rnn_units}"
            )
        else:
            body = (
                f"Whisper-style encoder-decoder from scratch: {c.layers}+{c.layers} layers, "
                f"d_model {c.d_model}, {c.heads} heads"
            )
        tokens = (
            "" if kind == "pretrained" else f", {c.tokens} vocabulary of {len(self.vocabulary_)}"
        )
        return (
            f"{body}{tokens}; {c.n_mels} log-mel bands at {c.sample_rate} Hz, "
            f"window {c.max_seconds:g} s; decoding {c.decoding}"
        )

    def _spectrograms(self, clips: Clips, hypotheses: list[str], indices: list[int]):
        from matplotlib.figure import Figure

        front_end = LogMelSpectrogram(self.config.sample_rate, n_mels=self.config.n_mels)
        fig = Figure(figsize=(9, 2.2 * len(indices)))
        for row, i in enumerate(indices):
            ax = fig.add_subplot(len(indices), 1, row + 1)
            features = front_end(clips.waves[i][None, :])[0].numpy()
            ax.imshow(features.T, origin="lower", aspect="auto", cmap="magma")
            ax.set_title(
                f"{clips.sources[i]}\nreference: {self._target(clips.texts[i])!r}   "
                f"heard: {hypotheses[i]!r}",
                fontsize=8,
                loc="left",
            )
            ax.set_axis_off()
        fig.tight_layout()
        return fig


def _dense(*parts):
    """A dataset element whose ragged slices become plain tensors (for padded batches)."""
    return tuple(p.to_tensor() if isinstance(p, tf.RaggedTensor) else p for p in parts)
