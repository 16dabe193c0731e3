"""A Transformer encoder-decoder for summarisation, trained from scratch, with cached decoding.

The model maps `{"source": ids (B, S), "target": ids (B, T)}` (target = BOS + summary,
shifted right) to next-token logits (B, T, vocabulary). Embeddings are shared between
encoder, decoder and the output projection. `start` and `step` run the encoder once and
the decoder one token at a time with key/value caches, for generation. `Summarization`
is what a summarizer saves: that network with its tokenizer, which turns raw strings into
the encoder's input.
"""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf
from keras import ops

from dltoolkit.core.config import check_choice
from dltoolkit.specs.summarize import POSITIONS


def prenorm_blocks(block, count: int, ff_dim: int, heads: int, dropout: float, prefix: str):
    """`count` pre-norm GELU Transformer blocks of KerasHub's `block` class (TransformerEncoder
    or TransformerDecoder), named prefix_0, prefix_1, ..."""
    return [
        block(
            ff_dim,
            heads,
            dropout=dropout,
            activation="gelu",
            normalize_first=True,
            name=f"{prefix}_{i}",
        )
        for i in range(count)
    ]


@keras.saving.register_keras_serializable("dltoolkit")
class Seq2SeqTransformer(keras.Model):
    """Pre-norm Transformer encoder-decoder with tied embeddings."""

    def __init__(
        self,
        vocabulary_size: int,
        max_source_length: int,
        max_target_length: int,
        d_model=256,
        layers_=3,
        heads=4,
        ff_dim=1024,
        dropout=0.1,
        positions="sinusoidal",
        pad_id=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("positions", positions, POSITIONS)
        self.settings = dict(
            vocabulary_size=vocabulary_size,
            max_source_length=max_source_length,
            max_target_length=max_target_length,
            d_model=d_model,
            layers_=layers_,
            heads=heads,
            ff_dim=ff_dim,
            dropout=dropout,
            positions=positions,
            pad_id=pad_id,
        )
        self.d_model, self.heads, self.layers_, self.pad_id = d_model, heads, layers_, pad_id
        self.embedding = keras_hub.layers.ReversibleEmbedding(
            vocabulary_size,
            d_model,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=d_model**-0.5),
            name="embedding",
        )
        if positions == "learned":
            self.source_positions = keras_hub.layers.PositionEmbedding(
                max_source_length, name="source_positions"
            )
            self.target_positions = keras_hub.layers.PositionEmbedding(
                max_target_length, name="target_positions"
            )
        else:
            self.source_positions = self.target_positions = keras_hub.layers.SinePositionEncoding(
                name="positions"
            )
        self.embed_dropout = keras.layers.Dropout(dropout)
        self.encoder_layers = prenorm_blocks(
            keras_hub.layers.TransformerEncoder, layers_, ff_dim, heads, dropout, "encoder"
        )
        self.decoder_layers = prenorm_blocks(
            keras_hub.layers.TransformerDecoder, layers_, ff_dim, heads, dropout, "decoder"
        )
        self.encoder_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="encoder_norm")
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="decoder_norm")

    def get_config(self):
        return {**super().get_config(), **self.settings}

    def _embed(self, ids, positions, start_index=0, training=None):
        x = self.embedding(ids) * ops.cast(self.d_model**0.5, self.compute_dtype)
        x = x + positions(x, start_index=start_index)
        return self.embed_dropout(x, training=training)

    def encode(self, source, training=None):
        """Encoder states (B, S, d) and the source padding mask (B, S)."""
        mask = ops.not_equal(source, self.pad_id)
        x = self._embed(source, self.source_positions, training=training)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=mask, training=training)
        return self.encoder_norm(x), mask

    def call(self, inputs, training=None):
        states, source_mask = self.encode(inputs["source"], training=training)
        target = inputs["target"]
        x = self._embed(target, self.target_positions, training=training)
        for layer in self.decoder_layers:
            x = layer(
                x,
                states,
                decoder_padding_mask=ops.not_equal(target, self.pad_id),
                encoder_padding_mask=source_mask,
                training=training,
            )
        return self.embedding(self.decoder_norm(x), reverse=True)

    # -- generation ---------------------------------------------------------------------------

    def _decode_cached(self, ids, states, source_mask, self_cache, cross_cache, index, cross_index):
        x = self._embed(ids, self.target_positions, start_index=index)
        self_caches, cross_caches = [], []
        for i, layer in enumerate(self.decoder_layers):
            x, layer_self, layer_cross = layer(
                x,
                states,
                encoder_padding_mask=source_mask,
                self_attention_cache=self_cache[:, i],
                self_attention_cache_update_index=index,
                cross_attention_cache=cross_cache[:, i],
                cross_attention_cache_update_index=cross_index,
            )
            self_caches.append(layer_self)
            cross_caches.append(layer_cross)
        if cross_index is not None:
            cross_cache = ops.stack(cross_caches, axis=1)
        logits = self.embedding(self.decoder_norm(x), reverse=True)
        return logits, ops.stack(self_caches, axis=1), cross_cache

    def start(self, source, prompt):
        """Encode `source` and fill the decoder caches from `prompt` (B, L); returns the cache
        tuple (self-attention cache, cross-attention cache, encoder states, source mask)."""
        states, source_mask = self.encode(source)
        batch, head_dim = ops.shape(states)[0], self.d_model // self.heads
        shape = [batch, self.layers_, 2, ops.shape(prompt)[1], self.heads, head_dim]
        self_cache = ops.zeros(shape, self.compute_dtype)
        shape[3] = ops.shape(states)[1]
        cross_cache = ops.zeros(shape, self.compute_dtype)
        _, self_cache, cross_cache = self._decode_cached(
            prompt, states, source_mask, self_cache, cross_cache, 0, 0
        )
        return self_cache, cross_cache, states, source_mask

    def step(self, token, index, cache):
        """Logits (B, vocabulary) after `token` (B, 1) at position `index`, and the new cache."""
        self_cache, cross_cache, states, source_mask = cache
        logits, self_cache, _ = self._decode_cached(
            token, states, source_mask, self_cache, cross_cache, index, None
        )
        return logits[:, 0, :], (self_cache, cross_cache, states, source_mask)


