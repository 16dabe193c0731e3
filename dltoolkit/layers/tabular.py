"""Keras layers for tables: encoding raw feature columns, and scoring rows by how badly an
autoencoder reconstructs them (the detect-anomalies recipe's preprocessing and scoring)."""

from __future__ import annotations

import keras
import tensorflow as tf

from dltoolkit.models.autoencoder import kl_divergence


@keras.saving.register_keras_serializable(package="dltoolkit")
class TableEncoder(keras.layers.Layer):
    """Raw feature columns -> encoded features (float32): numeric columns robust-scaled with
    the training `median` and `scale` (NaN/inf become the median), then each categorical
    column one-hot over its training `categories` (an unseen category encodes as zeros).

    Input: one float tensor (..., numeric columns) when every column is numeric (rows, or
    windows of rows), else a list of one tensor per column, numeric ones first, then the
    categorical ones as strings.
    """

    def __init__(self, median, scale, categories=(), **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.median, self.scale = [float(v) for v in median], [float(v) for v in scale]
        self.categories = [[str(c) for c in cats] for cats in categories]

    def call(self, inputs):
        if self.categories:
            count = len(self.median)
            numeric = tf.stack([tf.cast(col, tf.float32) for col in inputs[:count]], axis=-1)
            texts = inputs[count:]
        else:
            numeric, texts = tf.cast(inputs, tf.float32), []
        median = tf.constant(self.median, tf.float32)
        numeric = tf.where(tf.math.is_finite(numeric), numeric, median)
        parts = [(numeric - median) / tf.constant(self.scale, tf.float32)]
        for text, cats in zip(texts, self.categories, strict=True):
            parts.append(
                tf.cast(tf.equal(text[..., None], tf.constant(cats, tf.string)), tf.float32)
            )
        return tf.concat(parts, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "median": self.median,
            "scale": self.scale,
            "categories": self.categories,
        }


@keras.saving.register_keras_serializable(package="dltoolkit")
class AnomalyScore(keras.layers.Layer):
    """[encoded rows or windows, reconstructions (N, members, ...)] (plus a VAE's z_mean and
    z_log_var, (N, members, latent), to add `kl_weight` times its KL term) -> `score` (N,),
    `anomaly` (score >= threshold) and per-column `contributions` (N, columns).

    Per encoded feature, the squared reconstruction error (mean over the members) is divided
    by `error_scale`; with `hybrid`, the fourth root of its product with the squared distance
    from the training median over `extreme_scale` (the geometric mean of the two absolute
    ratios). `owners[i]` is the column (of `columns`) that encoded feature i comes from; a column's
    contribution is its features' sum over the feature count, so contributions sum to the
    score. The scales and the threshold are non-trainable weights, set after training.
    """

    def __init__(self, owners, columns: int, hybrid: bool = True, kl_weight: float = 0.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.owners, self.columns = [int(o) for o in owners], columns
        self.hybrid, self.kl_weight = hybrid, kl_weight
        width = len(self.owners)
        self.error_scale = self.add_weight(
            shape=(width,), initializer="ones", trainable=False, name="error_scale"
        )
        self.extreme_scale = self.add_weight(
            shape=(width,), initializer="ones", trainable=False, name="extreme_scale"
        )
        self.threshold = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(float("inf")),
            trainable=False,
            name="threshold",
        )

    def terms(self, encoded, reconstructions) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-feature squared reconstruction error (mean over the members) and squared
        distance from the training median, both (N, features); windows average over time."""
        x = tf.cast(encoded, tf.float32)
        error = tf.reduce_mean(tf.square(x[:, None] - tf.cast(reconstructions, tf.float32)), 1)
        extreme = tf.square(x)
        if len(x.shape) == 3:
            error, extreme = tf.reduce_mean(error, axis=1), tf.reduce_mean(extreme, axis=1)
        return error, extreme

    def call(self, inputs):
        encoded, reconstructions, *latent = inputs
        error, extreme = self.terms(encoded, reconstructions)
        error = error / self.error_scale
        per_feature = tf.pow(error * extreme / self.extreme_scale, 0.25) if self.hybrid else error
        groups = tf.one_hot(self.owners, self.columns, dtype=tf.float32)
        contributions = tf.matmul(per_feature, groups) / len(self.owners)
        score = tf.reduce_sum(contributions, axis=1)
        if latent:
            kl = tf.reduce_mean(kl_divergence(*latent), axis=1)
            score = score + self.kl_weight * tf.cast(kl, tf.float32)
        return {
            "score": score,
            "anomaly": score >= self.threshold,
            "contributions": contributions,
        }

    def get_config(self):
        return {
            **super().get_config(),
            "owners": self.owners,
            "columns": self.columns,
            "hybrid": self.hybrid,
            "kl_weight": self.kl_weight,
        }
