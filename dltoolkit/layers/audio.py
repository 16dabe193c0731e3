"""The speech front end as Keras layers: log-mel features, SpecAugment, feature scaling.

`LogMelSpectrogram` turns padded waves (B, N) into (B, frames, n_mels) log-mel features and
tells how many frames of each clip are valid; `SpecAugment` masks time and frequency bands
while training. Per-mel scaling is a `keras.layers.Normalization(axis=-1)`, adapted by
`mel_normalization` on the unpadded frames of each training clip. All compute in float32
whatever the global dtype policy (mixed precision included).
"""

from __future__ import annotations

import itertools

import keras
import tensorflow as tf
from keras import ops

from dltoolkit.core.errors import DataError

LOG_FLOOR = 1e-6


@keras.saving.register_keras_serializable(package="dltoolkit")
class LogMelSpectrogram(keras.layers.Layer):
    """Waves (B, N) at `sample_rate` -> log(mel power + 1e-6), shape (B, frames, n_mels).

    Frames start every `frame_step` samples and the end is zero-padded, so a clip of L
    samples has ceil(L / frame_step) frames (`frames`); in a zero-padded batch those frames
    hold the same values as for the clip alone, the later ones belong to the padding.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_length: int = 400,
        frame_step: int = 160,
        fft_length: int = 512,
        n_mels: int = 80,
        fmin: float = 0.0,
        fmax: float | None = None,
        **kwargs,
    ):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if frame_length > fft_length:
            raise ValueError(f"frame_length {frame_length} exceeds fft_length {fft_length}")
        self.sample_rate = int(sample_rate)
        self.frame_length = int(frame_length)
        self.frame_step = int(frame_step)
        self.fft_length = int(fft_length)
        self.n_mels = int(n_mels)
        self.fmin = float(fmin)
        self.fmax = None if fmax is None else float(fmax)
        self._mel_matrix = tf.signal.linear_to_mel_weight_matrix(
            num_mel_bins=self.n_mels,
            num_spectrogram_bins=self.fft_length // 2 + 1,
            sample_rate=self.sample_rate,
            lower_edge_hertz=self.fmin,
            upper_edge_hertz=self.fmax or self.sample_rate / 2,
        )

    def call(self, waves):
        waves = tf.cast(waves, tf.float32)
        spectrum = tf.signal.stft(
            waves,
            frame_length=self.frame_length,
            frame_step=self.frame_step,
            fft_length=self.fft_length,
            pad_end=True,
        )
        power = tf.math.square(tf.abs(spectrum))
        return tf.math.log(tf.tensordot(power, self._mel_matrix, axes=1) + LOG_FLOOR)

    def frames(self, lengths):
        """Valid frame count (int32) of clips of `lengths` samples: ceil(length / frame_step)."""
        lengths = tf.cast(lengths, tf.int32)
        return (lengths + self.frame_step - 1) // self.frame_step

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = None if samples is None else -(-samples // self.frame_step)
        return (*input_shape[:-1], frames, self.n_mels)

    def get_config(self):
        return {
            **super().get_config(),
            "sample_rate": self.sample_rate,
            "frame_length": self.frame_length,
            "frame_step": self.frame_step,
            "fft_length": self.fft_length,
            "n_mels": self.n_mels,
            "fmin": self.fmin,
            "fmax": self.fmax,
        }


@keras.saving.register_keras_serializable(package="dltoolkit")
class SpecAugment(keras.layers.Layer):
    """Training-only masking of (B, frames, mels) features; the identity at inference.

    Each example gets `freq_masks` bands of 0..`freq_width` mel bins and `time_masks` spans
    of 0..`time_fraction` x its length frames, set to `mask_value`. Given `lengths` (B,)
    valid frames, time masks fall inside each clip. `seed` makes the masks repeatable.
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 10,
        time_masks: int = 2,
        time_fraction: float = 0.05,
        mask_value: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.freq_masks = int(freq_masks)
        self.freq_width = int(freq_width)
        self.time_masks = int(time_masks)
        self.time_fraction = float(time_fraction)
        self.mask_value = float(mask_value)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, features, lengths=None, training=None):
        if not training:
            return features
        features = ops.cast(features, "float32")
        shape = ops.shape(features)
        batch, n_frames, n_mels = shape[0], shape[1], shape[2]
        if lengths is None:
            lengths = ops.full((batch,), n_frames, "int32")
        lengths = ops.cast(lengths, "float32")
        n_mels_f = ops.cast(n_mels, "float32")
        freq_keep = self._keep(batch, n_mels, self.freq_masks, self.freq_width, n_mels_f)
        time_keep = self._keep(
            batch, n_frames, self.time_masks, ops.floor(self.time_fraction * lengths), lengths
        )
        keep = ops.logical_and(time_keep[:, :, None], freq_keep[:, None, :])
        return ops.where(keep, features, self.mask_value)

    def _keep(self, batch, size, count, max_width, extent):
        """(B, size) bool: False inside `count` random spans per example within [0, extent)."""
        positions = ops.cast(ops.arange(size), "float32")[None, :]
        keep = ops.ones((batch, size), "bool")
        max_width = ops.broadcast_to(ops.cast(max_width, "float32"), (batch,))
        extent = ops.broadcast_to(ops.cast(extent, "float32"), (batch,))
        for _ in range(count):
            draw = keras.random.uniform((2, batch), seed=self.seed_generator)
            width = ops.floor(draw[0] * (max_width + 1.0))
            width = ops.minimum(width, extent)
            start = ops.floor(draw[1] * (extent - width + 1.0))
            inside = ops.logical_and(
                positions >= start[:, None], positions < (start + width)[:, None]
            )
            keep = ops.logical_and(keep, ops.logical_not(inside))
        return keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "freq_masks": self.freq_masks,
            "freq_width": self.freq_width,
            "time_masks": self.time_masks,
            "time_fraction": self.time_fraction,
            "mask_value": self.mask_value,
            "seed": self.seed,
        }


def mel_normalization(clip_features) -> keras.layers.Normalization:
    """A float32 per-mel `Normalization(axis=-1)` adapted on (frames, n_mels) arrays.

    `clip_features` is an iterable (list, generator, tf.data.Dataset) of the unpadded
    features of each training clip; clips may differ in length, clips of no frames are
    skipped. The mean and variance pool every frame of every clip.
    """
    clips = (clip for clip in clip_features if clip.shape[0])
    first = next(clips, None)
    if first is None:
        raise DataError("no training clip has any audio frame: give clips longer than 0 s")
    adapted = keras.layers.Normalization(axis=-1, dtype="float32")
    adapted.adapt(itertools.chain([first], clips))
    # mean and variance in the config, so the layer is whole before model.keras loads weights
    layer = keras.layers.Normalization(
        axis=-1,
        mean=ops.convert_to_numpy(adapted.mean).reshape(-1),
        variance=ops.convert_to_numpy(adapted.variance).reshape(-1),
        dtype="float32",
    )
    layer.build((None, None, first.shape[-1]))  # its constants made here, not in a traced graph
    return layer
