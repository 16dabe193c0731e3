"""Text preprocessing layers saved inside model.keras."""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf


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
