"""Token batches for a language model (tf.data).

Documents become one token stream, each opened by the end-of-text token (the one that
closed the document before it): training samples random windows of it, as nanoGPT does,
and scoring cuts it into consecutive windows so every token after the first is predicted
exactly once. Prompt/response pairs become padded rows whose loss mask covers the response
and its end token; preference pairs become such rows for the chosen and for the rejected
response.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from dltoolkit.data.corpus import preference_examples, sft_examples

PAD = 0
_TEXT = tf.TensorSpec([None], tf.string)


class Encoder:
    """Texts -> token ids with a model's tokenizer, in rows of `context` tokens; `start_id`
    opens a document or prompt, `end_id` closes a document or response (the same token for
    dltoolkit's vocabularies and GPT-2's; Llama-style presets have two)."""

    def __init__(self, tokenizer, context: int, end_id: int, start_id: int):
        self.tokenizer, self.context = tokenizer, context
        self.end_id, self.start_id = end_id, start_id
        self._tokenize = tf.function(tokenizer, input_signature=[_TEXT])  # tensors out

    def ids(self, texts: list[str], chunk: int = 256) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(texts), chunk):
            tokens = self._tokenize(tf.constant(texts[start : start + chunk], tf.string))
            out += [np.asarray(row, np.int32) for row in tokens.numpy()]
        return out

    def stream(self, documents: list[str]) -> Stream:
        opening = [] if self.start_id == self.end_id else [self.start_id]
        pieces = [[self.end_id]] if not opening else []
        for ids in self.ids(documents):
            pieces += [opening, ids, [self.end_id]]
        characters = sum(map(len, documents)) + len(documents)  # an end token counts as one
        return Stream(np.concatenate(pieces).astype(np.int32), self.context, characters)

    def pairs(self, pairs: list[tuple[str, str]]) -> Rows:
        prompts, responses = self.ids([p for p, _ in pairs]), self.ids([r for _, r in pairs])
        ids, mask = sft_examples(
            list(zip(prompts, responses, strict=True)),
            self.context,
            self.end_id,
            PAD,
            self.start_id,
        )
        return Rows(ids, mask, sum(len(r) + 1 for _, r in pairs))

    def preferences(self, triples: list[tuple[str, str, str]]) -> Preferences:
        parts = [self.ids([t[k] for t in triples]) for k in range(3)]
        triples = list(zip(*parts, strict=True))
        arrays = preference_examples(triples, self.context, self.end_id, PAD, self.start_id)
        return Preferences(*arrays)

    def examples(self, items: list, kind: str):
        """`items` of a data kind (corpus, pairs, preferences) as their batches' source."""
        return {"corpus": self.stream, "pairs": self.pairs, "preferences": self.preferences}[kind](
            items
        )


@dataclass
class Stream:
    """One token stream (documents joined by end-of-text tokens)."""

    ids: np.ndarray
    context: int
    characters: int  # of the text the scored tokens spell (bits per character)

    def windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Consecutive windows: inputs (N, context), targets, weights (0 past the end)."""
        n = max(1, math.ceil((len(self.ids) - 1) / self.context))
        x = np.full((n, self.context), PAD, np.int32)
        y, w = x.copy(), np.zeros((n, self.context), np.float32)
        for i in range(n):
            piece = self.ids[i * self.context : (i + 1) * self.context + 1]
            x[i, : len(piece) - 1], y[i, : len(piece) - 1] = piece[:-1], piece[1:]
            w[i, : len(piece) - 1] = 1
        return x, y, w

    def training_batches(self, batch_size: int, seed: int) -> tf.data.Dataset:
        """Endless batches of random windows (x, y, weights)."""
        span = self.context + 1
        if len(self.ids) < span + 1:
            x, y, w = self.windows()
            return _rows(x, y, w).shuffle(len(x), seed=seed).repeat().batch(batch_size)
        ids, starts = tf.constant(self.ids), len(self.ids) - span + 1

        def window(r):
            start = tf.math.floormod(r, starts)
            piece = ids[start : start + span]
            return piece[:-1], piece[1:], tf.ones([self.context], tf.float32)

        ds = tf.data.Dataset.random(seed=seed).map(window, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def scoring_batches(self, batch_size: int) -> tf.data.Dataset:
        return _rows(*self.windows()).batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def batches(self, batch_size: int) -> int:
        return math.ceil(len(self.windows()[0]) / batch_size)


@dataclass
class Rows:
    """Padded rows (N, context + 1) with a loss mask (N, context)."""

    ids: np.ndarray
    mask: np.ndarray
    characters: int  # of the responses (and their end tokens)

    def training_batches(self, batch_size: int, seed: int) -> tf.data.Dataset:
        ds = _rows(self.ids[:, :-1], self.ids[:, 1:], self.mask.astype(np.float32))
        return ds.shuffle(len(self.ids), seed=seed).repeat().batch(batch_size)

    def scoring_batches(self, batch_size: int) -> tf.data.Dataset:
        ds = _rows(self.ids[:, :-1], self.ids[:, 1:], self.mask.astype(np.float32))
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def batches(self, batch_size: int) -> int:
        return math.ceil(len(self.ids) / batch_size)


@dataclass
class Preferences:
    """Chosen and rejected rows (N, context + 1) with masks over their responses."""

    chosen: np.ndarray
    chosen_mask: np.ndarray
    rejected: np.ndarray
    rejected_mask: np.ndarray

    def _dataset(self) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(
            {
                "chosen": self.chosen,
                "chosen_mask": self.chosen_mask.astype(np.float32),
                "rejected": self.rejected,
                "rejected_mask": self.rejected_mask.astype(np.float32),
            }
        )

    def training_batches(self, batch_size: int, seed: int) -> tf.data.Dataset:
        return self._dataset().shuffle(len(self.chosen), seed=seed).repeat().batch(batch_size)

    def scoring_batches(self, batch_size: int) -> tf.data.Dataset:
        return self._dataset().batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def batches(self, batch_size: int) -> int:
        return math.ceil(len(self.chosen) / batch_size)


def _rows(x, y, w) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((x, y, w))
