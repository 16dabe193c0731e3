"""Autoencoders that reconstruct their input: dense, denoising, sparse, variational, and
1-D convolutional or LSTM window autoencoders.

Every builder returns a functional Keras model from encoded rows (N, features) or windows
(N, window, features) to their reconstruction. The VAE's encoder layers are named
`z_mean`/`z_log_var` so its KL term per row can be read back (`vae_encoder`, `kl_divergence`).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from dltoolkit.core.config import check_choice

ROW_MODELS = ("dense", "denoising", "sparse", "vae")
WINDOW_MODELS = ("conv", "lstm")
MODELS = ROW_MODELS + WINDOW_MODELS


@keras.saving.register_keras_serializable(package="dltoolkit")
class VAESampling(layers.Layer):
    """z = mean + exp(log_var / 2) * noise while training (the mean otherwise); adds β·KL."""

    def __init__(self, beta: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.beta, self.seed = beta, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mean, log_var = inputs
        self.add_loss(self.beta * ops.mean(kl_divergence(mean, log_var)))
        if not training:
            return mean
        noise = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * noise

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}


def kl_divergence(mean, log_var):
    """KL(q(z|x) || N(0, I)) per row, averaged over the latent units like the reconstruction."""
    return -0.5 * ops.mean(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)


def build_autoencoder(kind: str, features: int, *, hidden: list[int], latent: int, window: int = 0,
                      dropout: float = 0.0, noise: float = 0.1, sparsity: float = 1e-3,
                      beta: float = 1.0, seed: int = 0) -> keras.Model:
    """An autoencoder of `kind` for rows (window 0) or windows of `window` rows."""
    check_choice("model", kind, WINDOW_MODELS if window else ROW_MODELS)
    if window:
        return _window_autoencoder(kind, features, window, hidden, latent)
    inputs = keras.Input((features,), name="features")
    x = layers.GaussianNoise(noise, seed=seed, name="corrupt")(inputs) if kind == "denoising" else inputs
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation="gelu", name=f"enc_{i}")(x)
        x = layers.Dropout(dropout, seed=seed)(x) if dropout else x
    if kind == "vae":
        mean = layers.Dense(latent, name="z_mean")(x)
        log_var = layers.Dense(latent, name="z_log_var")(x)
        x = VAESampling(beta, seed, name="sample")([mean, log_var])
    else:
        x = layers.Dense(latent, activation="tanh", name="code")(x)
        if kind == "sparse":
            x = layers.ActivityRegularization(l1=sparsity, name="sparsity")(x)
    for i, units in enumerate(reversed(hidden)):
        x = layers.Dense(units, activation="gelu", name=f"dec_{i}")(x)
    outputs = layers.Dense(features, name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=f"{kind}_autoencoder")


def _window_autoencoder(kind: str, features: int, window: int, hidden: list[int], latent: int):
    inputs = keras.Input((window, features), name="window")
    if kind == "lstm":
        x = inputs
        for i, units in enumerate(hidden):
            x = layers.LSTM(units, return_sequences=i < len(hidden) - 1, name=f"enc_{i}")(x)
        x = layers.Dense(latent, activation="tanh", name="code")(x)
        x = layers.RepeatVector(window)(x)
        for i, units in enumerate(reversed(hidden)):
            x = layers.LSTM(units, return_sequences=True, name=f"dec_{i}")(x)
    else:
        x = inputs
        for i, units in enumerate(hidden):
            x = layers.Conv1D(units, 5, padding="same", activation="gelu", name=f"enc_{i}")(x)
        x = layers.Conv1D(latent, 1, activation="tanh", name="code")(x)
        x = layers.AveragePooling1D(2, padding="same")(x)
        x = layers.UpSampling1D(2)(x)
        x = layers.Cropping1D((0, x.shape[1] - window))(x)
        for i, units in enumerate(reversed(hidden)):
            x = layers.Conv1D(units, 5, padding="same", activation="gelu", name=f"dec_{i}")(x)
    outputs = layers.TimeDistributed(layers.Dense(features), name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=f"{kind}_window_autoencoder")


def vae_encoder(model: keras.Model) -> keras.Model:
    """The VAE's encoder: encoded rows -> (z_mean, z_log_var), sharing the model's weights."""
    return keras.Model(model.input, [model.get_layer("z_mean").output,
                                     model.get_layer("z_log_var").output])
