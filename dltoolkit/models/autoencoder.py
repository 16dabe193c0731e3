"""Autoencoders that reconstruct their input: dense, denoising, sparse, variational, and
1-D convolutional or LSTM window autoencoders, alone or as an ensemble of independent members.

Every builder returns a functional Keras model from encoded rows (N, features) or windows
(N, window, features) to one reconstruction per member, (N, members, ...); train it with
`reconstruction_loss`. Row members are batched: every layer holds all members' weights on a
leading member axis (`MemberDense`), so the ensemble is a handful of batched matrix products
rather than members × layers small ones, one set of variables for the optimizer and one
short graph to trace. Window members are parallel branches of one model.
The VAE's encoder layers are named `z_mean`/`z_log_var` so its KL term per row and member can be
read back (`vae_encoder`, `kl_divergence`).
"""

from __future__ import annotations

import itertools
import math

import keras
from keras import layers, ops

from dltoolkit.core.config import check_choice
from dltoolkit.specs.detect_anomalies import ROW_MODELS, WINDOW_MODELS


@keras.saving.register_keras_serializable(package="dltoolkit")
class MemberDense(layers.Layer):
    """One Dense layer per ensemble member, applied at once as a batched matrix product:
    rows (N, in), the same for every member, or member-major (members, N, in) ->
    (members, N, units), with a kernel (members, in, units). Each member's slice is drawn
    like a Dense layer's own (Glorot uniform, zero bias) and sees only its member's inputs,
    so the members train as independent networks."""

    def __init__(self, members: int, units: int, activation=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.members, self.units, self.seed = members, units, seed
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        fan_in = input_shape[-1]
        limit = math.sqrt(6.0 / (fan_in + self.units))
        self.kernel = self.add_weight(
            shape=(self.members, fan_in, self.units),
            initializer=keras.initializers.RandomUniform(-limit, limit, seed=self.seed),
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(self.members, self.units), initializer="zeros", name="bias"
        )

    def call(self, inputs):
        return self.activation(ops.matmul(inputs, self.kernel) + self.bias[:, None, :])

    def compute_output_shape(self, input_shape):
        return (self.members, input_shape[-2], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "members": self.members,
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="dltoolkit")
class MembersFirst(layers.Layer):
    """Rows (N, ...) -> a copy per member, member-major (members, N, ...)."""

    def __init__(self, members: int, **kwargs):
        super().__init__(**kwargs)
        self.members = members

    def call(self, inputs):
        return ops.repeat(inputs[None], self.members, axis=0)

    def compute_output_shape(self, input_shape):
        return (self.members, *input_shape)

    def get_config(self):
        return {**super().get_config(), "members": self.members}


@keras.saving.register_keras_serializable(package="dltoolkit")
class MembersLast(layers.Layer):
    """Member-major (members, N, ...) -> by row (N, members, ...)."""

    def call(self, inputs):
        return ops.swapaxes(inputs, 0, 1)

    def compute_output_shape(self, input_shape):
        return (input_shape[1], input_shape[0], *input_shape[2:])


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
    if not window:
        outputs = _row_members(
            inputs,
            kind,
            members,
            hidden=hidden,
            latent=latent,
            dropout=dropout,
            noise=noise,
            sparsity=sparsity,
            beta=beta,
            seed=seed,
        )
        return keras.Model(inputs, outputs, name=f"{kind}_autoencoder")
    outputs = [
        layers.Reshape((1, window, features), name=f"member_{m}")(
            _window_member(inputs, kind, m, hidden=hidden, latent=latent)
        )
        for m in range(members)
    ]
    stacked = outputs[0] if members == 1 else layers.Concatenate(axis=1, name="members")(outputs)
    return keras.Model(inputs, stacked, name=f"{kind}_autoencoder")


def _row_members(
    inputs, kind: str, members: int, *, hidden, latent, dropout, noise, sparsity, beta, seed
):
    """Every member's layers at once: rows (N, features) -> (N, members, features), member-major
    inside (no transposes between layers). The k-th layer draws its members' weights with seed
    `seed + k`; noise and dropout are drawn per member."""
    seeds = itertools.count(seed)

    def dense(units, name, activation=None):
        return MemberDense(members, units, activation, seed=next(seeds), name=name)

    x = inputs
    if kind == "denoising":  # each member sees its own corruption of the rows
        x = MembersFirst(members, name="members")(x)
        x = layers.GaussianNoise(noise, seed=seed, name="corrupt")(x)
    for i, units in enumerate(hidden):
        x = dense(units, f"enc_{i}", "gelu")(x)
        x = layers.Dropout(dropout, seed=seed)(x) if dropout else x
    if kind == "vae":
        mean, log_var = dense(latent, "z_mean")(x), dense(latent, "z_log_var")(x)
        x = VAESampling(beta, seed, name="sample")([mean, log_var])
    else:
        x = dense(latent, "code", "tanh")(x)
        if kind == "sparse":
            x = layers.ActivityRegularization(l1=sparsity, name="sparsity")(x)
    for i, units in enumerate(reversed(hidden)):
        x = dense(units, f"dec_{i}", "gelu")(x)
    return MembersLast(name="by_row")(dense(inputs.shape[-1], "reconstruction")(x))


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
    return keras.Model(
        model.input, [MembersLast()(model.get_layer(n).output) for n in ("z_mean", "z_log_var")]
    )
