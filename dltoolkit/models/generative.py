"""Image generators: the shared base, the size rule, a convolutional VAE and GANs.

Every generator is a `keras.Model` with its own `train_step` (so `model.fit`, checkpoints
and strategies work as for any recipe) and a `generate(batch_size, seed, labels)` made of
TensorFlow ops only: stateless random numbers seeded from `seed` make it deterministic,
and the same function is traced into the exported SavedModel. Pixels live in [-1, 1]
inside the models; `to_uint8` turns them into images.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from dltoolkit.core.errors import ConfigError
from dltoolkit.core.replicas import gradient_loss, replica_draw

MIN_SIZE, MAX_SIZE = 16, 128


def levels_for(size: int) -> int:
    """How many times the networks halve an image of `size` (the bottleneck stays >= 4x4)."""
    return 2 if size <= 32 else 3 if size <= 64 else 4


def valid_sizes() -> list[int]:
    """Square sizes the architectures handle: divisible by 2**levels, 16 to 128."""
    return [s for s in range(MIN_SIZE, MAX_SIZE + 1) if s % 2 ** levels_for(s) == 0]


def check_image_size(size: int) -> None:
    if size not in valid_sizes():
        raise ConfigError(
            f"image size {size} does not fit the generator networks; use --image-size with one "
            f"of: {', '.join(map(str, valid_sizes()))}"
        )


def size_for_data(height: int, width: int) -> int:
    """The smallest valid size holding the data's longer side (e.g. 8x8 digits -> 16)."""
    side = max(height, width)
    return next((s for s in valid_sizes() if s >= side), MAX_SIZE)


def to_unit_range(pixels):
    """[0, 255] -> [-1, 1]."""
    return tf.cast(pixels, tf.float32) / 127.5 - 1.0


def to_uint8(images):
    """[-1, 1] -> uint8 [0, 255]."""
    return tf.cast(tf.round(tf.clip_by_value((images + 1.0) * 127.5, 0.0, 255.0)), tf.uint8)


def stateless_normal(shape, seed, stream: int):
    """N(0, 1) noise fixed by (seed, stream): the same numbers in Keras and in the SavedModel."""
    return tf.random.stateless_normal(
        shape, tf.stack([tf.cast(seed, tf.int64), tf.constant(stream, tf.int64)])
    )


def one_hot_maps(labels, num_classes: int, height: int, width: int):
    """Labels as constant one-hot feature maps (B, H, W, K) to concatenate with images."""
    hot = tf.one_hot(labels, num_classes)[:, None, None, :]
    return tf.tile(hot, [1, height, width, 1])


class GenerativeModel(keras.Model):
    """Base of the generators: image shape, optional classes and config.

    Each subclass defines `generate(batch_size, seed, labels=None)`: `batch_size` images in
    [-1, 1] fixed by `seed` (and class `labels` when conditional).
    """

    def __init__(
        self, image_shape, num_classes: int = 0, width: int = 32, latent_dim: int = 64, **kwargs
    ):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = int(num_classes)
        self.width = int(width)
        self.latent_dim = int(latent_dim)
        self.levels = levels_for(self.image_shape[0])

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "width": self.width,
            "latent_dim": self.latent_dim,
        }

    def channels(self, level: int) -> int:
        """Feature maps at `level` halvings: width, 2*width, then 4*width at most."""
        return self.width * min(2**level, 4)

    def get_compile_config(self):
        """Not saved: a loaded generator samples; training compiles it afresh."""
        return None

    def _split(self, data):
        x, y = data if isinstance(data, tuple) else (data, None)
        labels = tf.argmax(y, axis=-1, output_type=tf.int32) if self.conditional else None
        return to_unit_range(x), labels


def _conv(filters, kernel=3, strides=1, name=None, **kwargs):
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", name=name, **kwargs
    )


def _deconv(filters, name=None, **kwargs):
    return keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", name=name, **kwargs)


