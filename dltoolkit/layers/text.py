"""Text preprocessing layers saved inside model.keras."""

from __future__ import annotations

import keras
import keras_hub


@keras.saving.register_keras_serializable(package="dltoolkit")
class WordPieces(keras_hub.tokenizers.WordPieceTokenizer):
    """A lower-casing WordPiece tokenizer (strings -> int32 ids) on TensorFlow Text ops.

    Its vocabulary is saved as an asset of model.keras. Unlike KerasHub's, it runs the
    TensorFlow ops eagerly too, after loading as well, so it gives the same ids everywhere.
    """

    def __init__(self, vocabulary=None, **kwargs):
        kwargs = {"lowercase": True, "oov_token": "[UNK]", "dtype": "int32", **kwargs}
        super().__init__(vocabulary=vocabulary, _allow_python_workflow=False, **kwargs)
