"""Text generation for encoder-decoder models: greedy, beam search, top-k and top-p sampling,
with minimum length, a repetition penalty and n-gram blocking, all as graph ops.

KerasHub's samplers run the loop; `ConstrainedSampler` applies the length and repetition
rules to the logits before each choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import keras_hub
from keras import ops

from dltoolkit.core.config import check_choice
from dltoolkit.core.errors import ConfigError
from dltoolkit.specs.summarize import DECODINGS

_BANNED = -1e9


@dataclass(frozen=True)
class Decoding:
    """How to choose each next token."""

    strategy: str = "greedy"
    beams: int = 4
    top_k: int = 40
    top_p: float = 0.9
    temperature: float = 1.0
    min_length: int = 0
    max_length: int = 60
    repetition_penalty: float = 1.0
    no_repeat_ngram: int = 0
    seed: int = 0

    def check(self) -> None:
        check_choice("decoding", self.strategy, DECODINGS)
        if self.max_length < 1:
            raise ConfigError(f"max_length must be at least 1 token, got {self.max_length}")
        if self.min_length < 0 or self.min_length > self.max_length:
            raise ConfigError(
                f"max_length {self.max_length} is below min_length {self.min_length}; "
                "raise --max-length or lower --min-length"
            )
        if self.beams < 1 or self.top_k < 1 or not 0 < self.top_p <= 1 or self.temperature <= 0:
            raise ConfigError(
                "beams and top_k must be at least 1, top_p in (0, 1] and temperature > 0"
            )
        if self.repetition_penalty < 1 or self.no_repeat_ngram < 0 or self.no_repeat_ngram == 1:
            raise ConfigError(
                "repetition_penalty must be >= 1 (1: off) and no_repeat_ngram 0 (off) or >= 2"
            )

    def sampler(self) -> keras_hub.samplers.Sampler:
        """The KerasHub sampler that implements `strategy`."""
        if self.strategy == "beam":
            return keras_hub.samplers.BeamSampler(
                num_beams=self.beams, temperature=self.temperature
            )
        if self.strategy == "top-k":
            return keras_hub.samplers.TopKSampler(
                k=self.top_k, seed=self.seed, temperature=self.temperature
            )
        if self.strategy == "top-p":
            return keras_hub.samplers.TopPSampler(
                p=self.top_p, seed=self.seed, temperature=self.temperature
            )
        return keras_hub.samplers.GreedySampler(temperature=self.temperature)


class ConstrainedSampler(keras_hub.samplers.Sampler):
    """A KerasHub sampler for `decoding.strategy` whose logits first obey the length and
    repetition rules; usable as any Seq2SeqLM's sampler and by the from-scratch model.

    Positions from the call's starting `index` on are the summary: the end tokens are banned
    before `min_length` of them, tokens already generated are penalised (CTRL-style division
    of their logits), and a token that would repeat an n-gram is banned.
    """

    def __init__(self, decoding: Decoding, end_ids: list[int], vocabulary_size: int):
        super().__init__(temperature=decoding.temperature)
        self.inner = decoding.sampler()
        self.decoding, self.end_ids, self.vocabulary_size = decoding, list(end_ids), vocabulary_size

    @property
    def variables(self):
        return self.inner.variables

    def __call__(
        self,
        next,
        prompt,
        cache=None,
        index=0,
        mask=None,
        stop_token_ids=None,
        hidden_states=None,
        model=None,
        **kwargs,
    ):
        first = index

        def constrained(prompt, cache, index):
            logits, hidden, cache = next(prompt, cache, index)
            return self.constrain(ops.cast(logits, "float32"), prompt, index, first), hidden, cache

        return self.inner(
            constrained,
            prompt,
            cache=cache,
            index=index,
            mask=mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=model,
            **kwargs,
        )

    def constrain(self, logits, prompt, index, first):
        d, vocabulary = self.decoding, self.vocabulary_size
        if d.min_length > 0:
            ends = _token_set(
                ops.convert_to_tensor([self.end_ids]),
                ops.ones((1, len(self.end_ids)), "bool"),
                vocabulary,
            )
            logits = ops.where(ops.logical_and(ends, index - first < d.min_length), _BANNED, logits)
        if d.repetition_penalty > 1:
            positions = ops.arange(ops.shape(prompt)[1])[None, :]
            generated = ops.logical_and(positions >= first, positions < index)
            seen = _token_set(prompt, ops.broadcast_to(generated, ops.shape(prompt)), vocabulary)
            penalised = ops.where(
                logits > 0, logits / d.repetition_penalty, logits * d.repetition_penalty
            )
            logits = ops.where(seen, penalised, logits)
        if d.no_repeat_ngram:
            banned = _repeated_ngram_ends(prompt, index, first, d.no_repeat_ngram, vocabulary)
            logits = ops.where(banned, _BANNED, logits)
        return after_end(logits, prompt, index, first, self.end_ids)


def after_end(logits, prompt, index, first: int, end_ids):
    """`logits` (B, V) where rows whose `prompt` holds an end token in [first, index) may only
    repeat the first end token (log-probability 0): a finished beam keeps its score."""
    positions = ops.arange(ops.shape(prompt)[1])[None, :]
    generated = ops.logical_and(positions >= first, positions < index)
    is_end = ops.any(ops.stack([ops.equal(prompt, end) for end in end_ids]), axis=0)
    ended = ops.any(ops.logical_and(is_end, generated), axis=1, keepdims=True)
    only_end = ops.arange(ops.shape(logits)[-1])[None, :] == end_ids[0]
    forced = ops.cast(ops.where(only_end, 0.0, _BANNED), logits.dtype)
    return ops.where(ended, forced, logits)


def _token_set(tokens, valid, vocabulary_size):
    """(B, V) booleans: which ids appear in `tokens` (B, N) where `valid` (B, N)."""
    batch, n = ops.shape(tokens)[0], ops.shape(tokens)[1]
    rows = ops.repeat(ops.arange(batch)[:, None], n, axis=1)
    indices = ops.stack(
        [ops.reshape(rows, [-1]), ops.reshape(ops.cast(tokens, "int32"), [-1])], axis=1
    )
    counts = ops.scatter(
        indices, ops.reshape(ops.cast(valid, "float32"), [-1]), (batch, vocabulary_size)
    )
    return counts > 0


def _repeated_ngram_ends(prompt, index, first, n, vocabulary_size):
    """(B, V): tokens that would complete an n-gram already generated since `first`."""
    length = ops.shape(prompt)[1]
    starts = ops.arange(length - n + 1)[None, :]
    match = ops.logical_and(starts >= first, starts + n - 1 <= index - 1)
    tail_start = ops.maximum(index - (n - 1), 0)
    for k in range(n - 1):
        window = prompt[:, k : length - n + 1 + k]
        last = ops.take(prompt, tail_start + k, axis=1)[:, None]
        match = ops.logical_and(match, ops.equal(window, last))
    return _token_set(prompt[:, n - 1 :], match, vocabulary_size)


def cut_at_end(ids, end_id: int, pad_id: int):
    """Generated ids (B, L) without the start token, with everything from the first end token
    on replaced by padding."""
    ids = ids[:, 1:]
    ended = ops.cumsum(ops.cast(ops.equal(ids, end_id), "int32"), axis=1) > 0
    return ops.where(ended, pad_id, ids)


def decode_ids(network, source, sampler, max_length: int, bos: int, eos: int, pad: int):
    """The decoding loop of any encoder-decoder with `start(source, prompt) -> cache` and
    `step(token, index, cache) -> (logits, cache)`: `source` (a tensor or a dict of tensors,
    batch first) -> generated ids (B, max_length), padding from the end token on. After its
    end token a row only repeats it, so beam search ranks finished hypotheses by their own
    score. Graph ops."""
    batch = ops.shape(keras.tree.flatten(source)[0])[0]
    prompt = ops.concatenate(
        [ops.full([batch, 1], bos, "int32"), ops.full([batch, max_length], pad, "int32")], axis=1
    )
    cache = network.start(source, prompt)

    def next_(prompt, cache, index):
        logits, cache = network.step(prompt[:, index - 1 : index], index - 1, cache)
        return after_end(ops.cast(logits, "float32"), prompt, index, 1, [eos]), None, cache

    fixed = ops.arange(max_length + 1)[None, :] < 1
    fixed = ops.broadcast_to(fixed, ops.shape(prompt))
    ids = sampler(next_, prompt, cache=cache, index=1, mask=fixed, stop_token_ids=[eos])
    return cut_at_end(ids, eos, pad)