# -- VAE --------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable("dltoolkit")
class ConvVAE(GenerativeModel):
    """Convolutional VAE: Bernoulli-style likelihood on [0, 1] pixels, KL with warmup and beta.

    Conditional models see one-hot label maps in the encoder and the label in the decoder.
    """

    def __init__(
        self,
        image_shape,
        num_classes=0,
        width=32,
        latent_dim=32,
        beta=1.0,
        kl_warmup_steps=1000,
        **kwargs,
    ):
        super().__init__(image_shape, num_classes, width, latent_dim, **kwargs)
        self.beta = float(beta)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.encoder = self._build_encoder()
        self.decoder = self._build_decoder()
        self.trackers = {k: keras.metrics.Mean(name=k) for k in ("loss", "reconstruction", "kl")}
        self.built = True

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "kl_warmup_steps": self.kl_warmup_steps}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _build_encoder(self) -> keras.Model:
        h, w, c = self.image_shape
        images = keras.Input((h, w, c + self.num_classes), name="images")
        x = images
        for level in range(self.levels):
            x = _conv(self.channels(level + 1), 4, 2, name=f"down{level}")(x)
            x = keras.layers.LeakyReLU(0.2)(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(2 * self.latent_dim, name="moments")(x)
        return keras.Model(images, x, name="encoder")

    def _build_decoder(self) -> keras.Model:
        h, w, c = self.image_shape
        base = (h // 2**self.levels, w // 2**self.levels, self.channels(self.levels))
        z = keras.Input((self.latent_dim + self.num_classes,), name="z")
        x = keras.layers.Dense(base[0] * base[1] * base[2], activation="relu")(z)
        x = keras.layers.Reshape(base)(x)
        for level in reversed(range(self.levels)):
            x = _deconv(self.channels(level), name=f"up{level}", activation="relu")(x)
        logits = _conv(c, name="logits")(x)
        return keras.Model(z, logits, name="decoder")

    def _encode(self, images, labels):
        if self.conditional:
            images = tf.concat(
                [images, one_hot_maps(labels, self.num_classes, *self.image_shape[:2])], -1
            )
        mean, log_var = tf.split(tf.cast(self.encoder(images), tf.float32), 2, axis=-1)
        return mean, tf.clip_by_value(log_var, -10.0, 10.0)

    def decode(self, z, labels=None):
        """Latents (and labels) -> images in [-1, 1]."""
        if self.conditional:
            z = tf.concat([z, tf.one_hot(labels, self.num_classes)], -1)
        return tf.sigmoid(tf.cast(self.decoder(z), tf.float32)) * 2.0 - 1.0

    def call(self, images, training=False):
        mean, _ = self._encode(images, None)
        return self.decode(mean)

    def _vae_losses(self, images, labels, training):
        mean, log_var = self._encode(images, labels)
        eps = replica_draw(tf.random.normal, tf.shape(mean))
        z = mean + tf.exp(0.5 * log_var) * eps  # reparameterisation
        if self.conditional:
            z = tf.concat([z, tf.one_hot(labels, self.num_classes)], -1)
        logits = tf.cast(self.decoder(z, training=training), tf.float32)
        target = (images + 1.0) / 2.0
        recon = tf.reduce_mean(
            tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits),
                axis=[1, 2, 3],
            )
        )
        kl = tf.reduce_mean(
            tf.reduce_sum(-0.5 * (1.0 + log_var - tf.square(mean) - tf.exp(log_var)), axis=-1)
        )
        return recon, kl

    def _kl_weight(self):
        step = tf.cast(self.optimizer.iterations, tf.float32)
        return self.beta * tf.minimum(1.0, (step + 1.0) / max(1, self.kl_warmup_steps))

    def train_step(self, data):
        images, labels = self._split(data)
        with tf.GradientTape() as tape:
            recon, kl = self._vae_losses(images, labels, training=True)
            loss = gradient_loss(recon + self._kl_weight() * kl, self.optimizer)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        return self._record(recon, kl)

    def test_step(self, data):
        images, labels = self._split(data)
        return self._record(*self._vae_losses(images, labels, training=False))

    def _record(self, recon, kl):
        """Report the full ELBO (beta 1, no warmup) so epochs compare."""
        for name, value in (("loss", recon + kl), ("reconstruction", recon), ("kl", kl)):
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    def generate(self, batch_size, seed, labels=None):
        z = stateless_normal([batch_size, self.latent_dim], seed, 0)
        return self.decode(z, labels)

    def interpolate(self, seed_a, seed_b, steps: int, labels=None):
        """Decoded images along the straight line between two seeds' latent vectors."""
        a = stateless_normal([1, self.latent_dim], seed_a, 0)
        b = stateless_normal([1, self.latent_dim], seed_b, 0)
        t = tf.linspace(0.0, 1.0, steps)[:, None]
        return self.decode(a + t * (b - a), labels)


