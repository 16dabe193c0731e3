"""A from-scratch speech recogniser's model.keras: raw waves in, transcripts out.

`Transcription` holds the whole path, so training, `predict` and the export share it: padded
waves (B, N) at the model's sample rate with their lengths -> log-mel features (tf.signal) ->
per-mel normalisation -> SpecAugment (training only) -> the network (a `SpeechTransformer` or
a `CTCNetwork`) -> token ids -> text through its tokenizer. Recordings longer than the
model's window are cut into window-long chunks whose transcripts are joined (`transcribe`).
"""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf
from keras import ops

from dltoolkit.models.decoding import decode_ids
from dltoolkit.models.speech import CTCNetwork, ctc_decode, ctc_loss

PAD, UNK, BOS, EOS = range(4)  # the first ids of every tokenizer's vocabulary (SPECIAL_TOKENS)


@keras.saving.register_keras_serializable(package="dltoolkit")
class Transcription(keras.Model):
    """Front end + network + tokenizer. `call({"waves", "lengths"[, "target"]})` gives the
    network's logits: per-frame (CTC) or next-token (transformer, teacher-forced `target`)."""

    def __init__(self, front_end, normalization, augment, network, tokenizer, window, **kwargs):
        super().__init__(**kwargs)
        self.front_end, self.normalization, self.augment = front_end, normalization, augment
        self.network, self.tokenizer, self.window = network, tokenizer, int(window)
        self.ctc = isinstance(network, CTCNetwork)

    def features(self, waves, lengths, training=None) -> dict:
        """{"features": normalised (and, training, masked) log-mel frames, "lengths": frames}."""
        frames = self.front_end.frames(lengths)
        features = self.normalization(self.front_end(waves))
        if self.augment is not None:
            features = self.augment(features, lengths=frames, training=training)
        return {"features": features, "lengths": frames}

    def call(self, inputs, training=None):
        source = self.features(inputs["waves"], inputs["lengths"], training=training)
        if self.ctc:
            return self.network(source, training=training)
        return self.network({**source, "target": inputs["target"]}, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not self.ctc:
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        frames = self.network.output_lengths(self.front_end.frames(x["lengths"]))
        label_lengths = ops.sum(ops.cast(ops.not_equal(y, PAD), "int32"), axis=1)
        loss = ctc_loss(y, label_lengths, y_pred, frames, self.network.blank)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas + sum(self.losses)

    # -- transcription (graph ops) ---------------------------------------------------------

    def decode(self, waves, lengths, max_tokens: int, beams: int = 1):
        """Token ids (B, L) of windows no longer than the model's, padded with PAD."""
        source = self.features(waves, lengths)
        if self.ctc:
            logits = self.network(source)
            frames = self.network.output_lengths(source["lengths"])
            return ctc_decode(logits, frames, beams, PAD)
        sampler = (
            keras_hub.samplers.GreedySampler()
            if beams == 1
            else keras_hub.samplers.BeamSampler(num_beams=beams)
        )
        return decode_ids(self.network, source, sampler, max_tokens, BOS, EOS, PAD)

    def token_scores(self, waves, lengths, ids):
        """Each decoded token's probability (B, L), 0 on padding: teacher-forced for the
        transformer; for CTC, the best path's probability at the frame emitting the token
        (greedy ids only)."""
        source = self.features(waves, lengths)
        if self.ctc:
            probs = ops.softmax(self.network(source), axis=-1)
            best = ops.argmax(probs, axis=-1)
            frames = self.network.output_lengths(source["lengths"])
            valid = ops.arange(ops.shape(best)[1])[None, :] < frames[:, None]
            previous = ops.pad(best[:, :-1], [[0, 0], [1, 0]], constant_values=-1)
            emits = valid & (best != self.network.blank) & (best != previous)
            scores = tf.ragged.boolean_mask(ops.max(probs, axis=-1), emits)
            scores = scores.to_tensor(0.0)
            width = ops.shape(ids)[1]
            scores = tf.pad(scores, [[0, 0], [0, tf.maximum(width - tf.shape(scores)[1], 0)]])
            return scores[:, :width] * ops.cast(ids != PAD, "float32")
        batch = ops.shape(ids)[0]
        target = ops.concatenate([ops.full([batch, 1], BOS, ids.dtype), ids[:, :-1]], axis=1)
        logits = self.network({**source, "target": target})
        chosen = ops.take_along_axis(ops.softmax(logits, axis=-1), ids[..., None], axis=-1)
        return chosen[..., 0] * ops.cast(ids != PAD, "float32")

    def transcribe(self, waves, lengths, max_tokens: int, beams: int = 1, scores=False) -> dict:
        """Padded waves (B, N) of any length -> {"text": (B,)}; with `scores` (greedy) also
        "tokens" (B, T) strings and "token_scores" (B, T) probabilities, padded with "" and 0.
        Recordings longer than the window are transcribed in window-long chunks."""
        chunks, chunk_lengths, count = in_windows(waves, lengths, self.window)
        ids = self.decode(chunks, chunk_lengths, max_tokens, beams)
        ids = ops.where(chunk_lengths[:, None] > 0, ids, PAD)
        text = tf.strings.strip(
            self.tokenizer.detokenize(tf.RaggedTensor.from_tensor(ids, padding=PAD))
        )
        out = {"text": joined(text, chunk_lengths, count)}
        if scores:
            batch = ops.shape(waves)[0]
            probabilities = ops.reshape(self.token_scores(chunks, chunk_lengths, ids), [batch, -1])
            ids = ops.reshape(ids, [batch, -1])
            kept = ids != PAD
            vocabulary = tf.constant(_vocabulary(self.tokenizer))
            out["tokens"] = tf.ragged.boolean_mask(tf.gather(vocabulary, ids), kept).to_tensor("")
            out["token_scores"] = tf.ragged.boolean_mask(probabilities, kept).to_tensor(0.0)
        return out

    def get_config(self):
        parts = ("front_end", "normalization", "augment", "network", "tokenizer")
        return {
            **super().get_config(),
            **{k: keras.saving.serialize_keras_object(getattr(self, k)) for k in parts},
            "window": self.window,
        }

    @classmethod
    def from_config(cls, config):
        parts = ("front_end", "normalization", "augment", "network", "tokenizer")
        objects = {k: keras.saving.deserialize_keras_object(config[k]) for k in parts}
        return cls(**{**config, **objects})


def in_windows(waves, lengths, window: int):
    """Padded waves (B, N) and lengths -> chunks (B*K, window) of `window` samples, their
    lengths (0 for a chunk past a clip's end) and K (a batch no longer than the window is
    one chunk as it is), so that long recordings go through a
    model with a fixed window; row b's chunks are rows b*K .. b*K + K - 1."""
    waves = tf.convert_to_tensor(waves, tf.float32)
    lengths = tf.cast(lengths, tf.int32)
    width = tf.maximum(tf.minimum(window, tf.shape(waves)[1]), 1)  # short batches stay short
    count = tf.maximum((tf.shape(waves)[1] + width - 1) // width, 1)
    waves = tf.pad(waves, [[0, 0], [0, count * width - tf.shape(waves)[1]]])
    chunks = tf.reshape(waves, [-1, width])
    starts = tf.range(count) * width
    chunk_lengths = tf.clip_by_value(lengths[:, None] - starts[None, :], 0, width)
    return chunks, tf.reshape(chunk_lengths, [-1]), count


def joined(chunk_texts, chunk_lengths, count):
    """Chunk transcripts (B*K,) -> one transcript per recording (B,), empty chunks left out."""
    texts = tf.where(chunk_lengths > 0, chunk_texts, "")
    texts = tf.strings.reduce_join(tf.reshape(texts, [-1, count]), axis=1, separator=" ")
    return tf.strings.strip(tf.strings.regex_replace(texts, " +", " "))


def _vocabulary(tokenizer) -> list[str]:
    """Every token string by id (Characters or WordPieces)."""
    if hasattr(tokenizer, "get_vocabulary"):
        return list(tokenizer.get_vocabulary())
    return list(tokenizer.vocabulary)
