"""Pretrained KerasHub text classifiers (BERT, DistilBERT, DeBERTaV3, RoBERTa, ...) from a
preset name, a kaggle:// or hf:// handle or a local preset directory, for the classify-text
recipe, and a small random BERT preset to try that path offline.

`HubTextClassifier` holds the preset's `TextClassifier` with its own preprocessor and
tokenizer, so raw strings go in and probabilities come out, as graph ops: it trains with
`model.fit` on (strings, labels) batches, saves to model.keras and traces in a tf.function
on a tf.string tensor (the SavedModel export). The preset's classification head is new
(`num_classes` = the recipe's classes); every other weight is the preset's.
"""

from __future__ import annotations

from pathlib import Path

import keras

from dltoolkit.core import presets
from dltoolkit.core.errors import ConfigError

BERT_SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]


@keras.saving.register_keras_serializable(package="dltoolkit")
class HubTextClassifier(keras.Model):
    """A KerasHub TextClassifier with its preprocessor: raw strings (B,) -> class
    probabilities (B, classes) float32, softmax (one class a text) or sigmoid (multi_label)."""

    def __init__(self, classifier, multi_label=False, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.multi_label = multi_label

    def build(self, input_shape=None):
        """Nothing to build: the classifier's weights exist from the start."""
        self.built = True

    @property
    def input_dtype(self):
        """Strings: what Keras's default SavedModel signature declares, and inputs become."""
        return "string"

    def call(self, texts, training=None):
        logits = self.classifier(self.classifier.preprocessor(texts), training=training)
        logits = keras.ops.cast(logits, "float32")
        if self.multi_label:
            return keras.ops.sigmoid(logits)
        return keras.ops.softmax(logits, axis=-1)

    def compute_output_spec(self, texts, training=None):
        return keras.KerasTensor((texts.shape[0], self.classifier.num_classes), "float32")

    def get_config(self):
        return {
            **super().get_config(),
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "multi_label": self.multi_label,
        }

    @classmethod
    def from_config(cls, config):
        # Uncompiled, as load_text_classifier made it (a KerasHub task compiles itself by
        # default, and its optimizer then has no saved variables to load).
        config["classifier"]["config"]["compile"] = False
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)


def load_text_classifier(
    preset: str, classes: int, multi_label: bool = False, max_length: int = 128
) -> HubTextClassifier:
    """The TextClassifier of `preset` with a new head of `classes` outputs, its preprocessor
    padding and cutting to `max_length` tokens, wrapped as a HubTextClassifier."""
    import keras_hub

    presets.check_preset(preset, keras_hub.models.TextClassifier, "bert_tiny_en_uncased")
    classifier = presets.load_preset(
        keras_hub.models.TextClassifier, preset, num_classes=classes, compile=False
    )
    window = getattr(classifier.backbone, "max_sequence_length", None)
    if window is not None and max_length > window:
        raise ConfigError(
            f"max_length {max_length} is longer than preset '{preset}' reads "
            f"({window} tokens); pass --max-length {window} or less"
        )
    classifier.preprocessor.sequence_length = max_length
    return HubTextClassifier(classifier, multi_label=multi_label)


def random_text_classifier_preset(
    directory,
    texts: list[str],
    classes: int = 2,
    vocabulary_size: int = 300,
    hidden_dim: int = 32,
    layers: int = 1,
    heads: int = 2,
    max_length: int = 64,
) -> Path:
    """Save a small randomly initialised BERT TextClassifier (a lower-cased WordPiece
    vocabulary learned on `texts`) as a preset directory: the pretrained path end to end
    without downloading weights."""
    import keras_hub
    import tensorflow as tf

    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(list(texts)).batch(64),
        vocabulary_size,
        lowercase=True,
        reserved_tokens=BERT_SPECIAL_TOKENS,
    )
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    backbone = presets.small_backbone(
        keras_hub.models.BertBackbone, tokenizer, hidden_dim, layers, heads, max_length
    )
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=max_length
    )
    classifier = keras_hub.models.BertTextClassifier(backbone, classes, preprocessor=preprocessor)
    classifier.save_to_preset(str(directory))
    return Path(directory)
