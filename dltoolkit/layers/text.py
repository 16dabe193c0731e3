"""Text preprocessing layers saved inside model.keras (WordPiece, character and byte-level
BPE tokenizers) and the vocabularies they are built from."""

from __future__ import annotations

import json

import keras
import keras_hub
import tensorflow as tf

from dltoolkit.core.errors import ConfigError


@keras.saving.register_keras_serializable(package="dltoolkit")
class WordPieces(keras_hub.tokenizers.WordPieceTokenizer):
    """A lower-casing WordPiece tokenizer (strings -> int32 ids) on TensorFlow Text ops.

    Its vocabulary is saved as an asset of model.keras. Unlike KerasHub's, it runs the
    TensorFlow ops eagerly too, after loading as well, so it gives the same ids everywhere.
    """

    def __init__(self, vocabulary=None, **kwargs):
        kwargs = {"lowercase": True, "oov_token": "[UNK]", "dtype": "int32", **kwargs}
        super().__init__(vocabulary=vocabulary, _allow_python_workflow=False, **kwargs)


def character_vocabulary(texts, specials=("[PAD]", "[UNK]", "<|endoftext|>")) -> list[str]:
    """The vocabulary of a `Characters` tokenizer: `specials` first, then every character
    of `texts`, sorted."""
    return list(specials) + sorted({ch for text in texts for ch in text} - set(specials))


@keras.saving.register_keras_serializable(package="dltoolkit")
class Characters(keras.layers.Layer):
    """A character tokenizer (strings -> ragged int32 ids, one per Unicode character) with
    `detokenize` (ids -> strings), on TensorFlow ops; its vocabulary (special tokens first,
    then characters) is part of its config. Characters outside it become the `oov_token`."""

    def __init__(self, vocabulary=(), oov_token="[UNK]", **kwargs):
        super().__init__(**{"trainable": False, **kwargs})
        self._allow_non_tensor_positional_args = True  # a list of Python strings, as KerasHub's
        self.vocabulary, self.oov_token = list(vocabulary), oov_token
        self._lookup = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.vocabulary or [""], tf.string),
                tf.range(max(1, len(self.vocabulary)), dtype=tf.int32),
            ),
            default_value=self.vocabulary.index(oov_token) if oov_token in self.vocabulary else 0,
        )
        self._pieces = tf.constant(
            [t if len(t) == 1 else "" for t in self.vocabulary] or [""], tf.string
        )

    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def token_to_id(self, token: str) -> int:
        return self.vocabulary.index(token)

    def call(self, text):
        chars = tf.strings.unicode_split(tf.convert_to_tensor(text, tf.string), "UTF-8")
        return tf.ragged.map_flat_values(self._lookup.lookup, chars)

    def detokenize(self, ids):
        """Ids (ragged or dense (B, L)) -> strings (B,); special tokens are dropped."""
        return tf.strings.reduce_join(tf.gather(self._pieces, ids), axis=-1)

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary, "oov_token": self.oov_token}


# -- byte-level BPE -------------------------------------------------------------------------

END_OF_TEXT = "<|endoftext|>"
BYTES = 256  # every byte has a token of its own, so any text can be encoded


def learn_byte_bpe(
    texts, vocabulary_size: int, end_token=END_OF_TEXT, *, special_tokens=None
) -> tuple[dict[str, int], list[str]]:
    """(vocabulary {token: id}, merges ["a b", ...]) of a byte-level BPE (GPT-2's scheme)
    learned on `texts` with the `tokenizers` library: the special tokens first (`end_token`
    alone unless `special_tokens` lists them all, in id order), the 256 byte tokens, then
    merges up to `vocabulary_size` entries (fewer when the texts run out of pairs)."""
    from tokenizers import ByteLevelBPETokenizer

    special_tokens = (end_token,) if special_tokens is None else tuple(special_tokens)
    smallest = BYTES + len(special_tokens)
    if vocabulary_size < smallest:
        raise ConfigError(
            f"a byte-level BPE vocabulary needs at least {smallest} entries (256 bytes and "
            f"{len(special_tokens)} special token(s)); got {vocabulary_size}"
        )
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=vocabulary_size, special_tokens=list(special_tokens), show_progress=False
    )
    model = json.loads(bpe.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


@keras.saving.register_keras_serializable(package="dltoolkit")
class ByteBPE(keras_hub.tokenizers.BytePairTokenizer):
    """A byte-level BPE tokenizer: strings -> ragged int32 ids, and `detokenize` ids ->
    strings with the special tokens dropped, on TensorFlow ops (eagerly too, and after
    loading, so it gives the same ids everywhere). `end_token` closes every document and
    is never split; the vocabulary and merges are assets of model.keras."""

    def __init__(self, vocabulary=None, merges=None, end_token=END_OF_TEXT, **kwargs):
        self._add_special_token(end_token, "end_token")
        kwargs = {"dtype": "int32", "unsplittable_tokens": [end_token], **kwargs}
        super().__init__(vocabulary, merges, _allow_python_workflow=False, **kwargs)
        self._tokenize_graph = self._detokenize_graph = None

    def tokenize(self, strings):
        """Strings (B,) -> ragged int32 ids (B, None)."""
        if self._tokenize_graph is None:  # one trace: KerasHub's eager merge loop retraces
            self._tokenize_graph = tf.function(
                super().tokenize, input_signature=[tf.TensorSpec([None], tf.string)]
            )
        strings = tf.convert_to_tensor(strings, tf.string)
        if strings.shape.rank == 0:
            return self._tokenize_graph(strings[None])[0]
        return self._tokenize_graph(strings)

    def detokenize(self, ids):
        """Ids (ragged, or dense (B, L)) -> strings (B,), special tokens left out."""
        if self._detokenize_graph is None:  # eager KerasHub outputs would be Python lists
            self._detokenize_graph = tf.function(self._detokenize_ordinary, reduce_retracing=True)
        return self._detokenize_graph(ids)

    def _detokenize_ordinary(self, ids):
        ids = ids if isinstance(ids, tf.RaggedTensor) else tf.convert_to_tensor(ids)
        special = tf.constant(sorted(self.special_token_ids), ids.dtype)

        def ordinary(values):
            return tf.reduce_all(tf.not_equal(values[..., None], special), axis=-1)

        ragged = isinstance(ids, tf.RaggedTensor)
        keep = tf.ragged.map_flat_values(ordinary, ids) if ragged else ordinary(ids)
        return super().detokenize(tf.ragged.boolean_mask(ids, keep))

    def get_config(self):
        config = {**super().get_config(), "end_token": self.end_token}
        config.pop("unsplittable_tokens", None)  # always [end_token]
        return config
