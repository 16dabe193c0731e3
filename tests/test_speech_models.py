"""Speech networks on a learnable toy: each token is drawn as its own pattern over a few log-mel
frames, clips have different lengths and are padded. Both networks must learn to transcribe
it, decode greedily and by beam search, ignore padding and survive save/load."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from dltoolkit.core.errors import ConfigError
from dltoolkit.models.decoding import decode_ids
from dltoolkit.models.speech import CTCNetwork, SpeechTransformer, ctc_decode, ctc_loss

PAD, BOS, EOS = 0, 1, 2
SYMBOLS = np.arange(3, 8)
VOCABULARY = 8
N_MELS = 16
TOKEN_FRAMES, GAP_FRAMES, MAX_TOKENS = 6, 2, 4
CLIPS = 160


def toy_clips(count=CLIPS, seed=0):
    """Features (count, T, N_MELS) zero-padded, valid frame counts and token sequences."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(99).normal(size=(len(SYMBOLS), TOKEN_FRAMES, N_MELS))
    clips, sequences = [], []
    for _ in range(count):
        tokens = rng.choice(SYMBOLS, size=rng.integers(1, MAX_TOKENS + 1))
        frames = [np.zeros((rng.integers(0, 4), N_MELS))]
        for token in tokens:
            frames += [patterns[token - SYMBOLS[0]], np.zeros((GAP_FRAMES, N_MELS))]
        clip = np.concatenate(frames)
        clips.append(clip + 0.1 * rng.normal(size=clip.shape))
        sequences.append(list(tokens))
    lengths = np.array([len(c) for c in clips], "int32")
    features = np.zeros((count, lengths.max(), N_MELS), "float32")
    for i, clip in enumerate(clips):
        features[i, : len(clip)] = clip
    return features, lengths, sequences


def padded(sequences, width, before=(), after=()):
    rows = np.full((len(sequences), width), PAD, "int32")
    for i, s in enumerate(sequences):
        row = [*before, *s, *after]
        rows[i, : len(row)] = row
    return rows


def with_garbage(features, lengths, extra=7, seed=1):
    """The same clips padded with `extra` more frames, and noise in every padding frame."""
    rng = np.random.default_rng(seed)
    noisy = rng.normal(size=(len(features), features.shape[1] + extra, N_MELS)).astype("float32")
    for i, n in enumerate(lengths):
        noisy[i, :n] = features[i, :n]
    return noisy


def exact(ids, sequences):
    return np.mean(
        [list(row[row != PAD]) == s for row, s in zip(np.asarray(ids), sequences, strict=True)]
    )


@pytest.fixture(scope="module")
def data():
    return toy_clips()


def small_transformer():
    return SpeechTransformer(
        VOCABULARY, n_mels=N_MELS, d_model=32, layers_=1, heads=2, ff_dim=64, dropout=0.0
    )


def transformer_inputs(features, lengths, sequences, width=MAX_TOKENS + 1):
    x = {
        "features": features,
        "lengths": lengths,
        "target": padded(sequences, width, before=[BOS]),
    }
    y = padded(sequences, width, after=[EOS])
    return x, y, (y != PAD).astype("float32")


