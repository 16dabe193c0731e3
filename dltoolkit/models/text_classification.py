"""From-scratch text classifiers: raw strings (B,) in, float32 probabilities (B, classes) out
(softmax, or per-label sigmoid when `multi_label`), so a saved model.keras alone classifies
text.

- `FastTextClassifier`: fastText-style, hashed word n-grams averaged, the fast baseline.
- `TransformerClassifier`: BERT-style pre-norm encoder over WordPiece ids, mean or [CLS]
  pooling; `mlm_pretrainer` pretrains its encoder as a masked language model.
- `ConvTextClassifier`: Kim-CNN-style parallel convolutions over WordPiece ids.

The last two read text through `TextIds` ([CLS] + word pieces, cut to the window by a named
policy) and score long texts window by window with `chunk_probabilities`.
"""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf
from keras import ops

from dltoolkit.core.config import check_choice
from dltoolkit.core.errors import ConfigError
from dltoolkit.layers.text import WordPieces
from dltoolkit.models.seq2seq import prenorm_blocks

CLASSIFIER_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, CLS_ID, MASK_ID = 0, 2, 4
TRUNCATIONS = ("head", "head+tail")
POOLINGS = ("mean", "cls")


def classification_loss(multi_label: bool) -> keras.losses.Loss:
    """Cross-entropy on probabilities: sparse categorical on integer labels, or binary on
    multi-hot float labels when `multi_label`."""
    if multi_label:
        return keras.losses.BinaryCrossentropy()
    return keras.losses.SparseCategoricalCrossentropy()


# -- strings -> ids -------------------------------------------------------------------------


def _flat(tokens: tf.RaggedTensor):
    """The tokens as flat int32 vectors: ids, row of each, position in its row, and the
    length of its row."""
    rows = tf.cast(tokens.value_rowids(), tf.int32)
    starts = tf.cast(tokens.row_starts(), tf.int32)
    lengths = tf.cast(tokens.row_lengths(), tf.int32)
    positions = tf.range(tf.size(rows)) - tf.gather(starts, rows)
    return tf.cast(tokens.values, tf.int32), rows, positions, tf.gather(lengths, rows)


def _truncation(positions, lengths, keep: int, truncation: str):
    """Which tokens a row of at most `keep` keeps (its first ones, "head", or the first and
    last halves of rows that are too long, "head+tail"), and their places in it."""
    tail = keep // 2 if truncation == "head+tail" else 0
    from_end = lengths - positions
    at_tail = (lengths > keep) & (from_end <= tail)
    kept = (positions < keep - tail) | at_tail | (lengths <= keep)
    return kept, tf.where(at_tail, keep - from_end, positions)


