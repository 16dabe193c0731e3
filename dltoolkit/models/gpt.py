"""A GPT-style decoder-only Transformer trained from scratch, with a key/value cache.

`GPT` maps token ids (B, T) to next-token logits (B, T, vocabulary): tied token embeddings,
learned or rotary positions, pre-norm blocks (causal self-attention, GELU feed-forward) and
a final LayerNorm, initialised as GPT-2 is. `call_with_cache` feeds a few tokens at a time
against a cache of keys and values, so generation costs one step per token
(`dltoolkit.models.sampling`). Rows may start at different cache slots (`start`), which is
how a batch of left-padded prompts keeps each row's positions right.
"""

from __future__ import annotations

import math

import keras
import keras_hub
from keras import ops

from dltoolkit.core.config import check_choice

POSITIONS = ("rotary", "learned")
_MASKED = -1e9


def _normal(stddev: float):
    return keras.initializers.RandomNormal(stddev=stddev)


@keras.saving.register_keras_serializable("dltoolkit")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head causal self-attention over the sequence itself or a key/value cache.

    Positions of the queries (and keys) come from the caller; with `rotary`, queries and keys
    are rotated by them. `start` (B,) marks each row's first real cache slot: slots before it
    are padding, never attended to.
    """

    def __init__(self, d_model, heads, rotary=True, residual_stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not a multiple of heads {heads}")
        self.d_model, self.heads, self.rotary = d_model, heads, rotary
        self.residual_stddev = residual_stddev
        self.head_dim = d_model // heads
        self.qkv = keras.layers.Dense(
            3 * d_model, kernel_initializer=_normal(0.02), dtype=self.dtype_policy, name="qkv"
        )
        self.out = keras.layers.Dense(
            d_model,
            kernel_initializer=_normal(residual_stddev),
            dtype=self.dtype_policy,
            name="out",
        )
        self.rope = keras_hub.layers.RotaryEmbedding(dtype=self.dtype_policy) if rotary else None

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.out.build(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "heads": self.heads,
            "rotary": self.rotary,
            "residual_stddev": self.residual_stddev,
        }

    def call(self, x, positions, cache=None, index=0, start=None):
        """`x` (B, t, d) at `positions` (B, t) -> (B, t, d), and the layer's cache
        (B, 2, L, heads, head_dim) with this call's keys and values written at slots
        index .. index + t (None without a cache)."""
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(x), (batch, length, 3, self.heads, self.head_dim))
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rope is not None:
            query = self.rope(query, positions=positions)
            key = self.rope(key, positions=positions)
        query_slots = ops.arange(length) + index
        if cache is not None:
            cache = ops.slice_update(
                cache, [0, 0, index, 0, 0], ops.cast(ops.stack([key, value], axis=1), cache.dtype)
            )
            key, value = cache[:, 0], cache[:, 1]
        key_slots = ops.arange(ops.shape(key)[1])
        allowed = key_slots[None, None, :] <= query_slots[None, :, None]
        if start is not None:
            real = key_slots[None, None, :] >= ops.reshape(start, (-1, 1, 1))
            allowed = ops.logical_and(allowed, real)
        scores = ops.einsum("bqhd,bkhd->bhqk", query, ops.cast(key, query.dtype))
        scores = ops.cast(scores, "float32") / math.sqrt(self.head_dim)
        scores = ops.where(allowed[:, None], scores, _MASKED)
        weights = ops.cast(ops.softmax(scores, axis=-1), x.dtype)
        attended = ops.einsum("bhqk,bkhd->bqhd", weights, ops.cast(value, x.dtype))
        return self.out(ops.reshape(attended, (batch, length, self.d_model))), cache


@keras.saving.register_keras_serializable("dltoolkit")
class DecoderBlock(keras.layers.Layer):
    """Pre-norm block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, d_model, heads, ff_dim, dropout=0.0, rotary=True, depth=1, **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(
            d_model=d_model,
            heads=heads,
            ff_dim=ff_dim,
            dropout=dropout,
            rotary=rotary,
            depth=depth,
        )
        # GPT-2: residual projections start 1/sqrt(2 * depth) smaller (depth: the model's blocks).
        residual_stddev = 0.02 / math.sqrt(2 * depth)
        policy = self.dtype_policy
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-5, dtype=policy)
        self.attention = CausalSelfAttention(
            d_model, heads, rotary, residual_stddev, dtype=policy, name="attention"
        )
        self.ff_norm = keras.layers.LayerNormalization(epsilon=1e-5, dtype=policy)
        self.ff_in = keras.layers.Dense(
            ff_dim, activation="gelu", kernel_initializer=_normal(0.02), dtype=policy
        )
        self.ff_out = keras.layers.Dense(
            d_model, kernel_initializer=_normal(residual_stddev), dtype=policy
        )
        self.attention_dropout = keras.layers.Dropout(dropout, dtype=policy)
        self.ff_dropout = keras.layers.Dropout(dropout, dtype=policy)

    def build(self, input_shape):
        for norm in (self.attention_norm, self.ff_norm):
            norm.build(input_shape)
        self.attention.build(input_shape)
        self.ff_in.build(input_shape)
        self.ff_out.build((*input_shape[:-1], self.settings["ff_dim"]))

    def get_config(self):
        return {**super().get_config(), **self.settings}

    def call(self, x, positions, cache=None, index=0, start=None, training=None):
        attended, cache = self.attention(
            self.attention_norm(x), positions, cache=cache, index=index, start=start
        )
        x = x + self.attention_dropout(attended, training=training)
        x = x + self.ff_dropout(self.ff_out(self.ff_in(self.ff_norm(x))), training=training)
        return x, cache


