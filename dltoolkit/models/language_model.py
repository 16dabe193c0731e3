"""A language model's model.keras: its tokenizer and the decoder it feeds (dltoolkit's GPT
or a KerasHub backbone), with generation from raw prompt strings as graph ops (the
SavedModel's serving loop)."""

from __future__ import annotations

import keras
import tensorflow as tf

from dltoolkit.data.lm_batches import PAD
from dltoolkit.layers.text import ByteBPE, Characters, character_vocabulary, learn_byte_bpe
from dltoolkit.models.sampling import generate_ids

END_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", END_TOKEN)  # character vocabularies start with these


@keras.saving.register_keras_serializable("dltoolkit")
class LanguageModel(keras.Model):
    """Tokenizer + GPT: called like the GPT (ids -> next-token logits); `generate` maps
    prompt strings to generated strings. `end_token` closes documents and ends generation;
    `start_token` opens every prompt (None: the end token). Pretrained tokenizers bring their
    own, e.g. Gemma's "<eos>" and "<bos>"."""

    def __init__(self, tokenizer, network, end_token=END_TOKEN, start_token=None, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer, self.network = tokenizer, network
        self.end_token, self.start_token = end_token, start_token

    @property
    def end_id(self) -> int:
        return self.tokenizer.token_to_id(self.end_token)

    @property
    def start_id(self) -> int:
        return self.tokenizer.token_to_id(self.start_token or self.end_token)

    @property
    def context(self) -> int:
        return self.network.context

    @property
    def jit_compile(self) -> bool:
        return bool(self._jit_compile)

    @jit_compile.setter
    def jit_compile(self, value):
        # Keras refuses XLA to a model holding a layer without it (the string tokenizer),
        # but the compiled steps run only the network: ids in, logits out.
        self._jit_compile = bool(value)

    def build(self, input_shape):
        if not self.network.built:  # loading builds it from its own config first
            self.network.build(input_shape)

    def call(self, ids, training=None):
        return self.network(ids, training=training)

    def prompt_ids(self, text):
        """Prompt strings (B,) -> dense ids (B, P), right-padded, and their lengths (B,). Each
        starts with the start token (by default the end-of-text token, as a document does in
        training: the token before it closed the previous one), so an empty prompt starts a
        new document."""
        tokens = self.tokenizer(tf.convert_to_tensor(text, tf.string))
        start = tf.fill([tokens.nrows(), 1], tf.cast(self.start_id, tokens.dtype))
        tokens = tf.concat([tf.RaggedTensor.from_tensor(start), tokens], axis=1)
        return tokens.to_tensor(PAD), tf.cast(tokens.row_lengths(), tf.int32)

    def generate(self, text, max_new_tokens, temperature, top_k, top_p, penalty, seed):
        """Prompt strings (B,) -> generated continuations (B,) (without the prompt), as graph
        ops; generation ends at the end-of-text token."""
        ids, lengths = self.prompt_ids(text)
        new_ids, new_lengths = generate_ids(
            self.network,
            ids,
            lengths,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=penalty,
            seed=seed,
            end_id=self.end_id,
        )
        return self.tokenizer.detokenize(tf.RaggedTensor.from_tensor(new_ids, lengths=new_lengths))

    def get_config(self):
        return {
            **super().get_config(),
            "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
            "network": keras.saving.serialize_keras_object(self.network),
            "end_token": self.end_token,
            "start_token": self.start_token,
        }

    @classmethod
    def from_config(cls, config):
        parts = {
            k: keras.saving.deserialize_keras_object(config[k]) for k in ("tokenizer", "network")
        }
        return cls(**{**config, **parts})


def learn_vocabulary(texts: list[str], tokens: str, size: int):
    """(vocabulary, merges) learned on `texts`: the special tokens then every character
    (merges None), or a byte-level BPE of `size` tokens whose end token is END_TOKEN."""
    if tokens == "characters":
        return character_vocabulary(texts, SPECIAL_TOKENS), None
    vocabulary, merges = learn_byte_bpe(texts, size, end_token=END_TOKEN)
    return sorted(vocabulary, key=vocabulary.get), merges


def make_tokenizer(vocabulary: list[str], merges: list[str] | None):
    """The tokenizer layer of a learned vocabulary (characters when there are no merges)."""
    if merges is None:
        return Characters(vocabulary)
    return ByteBPE({token: i for i, token in enumerate(vocabulary)}, merges)


def cut_at_stops(text, stops: list[str]):
    """Strings (B,) cut before the first occurrence of each stop string, as graph ops."""
    for stop in stops:
        text = tf.strings.split(text, sep=stop).to_tensor("")[:, 0]
    return text
