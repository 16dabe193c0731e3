"""Autoencoders that reconstruct their input: dense, denoising, sparse, variational, and
1-D convolutional or LSTM window autoencoders, alone or as an ensemble of independent members.

Every builder returns a functional Keras model from encoded rows (N, features) or windows
(N, window, features) to one reconstruction per member, (N, members, ...); train it with
`reconstruction_loss`. The VAE's encoder layers are named `z_mean_<member>`/`z_log_var_<member>`
so its KL term per row can be read back (`vae_encoder`, `kl_divergence`).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from dltoolkit.core.config import check_choice
from dltoolkit.specs.detect_anomalies import ROW_MODELS, WINDOW_MODELS


@keras.saving.register_keras_serializable(package="dltoolkit")
class VAESampling(layers.Layer):
    """z = mean + exp(log_var / 2) * noise while training (the mean otherwise); adds β·KL."""

    def __init__(self, beta: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.beta, self.seed = beta, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mean, log_var = inputs
        self.add_loss(self.beta * ops.cast(ops.mean(kl_divergence(mean, log_var)), "float32"))
        if not training:
            return mean
        noise = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * noise

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}


def kl_divergence(mean, log_var):
    """KL(q(z|x) || N(0, I)) per row, averaged over the latent units like the reconstruction."""
    return -0.5 * ops.mean(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)


@keras.saving.register_keras_serializable(package="dltoolkit")
def reconstruction_loss(inputs, reconstructions):
    """Per row: the mean squared error of every member's reconstruction (N, members, ...)."""
    error = ops.square(ops.expand_dims(inputs, 1) - reconstructions)
    return ops.mean(ops.reshape(error, (ops.shape(error)[0], -1)), axis=-1)


def build_autoencoder(
    kind: str,
    features: int,
    *,
    hidden: list[int],
    latent: int,
    window: int = 0,
    members: int = 1,
    dropout: float = 0.0,
    noise: float = 0.1,
    sparsity: float = 1e-3,
    beta: float = 1.0,
    seed: int = 0,
) -> keras.Model:
    """`members` independent autoencoders of `kind` for rows (window 0) or windows of `window`
    rows, as one model: input -> (N, members, ...) reconstructions."""
    check_choice("model", kind, WINDOW_MODELS if window else ROW_MODELS)
    inputs = keras.Input(
        (window, features) if window else (features,), name="window" if window else "features"
    )
    build = _window_member if window else _row_member
    outputs = [
        build(
            inputs,
            kind,
            m,
            hidden=hidden,
            latent=latent,
            dropout=dropout,
            noise=noise,
            sparsity=sparsity,
            beta=beta,
            seed=seed + m,
        )
        for m in range(members)
    ]
    stacked = [
        layers.Reshape((1, *o.shape[1:]), name=f"member_{m}")(o) for m, o in enumerate(outputs)
    ]
    stacked = stacked[0] if members == 1 else layers.Concatenate(axis=1, name="members")(stacked)
    return keras.Model(inputs, stacked, name=f"{kind}_autoencoder")


def _row_member(inputs, kind: str, m: int, *, hidden, latent, dropout, noise, sparsity, beta, seed):
    x = (
        layers.GaussianNoise(noise, seed=seed, name=f"corrupt_{m}")(inputs)
        if kind == "denoising"
        else inputs
    )
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation="gelu", name=f"enc_{m}_{i}")(x)
        x = layers.Dropout(dropout, seed=seed)(x) if dropout else x
    if kind == "vae":
        mean = layers.Dense(latent, name=f"z_mean_{m}")(x)
        log_var = layers.Dense(latent, name=f"z_log_var_{m}")(x)
        x = VAESampling(beta, seed, name=f"sample_{m}")([mean, log_var])
    else:
        x = layers.Dense(latent, activation="tanh", name=f"code_{m}")(x)
        if kind == "sparse":
            x = layers.ActivityRegularization(l1=sparsity, name=f"sparsity_{m}")(x)
    for i, units in enumerate(reversed(hidden)):
        x = layers.Dense(units, activation="gelu", name=f"dec_{m}_{i}")(x)
    return layers.Dense(inputs.shape[-1], name=f"reconstruction_{m}")(x)


def _window_member(inputs, kind: str, m: int, *, hidden, latent, **_):
    window, features = inputs.shape[1], inputs.shape[2]
    x = inputs
    if kind == "lstm":
        for i, units in enumerate(hidden):
            x = layers.LSTM(units, return_sequences=i < len(hidden) - 1, name=f"enc_{m}_{i}")(x)
        x = layers.Dense(latent, activation="tanh", name=f"code_{m}")(x)
        x = layers.RepeatVector(window)(x)
        for i, units in enumerate(reversed(hidden)):
            x = layers.LSTM(units, return_sequences=True, name=f"dec_{m}_{i}")(x)
    else:
        for i, units in enumerate(hidden):
            x = layers.Conv1D(units, 5, padding="same", activation="gelu", name=f"enc_{m}_{i}")(x)
        x = layers.Conv1D(latent, 1, activation="tanh", name=f"code_{m}")(x)
        x = layers.AveragePooling1D(2, padding="same")(x)
        x = layers.UpSampling1D(2)(x)
        x = layers.Cropping1D((0, x.shape[1] - window))(x)
        for i, units in enumerate(reversed(hidden)):
            x = layers.Conv1D(units, 5, padding="same", activation="gelu", name=f"dec_{m}_{i}")(x)
    return layers.TimeDistributed(layers.Dense(features), name=f"reconstruction_{m}")(x)


def vae_encoder(model: keras.Model) -> keras.Model:
    """The VAE members' encoders: encoded rows -> (z_mean, z_log_var), each (N, members, latent)."""
    members = sum(layer.name.startswith("z_mean_") for layer in model.layers)

    def stack(name):
        parts = [
            layers.Reshape((1, -1))(model.get_layer(f"{name}_{m}").output) for m in range(members)
        ]
        return parts[0] if members == 1 else layers.Concatenate(axis=1)(parts)

    return keras.Model(model.input, [stack("z_mean"), stack("z_log_var")])
