"""Policy and value networks for the agent recipe, and the layers they need to stay
self-contained: observation encoding and running normalisation live inside the model,
so a saved or exported policy takes raw observations."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="dltoolkit")
class RunningNormalization(layers.Layer):
    """Standardises observations with running statistics kept as (non-trainable) weights.

    The statistics change only through `update(batch)`, so a saved model normalises
    exactly as the policy did when it was saved.
    """

    def __init__(self, clip: float = 10.0, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.clip = clip
        self.epsilon = epsilon

    def build(self, input_shape):
        dim = input_shape[-1]
        self.mean = self.add_weight(shape=(dim,), initializer="zeros", trainable=False, name="mean")
        self.var = self.add_weight(shape=(dim,), initializer="ones", trainable=False, name="var")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def call(self, x):
        x = ops.cast(x, "float32")
        scaled = (x - self.mean) / ops.sqrt(self.var + self.epsilon)
        return ops.clip(scaled, -self.clip, self.clip)

    def update(self, batch):
        """Merge a batch's moments into the running ones (Chan et al.'s parallel formula)."""
        batch = ops.cast(ops.reshape(batch, (-1, ops.shape(self.mean)[0])), "float32")
        n = ops.cast(ops.shape(batch)[0], "float32")
        mean, var = ops.mean(batch, axis=0), ops.var(batch, axis=0)
        total = self.count + n
        delta = mean - self.mean
        new_mean = self.mean + delta * n / total
        m2 = self.var * self.count + var * n + ops.square(delta) * self.count * n / total
        self.mean.assign(new_mean)
        self.var.assign(m2 / total)
        self.count.assign(total)

    def get_config(self):
        return {**super().get_config(), "clip": self.clip, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="dltoolkit")
class LogStd(layers.Layer):
    """A state-independent, learned log standard deviation per action dimension."""

    def __init__(self, dims: int, initial: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.dims = dims
        self.initial = initial

    def build(self, input_shape):
        self.log_std = self.add_weight(
            shape=(self.dims,),
            initializer=keras.initializers.Constant(self.initial),
            name="log_std",
        )

    def call(self, features):
        return ops.zeros_like(features[:, :1]) + self.log_std

    def get_config(self):
        return {**super().get_config(), "dims": self.dims, "initial": self.initial}


@keras.saving.register_keras_serializable(package="dltoolkit")
class CategoricalHead(layers.Dense):
    """A discrete action distribution: Dense `logits` and their softmax `probabilities`.

    One layer, so the model's weights keep the order a plain Dense head gives them (the
    order global-norm clipping sums in and checkpoints list them).
    """

    def call(self, inputs):
        logits = super().call(inputs)
        return {"logits": logits, "probabilities": ops.softmax(logits)}

    def compute_output_spec(self, inputs):
        logits = keras.KerasTensor(self.compute_output_shape(inputs.shape), self.compute_dtype)
        return {"logits": logits, "probabilities": keras.KerasTensor(logits.shape, logits.dtype)}


def bounds_scaling(low, high, widest: float = 1e6) -> layers.Rescaling:
    """A fixed map of each feature with finite bounds (at most `widest` apart, so a float
    maximum standing for "unbounded" is left alone) onto [-1, 1]; other features pass as they are."""
    low, high = np.ravel(low).astype("float64"), np.ravel(high).astype("float64")
    width = high - low
    scaled = np.isfinite(width) & (width > 0) & (width <= widest)
    scale = np.divide(2.0, width, out=np.ones_like(width), where=scaled)
    offset = np.divide(-(high + low), width, out=np.zeros_like(width), where=scaled)
    return layers.Rescaling(scale.tolist(), offset.tolist(), name="obs_scale")


def observation_input(
    obs_shape: tuple[int, ...], discrete_states: int | None, normalize: bool, bounds=None
):
    """The model input and its encoding: one-hot for a discrete state, flattened and
    optionally normalised (running statistics) or scaled by `bounds` (low, high) for a box
    of numbers."""
    if discrete_states is not None:
        inputs = keras.Input((), dtype="int32", name="observation")
        encoded = layers.CategoryEncoding(discrete_states, output_mode="one_hot")(inputs)
        return inputs, encoded
    inputs = keras.Input(obs_shape, dtype="float32", name="observation")
    flat = layers.Flatten()(inputs) if len(obs_shape) > 1 else inputs
    if normalize:
        flat = RunningNormalization(name="obs_norm")(flat)
    if bounds is not None:
        flat = bounds_scaling(*bounds)(flat)
    return inputs, flat


def _mlp(x, hidden: tuple[int, ...], activation: str, name: str):
    for i, units in enumerate(hidden):
        x = layers.Dense(
            units,
            activation=activation,
            name=f"{name}_{i}",
            kernel_initializer=keras.initializers.Orthogonal(np.sqrt(2)),
        )(x)
    return x


def _head(x, units: int, gain: float, name: str, kind=layers.Dense):
    return kind(units, kernel_initializer=keras.initializers.Orthogonal(gain), name=name)(x)


def actor_critic(
    obs_shape,
    discrete_states,
    *,
    actions: int,
    continuous: bool,
    hidden=(64, 64),
    activation="tanh",
    normalize=False,
    log_std_init=0.0,
) -> keras.Model:
    """Separate policy and value MLPs on a shared observation encoding.

    Outputs: the action distribution, as `logits` and their softmax `probabilities`
    (discrete) or `mean` and `log_std` (continuous), and the state's `value`.
    """
    inputs, encoded = observation_input(obs_shape, discrete_states, normalize)
    pi = _mlp(encoded, hidden, activation, "pi")
    if continuous:
        outputs = {
            "mean": _head(pi, actions, 0.01, "policy"),
            "log_std": LogStd(actions, log_std_init, name="log_std")(pi),
        }
    else:
        outputs = _head(pi, actions, 0.01, "policy", CategoricalHead)
    outputs["value"] = _head(_mlp(encoded, hidden, activation, "vf"), 1, 1.0, "value")
    return keras.Model(inputs, outputs, name="actor_critic")


def q_network(
    obs_shape,
    discrete_states,
    *,
    actions: int,
    hidden=(64, 64),
    activation="relu",
    normalize=False,
    bounds=None,
) -> keras.Model:
    """An MLP from an observation to one value per action (see `observation_input`)."""
    inputs, encoded = observation_input(obs_shape, discrete_states, normalize, bounds)
    q = _head(_mlp(encoded, hidden, activation, "q"), actions, 1.0, "q_values")
    return keras.Model(inputs, {"q_values": q}, name="q_network")


def q_table(states: int, actions: int) -> keras.Model:
    """A table of action values indexed by a discrete state (an Embedding, zero-initialised)."""
    inputs = keras.Input((), dtype="int32", name="observation")
    q = layers.Embedding(states, actions, embeddings_initializer="zeros", name="q_table")(inputs)
    return keras.Model(inputs, {"q_values": q}, name="q_table")


def normalizer(model: keras.Model) -> RunningNormalization | None:
    """The model's observation normaliser, if it has one."""
    return next((layer for layer in model.layers if isinstance(layer, RunningNormalization)), None)


def policy_outputs(out: dict, low=(), high=()) -> dict:
    """A policy model's outputs -> {'actions', and 'probabilities' | 'means' | 'q_values'}:
    the best action per observation (continuous means clipped into the action bounds)."""
    if "q_values" in out:
        q = out["q_values"]
        return {"actions": ops.argmax(q, axis=-1), "q_values": q}
    if "logits" in out:
        return {
            "actions": ops.argmax(out["logits"], axis=-1),
            "probabilities": out["probabilities"],
        }
    mean = out["mean"]
    return {
        "actions": ops.clip(mean, np.array(low, "float32"), np.array(high, "float32")),
        "means": mean,
    }


def deterministic_policy(model: keras.Model, low=(), high=()):
    """obs -> `policy_outputs` of the model (in inference mode)."""

    def act(observation):
        return policy_outputs(model(observation, training=False), low, high)

    return act