@keras.saving.register_keras_serializable("dltoolkit")
class GPT(keras.Model):
    """Decoder-only Transformer: ids (B, T), T <= context -> float32 logits (B, T, vocabulary).

    Token embeddings are tied with the output projection; `positions` is "rotary" (queries
    and keys rotated) or "learned" (a table of `context` embeddings). `ff_dim` defaults to
    4 * d_model.
    """

    def __init__(
        self,
        vocabulary_size: int,
        context: int = 256,
        d_model: int = 128,
        layers: int = 4,
        heads: int = 4,
        ff_dim: int | None = None,
        dropout: float = 0.0,
        positions: str = "rotary",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("positions", positions, POSITIONS)
        self.settings = dict(
            vocabulary_size=vocabulary_size,
            context=context,
            d_model=d_model,
            layers=layers,
            heads=heads,
            ff_dim=ff_dim,
            dropout=dropout,
            positions=positions,
        )
        self.context, self.depth, self.heads = context, layers, heads
        self.head_dim = d_model // heads
        policy = self.dtype_policy
        self.embedding = keras_hub.layers.ReversibleEmbedding(
            vocabulary_size,
            d_model,
            embeddings_initializer=_normal(0.02),
            dtype=policy,
            name="embedding",
        )
        self.position_embedding = (
            keras.layers.Embedding(
                context,
                d_model,
                embeddings_initializer=_normal(0.02),
                dtype=policy,
                name="positions",
            )
            if positions == "learned"
            else None
        )
        self.embed_dropout = keras.layers.Dropout(dropout, dtype=policy)
        self.blocks = [
            DecoderBlock(
                d_model,
                heads,
                ff_dim or 4 * d_model,
                dropout,
                rotary=positions == "rotary",
                depth=layers,
                dtype=policy,
                name=f"block_{i}",
            )
            for i in range(layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=policy, name="final_norm"
        )

    def build(self, input_shape):
        self.embedding.build(input_shape)
        if self.position_embedding is not None:
            self.position_embedding.build(input_shape)
        hidden = (*input_shape, self.settings["d_model"])
        for block in self.blocks:
            block.build(hidden)
        self.final_norm.build(hidden)

    def get_config(self):
        return {**super().get_config(), **self.settings}

    def _forward(self, ids, positions, cache=None, index=0, start=None, training=None):
        x = self.embedding(ids)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)
        x = self.embed_dropout(x, training=training)
        layer_caches = []
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else cache[:, i]
            x, layer_cache = block(
                x, positions, cache=layer_cache, index=index, start=start, training=training
            )
            layer_caches.append(layer_cache)
        logits = ops.cast(self.embedding(self.final_norm(x), reverse=True), "float32")
        return logits, None if cache is None else ops.stack(layer_caches, axis=1)

    def call(self, ids, training=None):
        length = ops.shape(ids)[1]
        positions = ops.broadcast_to(ops.arange(length)[None, :], ops.shape(ids))
        return self._forward(ids, positions, training=training)[0]

    def empty_cache(self, batch_size, length=None):
        """Zeros (B, layers, 2, length, heads, head_dim) for `call_with_cache`; `length`
        (cache slots) defaults to the context."""
        length = self.context if length is None else length
        shape = (batch_size, self.depth, 2, length, self.heads, self.head_dim)
        return ops.zeros(shape, self.compute_dtype)

    def call_with_cache(self, ids, cache, index, start=None):
        """Feed `ids` (B, t) into cache slots index .. index + t (`index` a scalar tensor or
        int) -> (float32 logits (B, t, vocabulary), updated cache). Each row's slot s holds
        position s - start[row]; slots before `start` (B,) are padding and never attended
        (default: no padding, position = slot). Equals `call`'s logits at those positions."""
        if not self.built:
            self.build(ids.shape)
        index = ops.cast(index, "int32")
        slots = ops.arange(ops.shape(ids)[1]) + index
        if start is None:
            positions = ops.broadcast_to(slots[None, :], ops.shape(ids))
        else:
            start = ops.cast(start, "int32")
            positions = ops.maximum(slots[None, :] - start[:, None], 0)
        return self._forward(ids, positions, cache=cache, index=index, start=start)


def token_log_probs(logits, targets, mask=None):
    """Per-sequence sum of log p(target) and the number of tokens summed, both (B,) float32.

    `logits` (B, T, V) score `targets` (B, T) position by position (shift before calling:
    logits[:, :-1] with ids[:, 1:]); only positions where `mask` (B, T) is 1 count.
    """
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    picked = ops.take_along_axis(log_probs, ops.cast(targets, "int32")[..., None], axis=-1)[..., 0]
    weights = ops.ones_like(picked) if mask is None else ops.cast(mask, "float32")
    return ops.sum(picked * weights, axis=-1), ops.sum(weights, axis=-1)