@keras.saving.register_keras_serializable(package="dltoolkit")
class TextIds(keras.layers.Layer):
    """Strings (B,) -> int32 ids (B, L), L <= max_length: [CLS], then the WordPiece ids cut to
    the window by `truncation` (head or head+tail), padded with [PAD] (0) to the batch's
    longest row. The vocabulary must start with CLASSIFIER_TOKENS."""

    def __init__(self, vocabulary, max_length=128, truncation="head+tail", **kwargs):
        super().__init__(**{"trainable": False, **kwargs})
        check_choice("truncation", truncation, TRUNCATIONS)
        if list(vocabulary[: len(CLASSIFIER_TOKENS)]) != list(CLASSIFIER_TOKENS):
            raise ConfigError(f"the vocabulary must start with {', '.join(CLASSIFIER_TOKENS)}")
        if max_length < 2:
            raise ConfigError(f"max_length must be at least 2, got {max_length}")
        self.vocabulary, self.max_length, self.truncation = list(vocabulary), max_length, truncation
        self.tokenizer = WordPieces(self.vocabulary)

    def word_pieces(self, strings) -> tf.RaggedTensor:
        """Ragged word-piece ids of `strings` (eagerly KerasHub answers with lists)."""
        tokens = self.tokenizer(tf.convert_to_tensor(strings, tf.string))
        if isinstance(tokens, tf.RaggedTensor):
            return tokens
        return tf.ragged.constant(tokens, tf.int32, ragged_rank=1)

    def _rows(self, ids, rows, columns, count):
        """(count, L) ids: [CLS], then `ids` at (`rows`, 1 + `columns`), [PAD] after; L is the
        longest row's length (at most max_length), so short texts cost little."""
        width = 2 + tf.reduce_max(tf.concat([columns, [-1]], axis=0))
        indices = tf.stack([rows, columns + 1], axis=1)
        placed = tf.scatter_nd(indices, ids, tf.stack([count, width]))
        return placed + CLS_ID * tf.one_hot(0, width, dtype=tf.int32)

    def call(self, strings):
        tokens = self.word_pieces(strings)
        ids, rows, positions, lengths = _flat(tokens)
        kept, columns = _truncation(positions, lengths, self.max_length - 1, self.truncation)
        picked = [tf.boolean_mask(t, kept) for t in (ids, rows, columns)]
        return self._rows(*picked, tf.cast(tokens.nrows(), tf.int32))

    def windows(self, strings):
        """Every text cut into consecutive windows of max_length - 1 tokens, each with [CLS]:
        ids (N, L <= max_length) and `owner` (N,) int32, the index of each window's text. A text
        without tokens still gets one window."""
        tokens = self.word_pieces(strings)
        ids, rows, positions, _ = _flat(tokens)
        size = self.max_length - 1
        counts = tf.maximum(1, (tf.cast(tokens.row_lengths(), tf.int32) + size - 1) // size)
        windows = tf.gather(tf.cumsum(counts, exclusive=True), rows) + positions // size
        owner = tf.repeat(tf.range(tf.size(counts)), counts)
        return self._rows(ids, windows, positions % size, tf.reduce_sum(counts)), owner

    def compute_output_shape(self, input_shape):
        return (*input_shape, None)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary,
            "max_length": self.max_length,
            "truncation": self.truncation,
        }


# -- the models -----------------------------------------------------------------------------