def encoder_input(tokens: tf.RaggedTensor, max_source_length: int, end_id: int):
    """Document ids (ragged) cut to the encoder's input and ended with `end_id` (never empty)."""
    tokens = tokens[:, : max_source_length - 1]
    ends = tf.fill([tokens.nrows(), 1], tf.cast(end_id, tokens.dtype))
    return tf.concat([tokens, tf.RaggedTensor.from_tensor(ends)], axis=1)


@keras.saving.register_keras_serializable("dltoolkit")
class Summarization(keras.Model):
    """A from-scratch summarizer's model.keras: its tokenizer and the Seq2SeqTransformer it
    feeds. Called like the transformer (ids -> logits); `source_ids` turns raw strings into
    the encoder's input, `tokenizer.detokenize` ids back into text."""

    def __init__(self, tokenizer, transformer: Seq2SeqTransformer, end_token="[EOS]", **kwargs):
        super().__init__(**kwargs)
        self.tokenizer, self.transformer, self.end_token = tokenizer, transformer, end_token

    def call(self, inputs, training=None):
        return self.transformer(inputs, training=training)

    def source_ids(self, text):
        """Raw strings (B,) -> the encoder's ids (ragged), as the network was trained on; graph
        ops (in a tf.function: eagerly, KerasHub tokenizers answer with Python lists)."""
        return encoder_input(
            self.tokenizer(text),
            self.transformer.settings["max_source_length"],
            self.tokenizer.token_to_id(self.end_token),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
            "transformer": keras.saving.serialize_keras_object(self.transformer),
            "end_token": self.end_token,
        }

    @classmethod
    def from_config(cls, config):
        parts = {
            k: keras.saving.deserialize_keras_object(config[k])
            for k in ("tokenizer", "transformer")
        }
        return cls(**{**config, **parts})


@keras.saving.register_keras_serializable("dltoolkit")
class SmoothedTokenLoss(keras.losses.Loss):
    """Cross-entropy on next-token logits with label smoothing (padding is weighted out)."""

    def __init__(self, label_smoothing=0.1, name="smoothed_token_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        picked = ops.take_along_axis(
            log_probs, ops.expand_dims(ops.cast(y_true, "int32"), -1), axis=-1
        )
        nll = -ops.squeeze(picked, -1)
        uniform = -ops.mean(log_probs, axis=-1)
        return (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
