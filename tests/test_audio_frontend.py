"""The speech front end: WAV decoding, resampling, padded batches, log-mel, SpecAugment."""

from __future__ import annotations

import io
import math
import wave

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.signal import resample_poly

from dltoolkit.core.errors import DataError
from dltoolkit.data.waveforms import decode_wav, is_pcm16_wav, pad_batch, resample
from dltoolkit.layers.audio import LogMelSpectrogram, SpecAugment, mel_normalization


def tone(freq, rate, seconds, amplitude=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV of int16 samples, (n,) mono or (n, channels)."""
    samples = samples.reshape(len(samples), -1)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_resample_matches_scipy_polyphase(rate):
    wave_in = tone(440, rate, 0.5) + tone(3000, rate, 0.5, 0.3)
    out = resample(wave_in, tf.constant(rate), 16000).numpy()
    g = math.gcd(rate, 16000)
    reference = resample_poly(wave_in, 16000 // g, rate // g)
    assert out.shape == reference.shape == (8000,)
    assert np.abs(out[200:-200] - reference[200:-200]).max() < 5e-3


def test_resample_suppresses_tone_above_new_nyquist_and_keeps_equal_rate():
    high = tone(10000, 44100, 0.5)  # above 8 kHz, the Nyquist of 16 kHz
    out = resample(high, 44100, 16000).numpy()
    assert np.abs(out[200:-200]).max() < 1e-2 * np.abs(high).max()
    same = tone(440, 16000, 0.1)
    np.testing.assert_array_equal(resample(same, 16000, 16000).numpy(), same)


def test_resample_in_tf_function_with_rate_tensor():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)])
    def to_16k(wave_in, rate):
        return resample(wave_in, rate, 16000)

    for rate in (8000, 16000, 22050):
        out = to_16k(tone(440, rate, 0.25), tf.constant(rate))
        assert out.shape == (4000,)
        expected = tone(440, 16000, 0.25)
        assert np.abs(out.numpy()[100:-100] - expected[100:-100]).max() < 5e-3


def test_resample_long_clip_in_blocks_and_empty_wave():
    minute = tone(440, 22050, 60.0)
    out = resample(minute, 22050, 16000).numpy()
    assert out.shape == (960000,)
    expected = tone(440, 16000, 60.0)
    assert np.abs(out[1000:-1000] - expected[1000:-1000]).max() < 1e-3
    assert resample(np.zeros(0, np.float32), 8000, 16000).shape == (0,)


def test_decode_wav_mono_and_stereo():
    mono = (tone(440, 16000, 0.1) * 32767).astype(np.int16)
    wave_out, rate = decode_wav(tf.constant(wav_bytes(mono, 16000)))
    assert int(rate) == 16000 and wave_out.dtype == tf.float32
    np.testing.assert_allclose(wave_out.numpy(), mono / 32768.0, atol=1e-6)

    left = np.full(800, 8192, np.int16)
    right = np.full(800, -4096, np.int16)
    wave_out, rate = decode_wav(tf.constant(wav_bytes(np.stack([left, right], 1), 22050)))
    assert int(rate) == 22050 and wave_out.shape == (800,)
    np.testing.assert_allclose(wave_out.numpy(), (8192 - 4096) / 2 / 32768.0, atol=1e-6)


def test_is_pcm16_wav_tells_what_decode_wav_reads():
    import soundfile

    pcm16 = wav_bytes(np.zeros(100, np.int16), 8000)
    assert bool(is_pcm16_wav(tf.constant(pcm16)))
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(100), 8000, format="WAV", subtype="PCM_24")
    for other in (
        buffer.getvalue(),
        pcm16[:30],
        b"",
        b"not audio at all, just some text here......",
    ):
        assert not bool(is_pcm16_wav(tf.constant(other)))


def test_pad_batch_from_list_and_ragged():
    waves = [np.ones(5, np.float32), np.full(3, 2.0, np.float32)]
    padded, lengths = pad_batch(waves)
    np.testing.assert_array_equal(padded.numpy(), [[1, 1, 1, 1, 1], [2, 2, 2, 0, 0]])
    np.testing.assert_array_equal(lengths.numpy(), [5, 3])
    assert lengths.dtype == tf.int32

    ragged = tf.data.Dataset.from_tensor_slices(tf.ragged.constant([[1.0, 1.0], [2.0]]))
    padded, lengths = next(iter(ragged.batch(2).map(pad_batch)))
    np.testing.assert_array_equal(padded.numpy(), [[1, 1], [2, 0]])
    np.testing.assert_array_equal(lengths.numpy(), [2, 1])
    with pytest.raises(DataError):
        pad_batch([])
    with pytest.raises(DataError, match="not 1-D"):
        pad_batch([np.ones(4, np.float32), np.ones((4, 2), np.float32)])


def test_log_mel_peaks_at_tone_mel_bin():
    layer = LogMelSpectrogram(n_mels=40)
    features = layer(tone(1000, 16000, 0.5)[None]).numpy()
    assert features.shape == (1, 50, 40)
    weights = tf.signal.linear_to_mel_weight_matrix(40, 257, 16000, 0.0, 8000.0).numpy()
    expected_bin = int(np.argmax(weights[round(1000 * 512 / 16000)]))
    assert np.bincount(features[0, 1:-1].argmax(-1)).argmax() == expected_bin


def test_frames_match_unpadded_count_and_padding_leaves_valid_frames():
    layer = LogMelSpectrogram()
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=n).astype(np.float32) for n in (4000, 2345, 1601)]
    padded, lengths = pad_batch(clips)
    batch = layer(padded).numpy()
    counts = layer.frames(lengths).numpy()
    for clip, count, row in zip(clips, counts, batch, strict=True):
        alone = layer(clip[None]).numpy()[0]
        assert alone.shape[0] == count
        np.testing.assert_allclose(row[:count], alone, rtol=1e-4, atol=1e-4)


def test_spec_augment_masks_in_training_only_within_lengths():
    features = np.ones((4, 60, 20), np.float32) * 3.0
    lengths = np.array([60, 40, 20, 10], np.int32)
    layer = SpecAugment(freq_masks=2, freq_width=5, time_masks=2, time_fraction=0.2, seed=1)
    np.testing.assert_array_equal(layer(features, lengths=lengths).numpy(), features)
    out = layer(features, lengths=lengths, training=True).numpy()
    assert (out == 0.0).any()
    for row, length in zip(out, lengths, strict=True):
        past = row[length:]
        kept_mels = ~(row == 0.0).all(axis=0)  # mel bins not frequency-masked
        assert (past[:, kept_mels] == 3.0).all()  # no time mask beyond the clip
        assert (row == 0.0).all(axis=0).sum() <= 10
    again = SpecAugment(freq_masks=2, freq_width=5, time_masks=2, time_fraction=0.2, seed=1)
    np.testing.assert_array_equal(again(features, lengths=lengths, training=True).numpy(), out)


def test_mel_normalization_pools_clips_of_different_lengths():
    rng = np.random.default_rng(0)
    clips = [rng.normal(2.0, 3.0, size=(n, 8)).astype(np.float32) for n in (30, 0, 7, 51)]
    pooled = np.concatenate(clips)
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(clips), output_signature=tf.TensorSpec([None, 8], tf.float32)
    )
    for source in (clips, dataset):  # the empty clip is skipped, not a NaN
        layer = mel_normalization(source)
        np.testing.assert_allclose(np.ravel(layer.get_config()["mean"]), pooled.mean(0), rtol=1e-4)
        np.testing.assert_allclose(
            np.ravel(layer.get_config()["variance"]), pooled.var(0), rtol=1e-4
        )
    with pytest.raises(DataError, match="no training clip"):
        mel_normalization([np.zeros((0, 8), np.float32)])


def test_layers_round_trip_through_keras_saving(tmp_path):
    rng = np.random.default_rng(0)
    mel = LogMelSpectrogram(n_mels=16, fmin=20.0, fmax=7600.0)
    clips = [mel(rng.normal(size=(1, n)).astype(np.float32)).numpy()[0] for n in (1600, 3200)]
    waves = keras.Input((3200,))
    features = mel(waves)
    features = SpecAugment(freq_width=3, seed=3)(features)
    outputs = mel_normalization(clips)(features)
    model = keras.Model(waves, outputs)
    path = tmp_path / "frontend.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    batch = rng.normal(size=(2, 3200)).astype(np.float32)
    np.testing.assert_allclose(loaded(batch).numpy(), model(batch).numpy(), rtol=1e-5)
    assert loaded.layers[1].get_config() == mel.get_config()


def test_front_end_in_saved_model_and_float32_under_mixed_precision(tmp_path):
    mel = LogMelSpectrogram(n_mels=16)

    class FrontEnd(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def features(self, wav_files):
            waves = tf.map_fn(
                lambda data: resample(*decode_wav(data), 16000),
                wav_files,
                fn_output_signature=tf.RaggedTensorSpec([None], tf.float32),
            )
            padded, lengths = pad_batch(waves)
            return mel(padded), mel.frames(lengths)

    tf.saved_model.save(FrontEnd(), str(tmp_path / "front"))
    loaded = tf.saved_model.load(str(tmp_path / "front"))
    files = [
        wav_bytes((tone(440, 8000, 0.2) * 32767).astype(np.int16), 8000),
        wav_bytes((tone(440, 16000, 0.1) * 32767).astype(np.int16), 16000),
    ]
    features, frames = loaded.features(tf.constant(files))
    np.testing.assert_array_equal(frames.numpy(), [20, 10])
    assert features.shape == (2, 20, 16)

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        assert LogMelSpectrogram(n_mels=16)(tone(440, 16000, 0.1)[None]).dtype == "float32"
        assert mel_normalization([np.ones((3, 16))]).compute_dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
