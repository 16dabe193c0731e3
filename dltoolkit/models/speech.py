"""From-scratch speech networks over log-mel features.

Both take `{"features": (B, T, n_mels) float, "lengths": (B,) int32}`, where `lengths` counts
each clip's valid frames; frames past it are padding and never change a clip's output.

- `SpeechTransformer`: Whisper-style encoder-decoder (conv stem halving the frame rate,
  Transformer encoder, causal Transformer decoder with tied embeddings); teacher-forced logits
  from `call`, cached generation through `start`/`step` and `decoding.decode_ids`.
- `CTCNetwork`: the fast baseline, conv subsampling (4x in time) and bidirectional GRUs giving
  per-frame logits over the vocabulary plus a blank, which is the LAST class (id
  `vocabulary_size`); trained with `ctc_loss`, decoded with `ctc_decode`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from dltoolkit.core.errors import ConfigError
from dltoolkit.models.seq2seq import Seq2SeqTransformer


def halved_lengths(lengths):
    """Valid frames after a stride-2 convolution padded one frame each side."""
    return (lengths + 1) // 2


def frame_mask(lengths, frames):
    """(B, frames) booleans: True on each clip's first `lengths` frames."""
    return ops.arange(frames)[None, :] < ops.cast(lengths, "int32")[:, None]


def _zero_padding(x, mask):
    """`x` (B, T, ...) with the frames outside `mask` (B, T) set to zero."""
    mask = ops.cast(mask, x.dtype)
    for _ in range(len(x.shape) - 2):
        mask = ops.expand_dims(mask, -1)
    return x * mask


@keras.saving.register_keras_serializable("dltoolkit")
class SpeechTransformer(Seq2SeqTransformer):
    """Whisper-style encoder-decoder: log-mel frames -> token logits. `call` takes
    {"features", "lengths", "target"} and returns float32 logits (B, T_target, vocabulary);
    `start`/`step` (inherited) take the source {"features", "lengths"}."""

    def __init__(
        self,
        vocabulary_size: int,
        n_mels=80,
        d_model=256,
        layers_=3,
        heads=4,
        ff_dim=1024,
        dropout=0.1,
        pad_id=0,
        **kwargs,
    ):
        if d_model % heads:
            raise ConfigError(f"d_model {d_model} must be a multiple of heads {heads}")
        super().__init__(
            vocabulary_size,
            max_source_length=0,
            max_target_length=0,
            d_model=d_model,
            layers_=layers_,
            heads=heads,
            ff_dim=ff_dim,
            dropout=dropout,
            positions="sinusoidal",
            pad_id=pad_id,
            **kwargs,
        )
        self.settings = dict(
            vocabulary_size=vocabulary_size,
            n_mels=n_mels,
            d_model=d_model,
            layers_=layers_,
            heads=heads,
            ff_dim=ff_dim,
            dropout=dropout,
            pad_id=pad_id,
        )
        self.stem_conv = keras.layers.Conv1D(
            d_model, 3, padding="same", activation="gelu", name="stem_conv"
        )
        self.stem_pad = keras.layers.ZeroPadding1D(1, name="stem_pad")
        self.stem_stride = keras.layers.Conv1D(
            d_model, 3, strides=2, activation="gelu", name="stem_stride"
        )

    def encode(self, source, training=None):
        """Encoder states (B, ceil(T/2), d) and their padding mask from features and lengths."""
        features, lengths = source["features"], source["lengths"]
        x = _zero_padding(features, frame_mask(lengths, ops.shape(features)[1]))
        x = self.stem_conv(x)
        x = _zero_padding(x, frame_mask(lengths, ops.shape(x)[1]))
        x = self.stem_stride(self.stem_pad(x))
        mask = frame_mask(halved_lengths(lengths), ops.shape(x)[1])
        x = self.embed_dropout(x + self.source_positions(x), training=training)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=mask, training=training)
        return self.encoder_norm(x), mask

    def call(self, inputs, training=None):
        source = {"features": inputs["features"], "lengths": inputs["lengths"]}
        logits = super().call({"source": source, "target": inputs["target"]}, training=training)
        return ops.cast(logits, "float32")


