"""The language model tokenizers: characters and byte-level BPE learned on the data, round
trips eager, traced and after keras save/load."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dltoolkit.core.errors import ConfigError
from dltoolkit.layers.text import ByteBPE, Characters, character_vocabulary, learn_byte_bpe

END = "<|endoftext|>"
TRAIN = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
    "First Citizen:\nYou are all resolved rather to die than to famish?\n",
    "Größe und Übermaß: naïve café, 東京 and emoji 🙂 too.\n",
] * 4
SAMPLES = [
    "Before we proceed, hear me speak.",
    "naïve café — 東京 🙂 (not all seen in training: ж, ß)",
    "tabs\tand  double  spaces\n\nand newlines\n",
    "",
]


@keras.saving.register_keras_serializable(package="dltoolkit_tests")
class RoundTrip(keras.Model):
    """A model holding a tokenizer: strings -> ids -> strings."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(**kwargs)
        if isinstance(tokenizer, dict):
            tokenizer = keras.saving.deserialize_keras_object(tokenizer)
        self.tokenizer = tokenizer

    def call(self, strings):
        return self.tokenizer.detokenize(self.tokenizer(strings))

    def get_config(self):
        tokenizer = keras.saving.serialize_keras_object(self.tokenizer)
        return {**super().get_config(), "tokenizer": tokenizer}


@pytest.fixture(scope="module")
def byte_bpe():
    vocabulary, merges = learn_byte_bpe(TRAIN, 300)
    return ByteBPE(vocabulary, merges)


@pytest.fixture(scope="module")
def characters():
    return Characters(character_vocabulary(TRAIN + SAMPLES))


def decoded(strings) -> list[str]:
    return [s.decode("utf-8") for s in np.asarray(strings).tolist()]


def test_learn_byte_bpe_has_every_byte_the_end_token_and_merges():
    vocabulary, merges = learn_byte_bpe(TRAIN, 290)
    assert vocabulary[END] == 0 and len(vocabulary) == 290
    assert sorted(vocabulary.values()) == list(range(290))
    assert len(merges) == 290 - 257 and all(len(m.split(" ")) == 2 for m in merges)
    assert "Ġ" in vocabulary and "Ċ" in vocabulary  # GPT-2's bytes for space and newline
    with pytest.raises(ConfigError, match="at least 257"):
        learn_byte_bpe(TRAIN, 100)


def test_character_vocabulary_puts_specials_first():
    vocabulary = character_vocabulary(["ba", "ab!"])
    assert vocabulary == ["[PAD]", "[UNK]", END, "!", "a", "b"]
    assert Characters(vocabulary).token_to_id(END) == 2


@pytest.mark.parametrize("name", ["byte_bpe", "characters"])
def test_round_trip_eager_and_traced(name, request):
    tokenizer = request.getfixturevalue(name)
    ids = tokenizer(SAMPLES)  # a list of Python strings, or a string tensor
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.to_list() == tokenizer(tf.constant(SAMPLES)).to_list()
    scalar = tokenizer("hear me")  # one string -> dense ids
    assert scalar.numpy().tolist() == tokenizer(["hear me"])[0].numpy().tolist()
    assert decoded(tokenizer.detokenize(ids)) == SAMPLES
    traced = tf.function(lambda s: tokenizer.detokenize(tokenizer(s)))
    assert decoded(traced(tf.constant(SAMPLES))) == SAMPLES
    assert int(tf.reduce_max(ids.flat_values)) < tokenizer.vocabulary_size()


@pytest.mark.parametrize("name", ["byte_bpe", "characters"])
def test_detokenize_drops_special_tokens_from_padded_ids(name, request):
    tokenizer = request.getfixturevalue(name)
    end = tokenizer.token_to_id(END)
    ids = tokenizer(tf.constant(["hear me", "speak"])).to_tensor(default_value=end)
    padded = tf.concat([ids, tf.fill([2, 3], end)], axis=1)  # (B, L) as a sampler returns
    assert decoded(tokenizer.detokenize(padded)) == ["hear me", "speak"]
    traced = tf.function(tokenizer.detokenize)
    assert decoded(traced(padded)) == ["hear me", "speak"]


def test_byte_bpe_compresses_text_it_learned(byte_bpe):
    text = TRAIN[0]
    assert int(byte_bpe(tf.constant([text])).row_lengths()[0]) < len(text.encode()) * 0.7


def test_byte_bpe_never_splits_the_end_token(byte_bpe):
    end = byte_bpe.token_to_id(END)
    assert end in byte_bpe(tf.constant(["speak" + END + "hear"])).flat_values.numpy().tolist()


@pytest.mark.parametrize("name", ["byte_bpe", "characters"])
def test_round_trip_after_keras_save_and_load(name, request, tmp_path):
    tokenizer = request.getfixturevalue(name)
    model = RoundTrip(tokenizer)
    before = tokenizer(tf.constant(SAMPLES))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.tokenizer) is type(tokenizer)
    after = loaded.tokenizer(tf.constant(SAMPLES))
    assert after.to_list() == before.to_list()
    assert decoded(loaded(tf.constant(SAMPLES))) == SAMPLES
    assert loaded.tokenizer.token_to_id(END) == tokenizer.token_to_id(END)
