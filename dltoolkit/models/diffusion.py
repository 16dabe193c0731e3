"""DDPM: a small U-Net with a timestep embedding, noise schedules, EMA weights, DDIM sampling.

Training is the usual denoising objective over `timesteps` steps, the network predicting
either the noise (`prediction="eps"`, Ho et al.) or the velocity v = sqrt(a) eps -
sqrt(1 - a) x0 (`"v"`, Salimans & Ho), which stays well-conditioned at the noisiest steps
where recovering x0 from a noise estimate divides by sqrt(a) ~ 0; sampling uses DDIM
(eta = 0) over `sample_steps` evenly spaced steps, as a `tf.while_loop` so the whole
loop is part of the exported graph. Conditional models learn an extra "no label" class
(labels are dropped with probability `label_dropout`) for classifier-free guidance.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.core.config import check_choice
from dltoolkit.core.errors import ConfigError
from dltoolkit.core.replicas import gradient_loss, replica_draw
from dltoolkit.models.generative import GenerativeModel, stateless_normal
from dltoolkit.specs.generate import NOISE_SCHEDULES, PREDICTIONS


def alpha_bars(schedule: str, timesteps: int) -> np.ndarray:
    """Cumulative signal fractions alpha_bar_t, t = 0..T-1 (linear: Ho et al.; cosine: Nichol & Dhariwal)."""
    if schedule == "linear":
        betas = np.linspace(1e-4, 0.02 * 1000 / timesteps, timesteps)
        return np.cumprod(1.0 - betas)
    if schedule == "cosine":
        s = 0.008
        f = np.cos((np.arange(timesteps + 1) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
        betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
        return np.cumprod(1.0 - betas)
    raise ConfigError(
        f"unknown noise schedule '{schedule}'; choose one of: {', '.join(NOISE_SCHEDULES)}"
    )


class TimeEmbedding(keras.layers.Layer):
    """Sinusoidal features of the (float) timestep, as in the Transformer's positions."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    def call(self, t):
        half = self.dim // 2
        freqs = keras.ops.exp(-math.log(10000.0) * keras.ops.arange(half, dtype="float32") / half)
        angles = keras.ops.cast(t, "float32")[:, None] * freqs[None, :]
        return keras.ops.concatenate([keras.ops.sin(angles), keras.ops.cos(angles)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


def _res_block(x, emb, channels: int, name: str):
    """GroupNorm-swish-conv twice, with the timestep embedding added in between."""
    skip = (
        x if x.shape[-1] == channels else keras.layers.Conv2D(channels, 1, name=f"{name}_skip")(x)
    )
    h = keras.layers.GroupNormalization(_groups(x.shape[-1]), name=f"{name}_norm1")(x)
    h = keras.layers.Conv2D(channels, 3, padding="same", name=f"{name}_conv1")(
        keras.activations.silu(h)
    )
    h = h + keras.layers.Dense(channels, name=f"{name}_time")(emb)[:, None, None, :]
    h = keras.layers.GroupNormalization(_groups(channels), name=f"{name}_norm2")(h)
    h = keras.layers.Conv2D(channels, 3, padding="same", name=f"{name}_conv2")(
        keras.activations.silu(h)
    )
    return skip + h


def build_unet(
    image_shape, levels: int, channels, num_classes: int = 0, blocks: int = 2
) -> keras.Model:
    """Noise predictor eps(x_t, t[, label]): `levels` halvings, `blocks` residual blocks each.

    `channels(level)` gives the feature maps at each level; label `num_classes` means "none".
    """
    x_in = keras.Input(image_shape, name="noisy")
    t_in = keras.Input((), name="timestep")
    inputs = [x_in, t_in]
    emb_dim = 4 * channels(0)
    emb = TimeEmbedding(channels(0), name="time_features")(t_in)
    emb = keras.layers.Dense(emb_dim, activation="silu", name="time_mlp1")(emb)
    emb = keras.layers.Dense(emb_dim, name="time_mlp2")(emb)
    if num_classes:
        labels = keras.Input((), dtype="int32", name="labels")
        inputs.append(labels)
        emb = emb + keras.layers.Embedding(num_classes + 1, emb_dim, name="label_embedding")(labels)
    emb = keras.activations.silu(emb)
    h = keras.layers.Conv2D(channels(0), 3, padding="same", name="stem")(x_in)
    skips = [h]
    for level in range(levels + 1):
        for b in range(blocks):
            h = _res_block(h, emb, channels(level), f"down{level}_{b}")
            skips.append(h)
        if level < levels:
            h = keras.layers.Conv2D(
                channels(level), 3, strides=2, padding="same", name=f"downsample{level}"
            )(h)
            skips.append(h)
    h = _res_block(h, emb, channels(levels), "middle")
    for level in reversed(range(levels + 1)):
        for b in range(blocks + 1):
            h = keras.layers.Concatenate()([h, skips.pop()])
            h = _res_block(h, emb, channels(level), f"up{level}_{b}")
        if level > 0:
            h = keras.layers.UpSampling2D(2, name=f"upsample{level}")(h)
            h = keras.layers.Conv2D(channels(level - 1), 3, padding="same", name=f"upconv{level}")(
                h
            )
    h = keras.activations.silu(
        keras.layers.GroupNormalization(_groups(channels(0)), name="out_norm")(h)
    )
    eps = keras.layers.Conv2D(image_shape[-1], 3, padding="same", name="eps", dtype="float32")(h)
    return keras.Model(inputs, eps, name="unet")


@keras.saving.register_keras_serializable("dltoolkit")
class DDPM(GenerativeModel):
    """Denoising diffusion: trains `network`, samples with its exponential moving average."""

    def __init__(
        self,
        image_shape,
        num_classes=0,
        width=32,
        latent_dim=0,
        schedule="cosine",
        timesteps=1000,
        sample_steps=50,
        ema_decay=0.999,
        label_dropout=0.1,
        guidance=1.0,
        blocks=2,
        prediction="v",
        **kwargs,
    ):
        super().__init__(image_shape, num_classes, width, latent_dim, **kwargs)
        self.schedule, self.timesteps, self.sample_steps = (
            schedule,
            int(timesteps),
            int(sample_steps),
        )
        self.ema_decay, self.label_dropout = float(ema_decay), float(label_dropout)
        self.guidance, self.blocks = float(guidance), int(blocks)
        check_choice("prediction", prediction, PREDICTIONS)
        self.prediction = prediction
        self.alpha_bar = tf.constant(alpha_bars(schedule, self.timesteps), tf.float32)
        self.network = build_unet(
            self.image_shape, self.levels, self.channels, self.num_classes, self.blocks
        )
        self.ema_network = build_unet(
            self.image_shape, self.levels, self.channels, self.num_classes, self.blocks
        )
        self.ema_network.trainable = False
        self.ema_network.set_weights(self.network.get_weights())
        self.tracker = keras.metrics.Mean(name="loss")
        self.built = True

    def get_config(self):
        return {
            **super().get_config(),
            "schedule": self.schedule,
            "timesteps": self.timesteps,
            "sample_steps": self.sample_steps,
            "ema_decay": self.ema_decay,
            "label_dropout": self.label_dropout,
            "guidance": self.guidance,
            "blocks": self.blocks,
            "prediction": self.prediction,
        }

    @property
    def metrics(self):
        return [self.tracker]

    def _inputs(self, x, t, labels):
        return [x, t] if not self.conditional else [x, t, labels]

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def _denoising_loss(self, x0, labels, training):
        batch = tf.shape(x0)[0]
        t = replica_draw(
            tf.random.uniform, [batch], minval=0, maxval=self.timesteps, dtype=tf.int32
        )
        noise = replica_draw(tf.random.normal, tf.shape(x0))
        ab = tf.gather(self.alpha_bar, t)[:, None, None, None]
        xt = tf.sqrt(ab) * x0 + tf.sqrt(1.0 - ab) * noise
        if self.conditional and training:  # classifier-free guidance: sometimes "no label"
            drop = replica_draw(tf.random.uniform, [batch]) < self.label_dropout
            labels = tf.where(drop, self.num_classes, labels)
        target = noise if self.prediction == "eps" else tf.sqrt(ab) * noise - tf.sqrt(1.0 - ab) * x0
        out = tf.cast(
            self.network(self._inputs(xt, tf.cast(t, tf.float32), labels), training=training),
            tf.float32,
        )
        return tf.reduce_mean(tf.square(out - target))

    def train_step(self, data):
        x0, labels = self._split(data)
        with tf.GradientTape() as tape:
            loss = self._denoising_loss(x0, labels, training=True)
            scaled = gradient_loss(loss, self.optimizer)
        variables = self.network.trainable_variables
        self.optimizer.apply_gradients(
            zip(tape.gradient(scaled, variables), variables, strict=True)
        )
        self._update_ema()
        self.tracker.update_state(loss)
        return {"loss": self.tracker.result()}

    def test_step(self, data):
        x0, labels = self._split(data)
        self.tracker.update_state(self._denoising_loss(x0, labels, training=False))
        return {"loss": self.tracker.result()}

    def _update_ema(self):
        step = tf.cast(self.optimizer.iterations, tf.float32)
        decay = tf.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))  # warm up early on
        for ema, weight in zip(self.ema_network.weights, self.network.weights, strict=True):
            ema.assign(decay * ema + (1.0 - decay) * weight)

    def _predict(self, x, t, labels):
        """EMA network output (noise or velocity), with classifier-free guidance for conditional models."""
        times = tf.fill([tf.shape(x)[0]], tf.cast(t, tf.float32))
        if not self.conditional:
            return self.ema_network(self._inputs(x, times, None), training=False)
        if self.guidance == 0.0:
            return self.ema_network(self._inputs(x, times, labels), training=False)
        none = tf.fill(tf.shape(labels), self.num_classes)
        both = self.ema_network(
            [tf.concat([x, x], 0), tf.concat([times, times], 0), tf.concat([labels, none], 0)],
            training=False,
        )
        cond, uncond = tf.split(both, 2, axis=0)
        return cond + self.guidance * (cond - uncond)

    def sample_trajectory(self, batch_size, seed, labels=None, steps=None):
        """DDIM from pure noise: the final images and the predicted clean image at each step."""
        steps = self.sample_steps if steps is None else steps
        times = tf.cast(tf.round(tf.linspace(self.timesteps - 1.0, 0.0, steps)), tf.int32)
        x = stateless_normal([batch_size, *self.image_shape], seed, 0)
        trajectory = tf.TensorArray(tf.float32, size=steps, element_shape=x.shape)

        def step(i, x, trajectory):
            t = times[i]
            ab = self.alpha_bar[t]
            ab_next = tf.where(
                i + 1 < steps, self.alpha_bar[times[tf.minimum(i + 1, steps - 1)]], 1.0
            )
            out = self._predict(x, t, labels)
            if self.prediction == "eps":
                x0 = (x - tf.sqrt(1.0 - ab) * out) / tf.sqrt(ab)
            else:
                x0 = tf.sqrt(ab) * x - tf.sqrt(1.0 - ab) * out
            x0 = tf.clip_by_value(x0, -1.0, 1.0)
            eps = (x - tf.sqrt(ab) * x0) / tf.sqrt(tf.maximum(1.0 - ab, 1e-8))
            x = tf.sqrt(ab_next) * x0 + tf.sqrt(1.0 - ab_next) * eps
            return i + 1, x, trajectory.write(i, x0)

        _, x, trajectory = tf.while_loop(
            lambda i, *_: i < steps, step, (tf.constant(0), x, trajectory)
        )
        return x, trajectory.stack()

    def generate(self, batch_size, seed, labels=None, steps=None):
        return self.sample_trajectory(batch_size, seed, labels, steps)[0]