@keras.saving.register_keras_serializable("dltoolkit")
class CTCNetwork(keras.Model):
    """Conv subsampling + bidirectional GRUs + dense: {"features", "lengths"} -> per-frame
    logits (B, T', vocabulary_size + 1), blank last; `output_lengths` gives T' per clip.
    `fit(x, y)` trains on y = target ids (B, L) padded with `pad_id` (never a label)."""

    def __init__(
        self,
        vocabulary_size: int,
        n_mels=80,
        channels=32,
        units=256,
        rnn_layers=3,
        dropout=0.1,
        pad_id=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if vocabulary_size < 1 or rnn_layers < 1:
            raise ConfigError("a CTC network needs a vocabulary and at least one GRU layer")
        self.settings = dict(
            vocabulary_size=vocabulary_size,
            n_mels=n_mels,
            channels=channels,
            units=units,
            rnn_layers=rnn_layers,
            dropout=dropout,
            pad_id=pad_id,
        )
        self.blank, self.pad_id, self.channels = vocabulary_size, pad_id, channels
        self.mel_bins = (n_mels + 3) // 4
        self.subsample_pads = [keras.layers.ZeroPadding2D(1) for _ in range(2)]
        self.subsample_convs = [
            keras.layers.Conv2D(channels, 3, strides=2, activation="relu", name=f"subsample_{i}")
            for i in range(2)
        ]
        self.recurrent = [
            keras.layers.Bidirectional(
                keras.layers.GRU(units, return_sequences=True), name=f"gru_{i}"
            )
            for i in range(rnn_layers)
        ]
        self.dropout = keras.layers.Dropout(dropout)
        self.classes = keras.layers.Dense(vocabulary_size + 1, name="classes")

    def get_config(self):
        return {**super().get_config(), **self.settings}

    def output_lengths(self, lengths):
        """Valid output frames per clip for `lengths` valid input frames."""
        return halved_lengths(halved_lengths(ops.cast(lengths, "int32")))

    def call(self, inputs, training=None):
        features, lengths = inputs["features"], ops.cast(inputs["lengths"], "int32")
        x = _zero_padding(features, frame_mask(lengths, ops.shape(features)[1]))
        x = ops.expand_dims(x, -1)
        for pad, conv in zip(self.subsample_pads, self.subsample_convs, strict=True):
            x = conv(pad(x))
            lengths = halved_lengths(lengths)
            x = _zero_padding(x, frame_mask(lengths, ops.shape(x)[1]))
        x = ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.mel_bins * self.channels))
        mask = frame_mask(lengths, ops.shape(x)[1])
        for layer in self.recurrent:
            x = self.dropout(layer(x, mask=mask, training=training), training=training)
        return ops.cast(self.classes(x), "float32")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        label_lengths = ops.sum(ops.cast(ops.not_equal(y, self.pad_id), "int32"), axis=1)
        loss = ctc_loss(y, label_lengths, y_pred, self.output_lengths(x["lengths"]), self.blank)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas + sum(self.losses)


def ctc_loss(labels, label_lengths, logits, logit_lengths, blank: int):
    """Mean over the batch of the CTC negative log-likelihood of padded `labels` (B, L) with
    `label_lengths` (B,) under per-frame `logits` (B, T, classes) with `logit_lengths` (B,)."""
    per_clip = ops.ctc_loss(
        ops.cast(labels, "int32"),
        ops.cast(logits, "float32"),
        ops.cast(label_lengths, "int32"),
        ops.cast(logit_lengths, "int32"),
        mask_index=blank,
    )
    return ops.mean(per_clip)


def ctc_decode(logits, lengths, beam_width: int = 1, pad_id: int = 0):
    """Per-frame logits (B, T, classes; blank last) with valid `lengths` -> ids (B, T) padded
    with `pad_id`: best path when `beam_width` is 1, else CTC prefix beam search."""
    if beam_width < 1:
        raise ConfigError(f"beam_width must be at least 1, got {beam_width}")
    blank = logits.shape[-1] - 1
    strategy = "greedy" if beam_width == 1 else "beam_search"
    decoded, _ = ops.ctc_decode(
        ops.cast(logits, "float32"),
        ops.cast(lengths, "int32"),
        strategy=strategy,
        beam_width=beam_width,
        mask_index=blank,
    )
    ids = decoded[0]
    return ops.where(ids < 0, pad_id, ids)
