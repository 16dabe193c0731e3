"""The one language-model evaluator of the generate-text benchmark, shared by every side.

A side hands in `logits_fn`: int64 ids (B, T) -> float logits (B, T, V), position t scoring
the token after ids[:, t]. `validation_loss` cuts the whole validation id sequence into
non-overlapping windows of `block` tokens (the last, shorter window included), so that every
token after the first is predicted exactly once, from the tokens before it in its window.
It imports neither TensorFlow nor PyTorch.

`python benchmarks/lm_eval.py` runs the self-check below.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

LogitsFn = Callable[[np.ndarray], np.ndarray]


def char_vocabulary(text: str) -> list[str]:
    """The sorted characters of the whole text (as nanoGPT's shakespeare_char prepare.py)."""
    return sorted(set(text))


def encode(text: str, vocabulary: list[str]) -> np.ndarray:
    """`text` as int64 ids into `vocabulary` (every character must be in it)."""
    index = {char: i for i, char in enumerate(vocabulary)}
    return np.array([index[char] for char in text], dtype=np.int64)


def split_text(text: str, train_fraction: float = 0.9) -> tuple[str, str]:
    """(train, validation): the first `train_fraction` of the characters, and the rest."""
    cut = int(len(text) * train_fraction)
    return text[:cut], text[cut:]


def _window_nats(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed cross-entropy (nats) of `targets` (B, T) under `logits` (B, T, V), in float64."""
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return float((log_norm - picked).sum())


def validation_loss(logits_fn: LogitsFn, ids: np.ndarray, block: int, batch: int = 64) -> float:
    """Mean cross-entropy in nats per token over all of `ids` (see the module docstring).

    >>> uniform = lambda x: np.zeros((*x.shape, 7), np.float32)
    >>> round(validation_loss(uniform, np.arange(100) % 7, block=8), 6) == round(math.log(7), 6)
    True
    """
    ids = np.asarray(ids, dtype=np.int64)
    predicted = len(ids) - 1
    if predicted < 1:
        raise ValueError("validation_loss needs at least two ids")
    full = predicted // block
    inputs = ids[: full * block].reshape(full, block)
    targets = ids[1 : full * block + 1].reshape(full, block)
    nats = 0.0
    for start in range(0, full, batch):
        rows = slice(start, start + batch)
        nats += _window_nats(logits_fn(inputs[rows]), targets[rows])
    if predicted > full * block:  # the last, shorter window
        tail = slice(full * block, predicted)
        nats += _window_nats(logits_fn(ids[None, tail]), ids[None, tail.start + 1 :])
    return nats / predicted


def bits_per_character(loss: float) -> float:
    """A character-level loss in nats per token as bits per character."""
    return loss / math.log(2)


def _self_check() -> None:
    """Uniform logits give ln V; a perfect next-token predictor gives ~0 and sees every
    position once (which checks the one-token shift and the last partial window)."""
    vocab, length, block = 11, 1000, 64  # 999 predictions: 15 full windows + 39
    ids = np.arange(length) % vocab
    uniform = validation_loss(lambda x: np.zeros((*x.shape, vocab), np.float32), ids, block)
    assert abs(uniform - math.log(vocab)) < 1e-9, uniform
    assert abs(bits_per_character(uniform) - math.log2(vocab)) < 1e-9
    seen = []

    def oracle(x: np.ndarray) -> np.ndarray:
        seen.append(x.size)
        return 50.0 * np.eye(vocab, dtype=np.float32)[(x + 1) % vocab]

    assert validation_loss(oracle, ids, block, batch=4) < 1e-12
    assert sum(seen) == length - 1 and len(seen) == 4 + 1, seen
    assert abs(validation_loss(oracle, ids[:2], block) - 0.0) < 1e-12
    vocabulary = char_vocabulary("hello world")
    assert "".join(vocabulary) == " dehlorw"
    assert encode("low", vocabulary).tolist() == [4, 5, 7]
    assert split_text("abcdefghij", 0.9) == ("abcdefghi", "j")
    print(f"lm_eval self-check passed: uniform loss {uniform:.6f} = ln {vocab}")


if __name__ == "__main__":
    import doctest

    doctest.testmod(raise_on_error=True)
    _self_check()
