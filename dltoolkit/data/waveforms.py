"""Waveforms as TensorFlow ops: WAV decoding, band-limited resampling, padded batches.

Plain `tf.*` ops, so the same code runs eagerly, inside `tf.function` / `tf.data`, and in
an exported SavedModel. The sample rate of a clip may be a run-time tensor (read from its
WAV header); the target rate is a Python int fixed by the model.
"""

from __future__ import annotations

import math

import tensorflow as tf

from dltoolkit.core.errors import DataError

ZERO_CROSSINGS = 16  # sinc zero crossings on each side of an output sample
KAISER_BETA = 8.0  # window shape: stop-band rejection against transition width
BLOCK_ELEMENTS = 1 << 21  # outputs x taps evaluated at once (8 MiB of float32 per tensor)


def resample(wave, rate, target_rate: int):
    """Resample a 1-D float32 wave from `rate` (scalar tensor, Hz) to `target_rate` (int, Hz).

    Windowed-sinc interpolation evaluated at each output time: a Kaiser-windowed sinc with
    16 zero crossings each side and cutoff min(1, target_rate / rate) of the input Nyquist,
    so downsampling removes what the new rate cannot hold. Returns ceil(n * target / rate)
    samples; the wave itself when the rates are equal. Long waves run in blocks of outputs,
    so memory stays bounded (a 60 s clip at 48 kHz is fine).
    """
    target_rate = int(target_rate)
    if target_rate <= 0:
        raise ValueError(f"target_rate must be a positive number of Hz, got {target_rate}")
    wave = tf.convert_to_tensor(wave, tf.float32)
    rate = tf.cast(rate, tf.int64)
    tf.debugging.assert_positive(rate, message="the sample rate must be positive")
    return tf.cond(
        tf.equal(rate, target_rate),
        lambda: tf.identity(wave),
        lambda: _sinc_resample(wave, rate, target_rate),
    )


def _sinc_resample(wave, rate, target_rate: int):
    """The resampler proper (rates differ); output times in exact integer arithmetic.

    Output j sits at input time j * rate / target_rate, whose fractional part takes only
    target_rate / gcd(rate, target_rate) values: the kernel of each such phase is computed
    once, then every output gathers its phase's kernel and the input samples around it.
    """
    n_in = tf.size(wave, out_type=tf.int64)
    n_out = (n_in * target_rate + rate - 1) // rate
    cutoff = tf.minimum(1.0, target_rate / tf.cast(rate, tf.float32))  # of the input Nyquist
    half_width = ZERO_CROSSINGS / cutoff  # in input samples
    reach = tf.cast(tf.math.ceil(half_width), tf.int64)
    offsets = tf.range(-reach + 1, reach + 1)  # taps around floor(output time)
    taps = tf.size(offsets, out_type=tf.int64)
    padded = tf.pad(wave, [[reach, reach]])

    step = _gcd(rate, tf.constant(target_rate, tf.int64))  # j * rate % target_rate is k * step
    phases = tf.range(target_rate // step) * step
    distance = tf.cast(phases, tf.float32)[:, None] / target_rate - tf.cast(offsets, tf.float32)
    kernels = _kaiser_sinc(distance, cutoff, half_width)  # (phases, taps)

    block = tf.maximum(tf.constant(BLOCK_ELEMENTS, tf.int64) // taps, 1)
    n_blocks = tf.maximum((n_out + block - 1) // block, 1)  # map_fn needs one (empty waves)

    def one_block(first):
        j = first + tf.range(block)  # output sample indices
        base = j * rate // target_rate  # floor of the output time, in input samples
        kernel = tf.gather(kernels, j * rate % target_rate // step)  # (block, taps)
        source = tf.clip_by_value(base[:, None] + offsets[None, :] + reach, 0, n_in + 2 * reach - 1)
        values = tf.gather(padded, source)
        return tf.reduce_sum(values * kernel, axis=1)

    starts = tf.range(n_blocks) * block
    blocks = tf.map_fn(
        one_block,
        starts,
        fn_output_signature=tf.TensorSpec([None], tf.float32),
        parallel_iterations=1,
    )
    return tf.reshape(blocks, [-1])[:n_out]


def _gcd(a, b):
    """Greatest common divisor of two positive int64 scalar tensors (Euclid)."""
    return tf.while_loop(lambda a, b: b > 0, lambda a, b: (b, a % b), (a, b))[0]


def _kaiser_sinc(distance, cutoff, half_width):
    """Low-pass kernel cutoff * sinc(cutoff * d) under a Kaiser window of half-width."""
    x = math.pi * cutoff * distance
    safe = tf.where(tf.equal(x, 0.0), tf.ones_like(x), x)
    sinc = tf.where(tf.equal(x, 0.0), tf.ones_like(x), tf.sin(safe) / safe)
    ratio = tf.clip_by_value(distance / half_width, -1.0, 1.0)
    window = tf.math.bessel_i0(KAISER_BETA * tf.sqrt(1.0 - ratio * ratio)) / tf.math.bessel_i0(
        tf.constant(KAISER_BETA, tf.float32)
    )
    return tf.where(tf.abs(distance) < half_width, cutoff * sinc * window, tf.zeros_like(x))


def decode_wav(data):
    """WAV bytes (scalar tf.string) -> (mono float32 wave in [-1, 1], sample rate int32).

    16-bit PCM only (what `tf.audio.decode_wav` reads); other encodings (24/32-bit, float,
    compressed) raise `tf.errors.InvalidArgumentError`. Channels are averaged to mono.
    """
    audio, rate = tf.audio.decode_wav(data)
    return tf.reduce_mean(audio, axis=-1), tf.cast(rate, tf.int32)


def is_pcm16_wav(data):
    """Whether WAV bytes (scalar tf.string) announce 16-bit PCM in a canonical header (RIFF,
    WAVE, the fmt chunk first): what `decode_wav` reads. Graph ops; never raises."""
    data = tf.strings.join([data, tf.constant(b"\0" * 44)])  # short input: compare zeros

    def field(start, length):
        return tf.strings.substr(data, start, length)

    def number(start):
        return tf.io.decode_raw(field(start, 2), tf.uint16, little_endian=True)[0]

    return (
        tf.equal(field(0, 4), "RIFF")
        & tf.equal(field(8, 4), "WAVE")
        & tf.equal(field(12, 4), "fmt ")
        & tf.equal(number(20), 1)
        & tf.equal(number(34), 16)
    )


def pad_batch(waves):
    """1-D waves (a list of arrays/tensors, or a tf.RaggedTensor (B, None)) -> padded batch.

    Returns ((B, N) float32 with zeros after each wave, N the longest; (B,) int32 lengths).
    A RaggedTensor goes through TF ops only, so this works in tf.data and exported graphs.
    """
    if not isinstance(waves, tf.RaggedTensor):
        waves = [tf.convert_to_tensor(w, tf.float32) for w in waves]
        if not waves:
            raise DataError("pad_batch got no waves: pass at least one 1-D wave")
        for index, w in enumerate(waves):
            if w.shape.rank != 1:
                raise DataError(
                    f"pad_batch wave {index} has shape {w.shape.as_list()}, not 1-D: "
                    "average multi-channel audio to mono first"
                )
        lengths = tf.stack([tf.size(w, out_type=tf.int64) for w in waves])
        waves = tf.RaggedTensor.from_row_lengths(tf.concat(waves, axis=0), lengths)
    waves = tf.cast(waves, tf.float32)
    return waves.to_tensor(0.0), tf.cast(waves.row_lengths(), tf.int32)