@pytest.fixture(scope="module")
def transformer(data):
    keras.utils.set_random_seed(0)
    model = small_transformer()
    model.compile(
        keras.optimizers.Adam(5e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=5,
    )
    x, y, weights = transformer_inputs(*data)
    history = model.fit(x, y, sample_weight=weights, batch_size=32, epochs=24, verbose=0)
    return model, history.history["loss"]


@pytest.fixture(scope="module")
def ctc(data):
    keras.utils.set_random_seed(0)
    features, lengths, sequences = data
    model = CTCNetwork(VOCABULARY, n_mels=N_MELS, channels=8, units=32, rnn_layers=2, dropout=0.1)
    model.compile(keras.optimizers.Adam(8e-3), steps_per_execution=5)
    x = {"features": features, "lengths": lengths}
    history = model.fit(x, padded(sequences, MAX_TOKENS), batch_size=32, epochs=24, verbose=0)
    return model, history.history["loss"]


def transcribe(model, features, lengths, sampler):
    source = {"features": tf.constant(features), "lengths": tf.constant(lengths)}
    return decode_ids(model, source, sampler, MAX_TOKENS + 1, BOS, EOS, PAD).numpy()


def sequence_log_prob(model, features, lengths, ids):
    """log p(ids | clip) of generated ids (B, L) under teacher forcing, per clip: the tokens
    and the end token, unless the sequence filled all L places (what beam search ranks)."""
    sequences = [list(row[row != PAD]) for row in ids]
    x, y, weights = transformer_inputs(features, lengths, sequences, width=ids.shape[1] + 1)
    log_probs = tf.nn.log_softmax(model(x))
    picked = tf.gather(log_probs, y, batch_dims=2).numpy()
    return (picked * weights)[:, : ids.shape[1]].sum(axis=1)


def test_transformer_learns_and_decodes(transformer, data):
    model, losses = transformer
    features, lengths, sequences = data
    assert losses[-1] < 0.1 * losses[0]
    greedy = transcribe(model, features, lengths, keras_hub.samplers.GreedySampler())
    assert exact(greedy, sequences) >= 0.9
    beam = transcribe(model, features, lengths, keras_hub.samplers.BeamSampler(num_beams=3))
    assert exact(beam, sequences) >= exact(greedy, sequences) - 0.02
    beam_score = sequence_log_prob(model, features, lengths, beam)
    greedy_score = sequence_log_prob(model, features, lengths, greedy)
    assert beam_score.mean() >= greedy_score.mean() - 1e-3


def test_transformer_ignores_padding(transformer, data):
    model, _ = transformer
    features, lengths, sequences = data
    x, _, _ = transformer_inputs(features[:8], lengths[:8], sequences[:8])
    noisy = model({**x, "features": with_garbage(x["features"], x["lengths"])})
    for i in range(3):
        alone = {k: v[i : i + 1] for k, v in x.items()}
        alone["features"] = alone["features"][:, : lengths[i]]
        np.testing.assert_allclose(model(alone)[0], noisy[i], atol=1e-4)
    sampler = keras_hub.samplers.GreedySampler()
    np.testing.assert_array_equal(
        transcribe(model, x["features"], x["lengths"], sampler),
        transcribe(model, with_garbage(x["features"], x["lengths"]), x["lengths"], sampler),
    )


def test_ctc_learns_and_decodes(ctc, data):
    model, losses = ctc
    features, lengths, sequences = data
    assert losses[-1] < 0.1 * losses[0]
    logits = model({"features": features, "lengths": lengths})
    frames = model.output_lengths(lengths)
    greedy = ctc_decode(logits, frames, pad_id=PAD).numpy()
    beam = ctc_decode(logits, frames, beam_width=4, pad_id=PAD).numpy()
    assert exact(greedy, sequences) >= 0.9
    assert exact(beam, sequences) >= exact(greedy, sequences)

    def scores(ids):
        label_lengths = (ids != PAD).sum(axis=1)
        return -keras.ops.ctc_loss(ids, logits, label_lengths, frames, mask_index=VOCABULARY)

    assert np.all(scores(beam) >= scores(greedy) - 1e-4)
    mean_loss = ctc_loss(padded(sequences, MAX_TOKENS), [len(s) for s in sequences], logits,
                         frames, VOCABULARY)  # fmt: skip
    np.testing.assert_allclose(mean_loss, -np.mean(scores(padded(sequences, MAX_TOKENS))), 1e-5)


def test_ctc_ignores_padding(ctc, data):
    model, _ = ctc
    features, lengths, _ = data
    features, lengths = features[:8], lengths[:8]
    noisy = model({"features": with_garbage(features, lengths), "lengths": lengths})
    frames = model.output_lengths(lengths).numpy()
    for i in range(3):
        alone = model(
            {"features": features[i : i + 1, : lengths[i]], "lengths": lengths[i : i + 1]}
        )
        assert alone.shape[1] == frames[i]
        np.testing.assert_allclose(alone[0], noisy[i, : frames[i]], atol=1e-4)


def test_save_load_same_logits(transformer, ctc, data, tmp_path):
    features, lengths, sequences = data
    x, _, _ = transformer_inputs(features[:4], lengths[:4], sequences[:4])
    for model in (transformer[0], ctc[0]):
        inputs = (
            x if isinstance(model, SpeechTransformer) else {k: x[k] for k in x if k != "target"}
        )
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
        np.testing.assert_allclose(loaded(inputs), model(inputs), atol=1e-5)


def test_mixed_precision_under_mirrored_strategy(data):
    features, lengths, sequences = data
    features, lengths, sequences = features[:16], lengths[:16], sequences[:16]
    x, y, weights = transformer_inputs(features, lengths, sequences)
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
            speech = small_transformer()
            speech.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            loss = speech.fit(x, y, sample_weight=weights, epochs=1, verbose=0).history["loss"]
            assert np.isfinite(loss[0]) and speech(x).dtype == "float32"
            ctc = CTCNetwork(VOCABULARY, n_mels=N_MELS, channels=4, units=8, rnn_layers=1)
            ctc.compile("adam")
            inputs = {"features": features, "lengths": lengths}
            loss = ctc.fit(inputs, padded(sequences, MAX_TOKENS), epochs=1, verbose=0)
            assert np.isfinite(loss.history["loss"][0]) and ctc(inputs).dtype == "float32"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="multiple of heads"):
        SpeechTransformer(VOCABULARY, d_model=30, heads=4)
    with pytest.raises(ConfigError, match="beam_width"):
        ctc_decode(tf.zeros((1, 3, VOCABULARY + 1)), tf.constant([3]), beam_width=0)