class _Classifier(keras.Model):
    """A dropout + dense head giving float32 probabilities over `features(strings)`;
    subclasses set `self.settings` (their config) and define `features` and `build_body`."""

    def __init__(self, classes, multi_label=False, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        if classes < 1:
            raise ConfigError(f"a classifier needs at least one class, got {classes}")
        self.head_dropout = keras.layers.Dropout(dropout, name="head_dropout")
        self.head = keras.layers.Dense(
            classes,
            activation="sigmoid" if multi_label else "softmax",
            dtype="float32",
            name="head",
        )

    @property
    def input_dtype(self):
        """Raw strings: what Keras's default SavedModel signature feeds the model."""
        return "string"

    def get_config(self):
        return {**super().get_config(), **self.settings}

    def build(self, input_shape=None):
        self.head.build((None, self.build_body()))
        self.built = True

    def probabilities(self, features, training=None):
        """Class probabilities (B, classes) float32 from the text features (B, F)."""
        return self.head(self.head_dropout(features, training=training))

    def call(self, strings, training=None):
        return self.probabilities(self.features(strings, training=training), training=training)


@keras.saving.register_keras_serializable(package="dltoolkit")
class FastTextClassifier(_Classifier):
    """fastText-style: lower-cased words and their n-grams up to `ngrams` words, hashed into
    `buckets` embeddings of width `dim`, averaged, then dropout and a dense layer."""

    def __init__(
        self, classes, multi_label=False, ngrams=2, buckets=100_000, dim=64, dropout=0.1, **kwargs
    ):
        super().__init__(classes, multi_label, dropout, **kwargs)
        if ngrams < 1:
            raise ConfigError(f"ngrams must be at least 1, got {ngrams}")
        self.settings = dict(
            classes=classes,
            multi_label=multi_label,
            ngrams=ngrams,
            buckets=buckets,
            dim=dim,
            dropout=dropout,
        )
        self.ngrams, self.buckets, self.dim = ngrams, buckets, dim
        self.embedding = keras.layers.Embedding(buckets, dim, name="embedding")

    def build_body(self) -> int:
        self.embedding.build((None,))
        return self.dim

    def terms(self, strings) -> tf.RaggedTensor:
        """The words and word n-grams of each text (ragged strings)."""
        text = tf.strings.lower(tf.convert_to_tensor(strings, tf.string), encoding="utf-8")
        spaced = tf.strings.regex_replace(text, r"[^\p{L}\p{N}_]+", " ")  # any script's words
        words = tf.strings.split(tf.strings.strip(spaced))
        grams = [tf.strings.ngrams(words, n, separator=" ") for n in range(2, self.ngrams + 1)]
        return tf.concat([words, *grams], axis=1)

    def features(self, strings, training=None):
        terms = self.terms(strings)
        vectors = self.embedding(tf.strings.to_hash_bucket_fast(terms.values, self.buckets))
        return tf.math.unsorted_segment_mean(
            vectors, terms.value_rowids(), tf.cast(terms.nrows(), tf.int32)
        )


class _TokenClassifier(_Classifier):
    """A classifier over `TextIds`: subclasses define `classify_ids(ids) -> features`."""

    def __init__(self, vocabulary, max_length, classes, multi_label, dropout, truncation, **kwargs):
        super().__init__(classes, multi_label, dropout, **kwargs)
        self.text_ids = TextIds(vocabulary, max_length, truncation, name="text_ids")
        self.settings = dict(
            vocabulary=list(vocabulary),
            max_length=max_length,
            classes=classes,
            multi_label=multi_label,
            dropout=dropout,
            truncation=truncation,
        )

    def features(self, strings, training=None):
        return self.classify_ids(self.text_ids(strings), training=training)

    def chunk_probabilities(self, strings):
        """Probabilities (B, classes) of whole texts, however long: the mean of their windows'
        (graph ops, usable in a tf.function)."""
        ids, owner = self.text_ids.windows(strings)
        probabilities = self.probabilities(self.classify_ids(ids))
        return tf.math.unsorted_segment_mean(
            probabilities, owner, tf.shape(tf.convert_to_tensor(strings, tf.string))[0]
        )


@keras.saving.register_keras_serializable(package="dltoolkit")
class TokenEncoder(keras.layers.Layer):
    """BERT-style encoder: ids (B, L) -> states (B, L, d_model). Token (reversible, so masked
    LM logits can share it) + learned position embeddings, pre-norm Transformer blocks with
    GELU and a padding mask, a final LayerNorm."""

    def __init__(
        self,
        vocabulary_size,
        max_length,
        d_model=128,
        layers=2,
        heads=4,
        ff_dim=512,
        dropout=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if d_model % heads:
            raise ConfigError(f"d_model {d_model} must be a multiple of heads {heads}")
        self.settings = dict(
            vocabulary_size=vocabulary_size,
            max_length=max_length,
            d_model=d_model,
            layers=layers,
            heads=heads,
            ff_dim=ff_dim,
            dropout=dropout,
        )
        self.d_model, self.max_length = d_model, max_length
        self.tokens = keras_hub.layers.ReversibleEmbedding(
            vocabulary_size,
            d_model,
            embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="tokens",
        )
        self.positions = keras_hub.layers.PositionEmbedding(max_length, name="positions")
        self.embed_dropout = keras.layers.Dropout(dropout)
        self.blocks = prenorm_blocks(
            keras_hub.layers.TransformerEncoder, layers, ff_dim, heads, dropout, "block"
        )
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")

    def build(self, input_shape=None):
        if self.built:  # shared: the classifier and its MLM pretrainer both build it
            return
        states = (None, self.max_length, self.d_model)
        self.tokens.build((None, self.max_length))
        self.positions.build(states)
        for block in self.blocks:
            block.build(states)
        self.norm.build(states)
        self.built = True

    def call(self, ids, training=None):
        x = self.tokens(ids)
        x = self.embed_dropout(x + self.positions(x), training=training)
        mask = ops.not_equal(ids, PAD_ID)
        for block in self.blocks:
            x = block(x, padding_mask=mask, training=training)
        return self.norm(x)

    def token_logits(self, states):
        """Vocabulary logits (..., vocabulary_size) from states, through the tied embedding."""
        return self.tokens(states, reverse=True)

    def get_config(self):
        return {**super().get_config(), **self.settings}


def _masked(states, ids):
    """`states` (B, L, d) with [PAD] positions zeroed, and the mask (B, L, 1) as floats."""
    mask = ops.cast(ops.expand_dims(ops.not_equal(ids, PAD_ID), -1), states.dtype)
    return states * mask, mask


@keras.saving.register_keras_serializable(package="dltoolkit")
class TransformerClassifier(_TokenClassifier):
    """BERT-style: `TextIds` -> `TokenEncoder` -> masked mean (or [CLS]) pooling -> dropout ->
    dense. `encode(ids)` gives the encoder states MLM pretraining trains."""

    def __init__(
        self,
        vocabulary,
        max_length=128,
        classes=2,
        multi_label=False,
        d_model=128,
        layers=2,
        heads=4,
        ff_dim=512,
        dropout=0.1,
        pooling="mean",
        truncation="head+tail",
        **kwargs,
    ):
        super().__init__(
            vocabulary, max_length, classes, multi_label, dropout, truncation, **kwargs
        )
        check_choice("pooling", pooling, POOLINGS)
        size = dict(d_model=d_model, layers=layers, heads=heads, ff_dim=ff_dim)
        self.settings.update({**size, "pooling": pooling})
        self.pooling = pooling
        self.encoder = TokenEncoder(
            len(vocabulary), max_length, dropout=dropout, name="encoder", **size
        )

    def build_body(self) -> int:
        self.encoder.build()
        return self.encoder.d_model

    def encode(self, ids, training=None):
        """Encoder states (B, L, d_model) of ids (B, L)."""
        return self.encoder(ids, training=training)

    def classify_ids(self, ids, training=None):
        states = self.encode(ids, training=training)
        if self.pooling == "cls":
            return states[:, 0]
        states, mask = _masked(states, ids)
        return ops.sum(states, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="dltoolkit")
class ConvTextClassifier(_TokenClassifier):
    """Kim-CNN-style: `TextIds` -> token embeddings -> parallel Conv1D (one per kernel size,
    ReLU) -> max over the text's tokens (padding excluded) -> dropout -> dense."""

    def __init__(
        self,
        vocabulary,
        max_length=128,
        classes=2,
        multi_label=False,
        d_model=128,
        filters=128,
        kernel_sizes=(3, 4, 5),
        dropout=0.1,
        truncation="head+tail",
        **kwargs,
    ):
        super().__init__(
            vocabulary, max_length, classes, multi_label, dropout, truncation, **kwargs
        )
        self.settings.update(
            {"d_model": d_model, "filters": filters, "kernel_sizes": list(kernel_sizes)}
        )
        self.d_model, self.filters = d_model, filters
        self.embedding = keras.layers.Embedding(len(vocabulary), d_model, name="embedding")
        self.convs = [
            keras.layers.Conv1D(filters, k, padding="same", activation="relu", name=f"conv_{k}")
            for k in kernel_sizes
        ]

    def build_body(self) -> int:
        length = self.text_ids.max_length
        self.embedding.build((None, length))
        for conv in self.convs:
            conv.build((None, length, self.d_model))
        return self.filters * len(self.convs)

    def classify_ids(self, ids, training=None):
        x = self.embedding(ids)
        padding = ops.expand_dims(ops.equal(ids, PAD_ID), -1)
        pooled = [ops.max(ops.where(padding, -1e9, conv(x)), axis=1) for conv in self.convs]
        return ops.concatenate(pooled, axis=-1)


# -- masked-language-model pretraining ------------------------------------------------------


def mask_tokens(ids, rate: float, vocabulary_size: int, seed=None):
    """BERT masking of ids (B, L): each word piece (not [PAD], [UNK] or [CLS]) is picked with
    probability `rate`; a picked one becomes [MASK] 80% of the time, a random ordinary token
    10%, stays 10%. Returns the new ids and the picked positions (bool)."""
    ids = ops.convert_to_tensor(ids, "int32")
    shape = ops.shape(ids)
    picked = (keras.random.uniform(shape, seed=seed) < rate) & (ids > CLS_ID)
    draw = keras.random.uniform(shape, seed=seed)
    random_ids = keras.random.randint(shape, len(CLASSIFIER_TOKENS), vocabulary_size, "int32", seed)
    new = ops.where(draw < 0.8, MASK_ID, ops.where(draw < 0.9, random_ids, ids))
    return ops.where(picked, new, ids), picked


@keras.saving.register_keras_serializable(package="dltoolkit")
class MaskedLMPretrainer(keras.Model):
    """Masked-LM pretraining of a classifier's `TokenEncoder` (shared, not copied): strings ->
    `TextIds` -> masked ids -> encoder -> dense + LayerNorm -> tied vocabulary logits at the
    picked positions, trained by `fit` on strings alone with sparse cross-entropy."""

    def __init__(self, text_ids: TextIds, encoder: TokenEncoder, mask_rate=0.15, **kwargs):
        super().__init__(**kwargs)
        if not 0 < mask_rate < 1:
            raise ConfigError(f"mask_rate must be between 0 and 1, got {mask_rate}")
        self.text_ids, self.encoder, self.mask_rate = text_ids, encoder, mask_rate
        self.transform = keras.layers.Dense(encoder.d_model, activation="gelu", name="transform")
        self.transform_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="transform_norm")
        self.seed = keras.random.SeedGenerator(0)

    def build(self, input_shape=None):
        self.encoder.build()
        self.transform.build((None, self.encoder.d_model))
        self.transform_norm.build((None, self.encoder.d_model))
        self.built = True

    def call(self, strings, training=None):
        """(logits at the picked positions (N, vocabulary), their true ids (N,))."""
        ids = self.text_ids(strings)
        vocabulary_size = self.encoder.settings["vocabulary_size"]
        masked, picked = mask_tokens(ids, self.mask_rate, vocabulary_size, self.seed)
        states = tf.boolean_mask(self.encoder(masked, training=training), picked)
        logits = self.encoder.token_logits(self.transform_norm(self.transform(states)))
        return ops.cast(logits, "float32"), tf.boolean_mask(ids, picked)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, targets = y_pred
        losses = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        loss = ops.sum(losses) / ops.maximum(ops.cast(ops.size(losses), "float32"), 1.0)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas + sum(self.losses)

    def get_config(self):
        return {
            **super().get_config(),
            "text_ids": keras.saving.serialize_keras_object(self.text_ids),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "mask_rate": self.mask_rate,
        }

    @classmethod
    def from_config(cls, config):
        parts = {
            k: keras.saving.deserialize_keras_object(config[k]) for k in ("text_ids", "encoder")
        }
        return cls(**{**config, **parts})


def mlm_pretrainer(classifier: TransformerClassifier, mask_rate=0.15) -> MaskedLMPretrainer:
    """A model whose `fit(strings)` pretrains `classifier`'s encoder as a masked LM."""
    return MaskedLMPretrainer(classifier.text_ids, classifier.encoder, mask_rate)