# -- GANs -------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable("dltoolkit")
class GAN(GenerativeModel):
    """DCGAN (non-saturating loss, spectral-norm discriminator, batch-norm generator) or
    WGAN-GP (Wasserstein critic with gradient penalty, no normalisation in the critic).

    Two-timescale learning rates: the discriminator's optimizer runs faster (see `compile`).
    Conditional models embed the label in the generator's input and use a projection
    discriminator.
    """

    def __init__(
        self,
        image_shape,
        num_classes=0,
        width=32,
        latent_dim=64,
        loss="dcgan",
        gp_weight=10.0,
        critic_steps=1,
        **kwargs,
    ):
        super().__init__(image_shape, num_classes, width, latent_dim, **kwargs)
        if loss not in ("dcgan", "wgan-gp"):
            raise ConfigError(f"unknown GAN loss '{loss}'; choose one of: dcgan, wgan-gp")
        self.loss_kind, self.gp_weight, self.critic_steps = (
            loss,
            float(gp_weight),
            int(critic_steps),
        )
        self.generator = self._build_generator()
        self.discriminator = self._build_discriminator()
        self.trackers = {k: keras.metrics.Mean(name=k) for k in ("d_loss", "g_loss", "distance")}
        self.built = True

    def get_config(self):
        return {
            **super().get_config(),
            "loss": self.loss_kind,
            "gp_weight": self.gp_weight,
            "critic_steps": self.critic_steps,
        }

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, g_optimizer, d_optimizer, **kwargs):
        super().compile(optimizer=g_optimizer, **kwargs)
        self.d_optimizer = d_optimizer
        g_optimizer.build(self.generator.trainable_variables)
        d_optimizer.build(self.discriminator.trainable_variables)

    def _build_generator(self) -> keras.Model:
        h, w, c = self.image_shape
        base = (h // 2**self.levels, w // 2**self.levels, self.channels(self.levels))
        z = keras.Input((self.latent_dim,), name="z")
        labels = keras.Input((), dtype="int32", name="labels")
        x = z
        if self.conditional:
            x = keras.layers.Concatenate()(
                [z, keras.layers.Embedding(self.num_classes, self.latent_dim)(labels)]
            )
        x = keras.layers.Dense(base[0] * base[1] * base[2], use_bias=False)(x)
        x = keras.layers.Reshape(base)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        for level in reversed(range(self.levels)):
            x = _deconv(self.channels(level), use_bias=False, name=f"up{level}")(x)
            x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        images = _conv(c, activation="tanh", name="images")(x)
        return keras.Model([z, labels], images, name="generator")

    def _build_discriminator(self) -> keras.Model:
        def layer(conv):
            return keras.layers.SpectralNormalization(conv) if self.loss_kind == "dcgan" else conv

        images = keras.Input(self.image_shape, name="images")
        labels = keras.Input((), dtype="int32", name="labels")
        x = layer(_conv(self.width, name="stem"))(images)
        x = keras.layers.LeakyReLU(0.2)(x)
        for level in range(self.levels):
            x = layer(_conv(self.channels(level + 1), 4, 2, name=f"down{level}"))(x)
            x = keras.layers.LeakyReLU(0.2)(x)
        features = keras.layers.GlobalAveragePooling2D()(x)
        score = layer(keras.layers.Dense(1, name="score"))(features)
        if self.conditional:  # projection discriminator: + <embed(label), features>
            embedded = keras.layers.Embedding(self.num_classes, features.shape[-1])(labels)
            score = score + keras.ops.sum(embedded * features, axis=-1, keepdims=True)
        return keras.Model([images, labels], score, name="discriminator")

    def call(self, z, training=False):
        return self.generator([z, tf.zeros(tf.shape(z)[:1], tf.int32)], training=training)

    def _labels(self, labels, batch):
        return labels if labels is not None else tf.zeros([batch], tf.int32)

    def _fake(self, z, labels, training):
        return tf.cast(self.generator([z, labels], training=training), tf.float32)

    def _score(self, images, labels):
        return tf.cast(self.discriminator([images, labels], training=True), tf.float32)

    def train_step(self, data):
        real, labels = self._split(data)
        batch = tf.shape(real)[0]
        labels = self._labels(labels, batch)
        z = replica_draw(tf.random.normal, [batch, self.latent_dim])
        with tf.GradientTape() as tape:
            fake = self._fake(z, labels, training=True)
            real_score, fake_score = self._score(real, labels), self._score(fake, labels)
            if self.loss_kind == "dcgan":
                d_loss = tf.reduce_mean(tf.nn.softplus(-real_score) + tf.nn.softplus(fake_score))
            else:
                d_loss = tf.reduce_mean(fake_score - real_score) + self.gp_weight * self._penalty(
                    real, fake, labels
                )
            scaled = gradient_loss(d_loss, self.d_optimizer)
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(scaled, d_vars), d_vars, strict=True))
        distance = tf.reduce_mean(real_score - fake_score)
        if self.critic_steps == 1:
            g_loss = self._generator_step(batch, labels)
        else:  # one replica only: tf.distribute cannot sum gradients inside a condition
            g_loss = tf.cond(
                self.d_optimizer.iterations % self.critic_steps == 0,
                lambda: self._generator_step(batch, labels),
                lambda: tf.constant(0.0) + self.trackers["g_loss"].result(),
            )
        for name, value in (("d_loss", d_loss), ("g_loss", g_loss), ("distance", distance)):
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    def _generator_step(self, batch, labels):
        z = replica_draw(tf.random.normal, [batch, self.latent_dim])
        with tf.GradientTape() as tape:
            score = self._score(self._fake(z, labels, training=True), labels)
            loss = (
                tf.reduce_mean(tf.nn.softplus(-score))
                if self.loss_kind == "dcgan"
                else -tf.reduce_mean(score)
            )
            scaled = gradient_loss(loss, self.optimizer)
        g_vars = self.generator.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, g_vars), g_vars, strict=True))
        return loss

    def _penalty(self, real, fake, labels):
        """WGAN-GP: (||grad_x critic(x)|| - 1)^2 on random points between real and fake."""
        mix = replica_draw(tf.random.uniform, [tf.shape(real)[0], 1, 1, 1])
        points = real + mix * (fake - real)
        with tf.GradientTape() as tape:
            tape.watch(points)
            score = self._score(points, labels)
        grads = tape.gradient(score, points)
        norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]) + 1e-12)
        return tf.reduce_mean(tf.square(norm - 1.0))

    def generate(self, batch_size, seed, labels=None):
        z = stateless_normal([batch_size, self.latent_dim], seed, 0)
        return self._fake(z, self._labels(labels, batch_size), training=False)
