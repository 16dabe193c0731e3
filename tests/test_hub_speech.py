"""The pretrained speech path (KerasHub Moonshine and Whisper) on tiny random presets saved to
a local directory: loading, fine-tuning on synthetic clips, graph transcription, save/load and
bad preset directories."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from dltoolkit.core.errors import ConfigError
from dltoolkit.models.hub_speech import (
    WhisperSpeechToText,
    check_speech_preset,
    load_speech_model,
    random_speech_preset,
    transcribe_graph,
)

TEXTS = ["one two", "three", "five six", "nine"]
MAX_LENGTH = 12


def tone_clips() -> np.ndarray:
    """Four half-second clips at 16 kHz, each a tone of its own pitch and a little noise."""
    t = np.arange(8000) / 16000
    rng = np.random.default_rng(0)
    clips = [0.5 * np.sin(2 * np.pi * f * t) for f in (220, 440, 880, 1760)]
    return (np.stack(clips) + 0.01 * rng.normal(size=(4, 8000))).astype("float32")


def batches(waves) -> tf.data.Dataset:
    data = {"audio": waves, "text": tf.constant(TEXTS)}
    return tf.data.Dataset.from_tensor_slices(data).batch(len(TEXTS)).repeat()


def graph_transcriber(model, beams=1):
    return tf.function(
        lambda waves: transcribe_graph(model, waves, MAX_LENGTH, beams=beams),
        input_signature=[tf.TensorSpec([None, None], tf.float32)],
    )


# Whisper (our own decoding loop) in the fast suite; Moonshine (KerasHub's) with the slow tests.
@pytest.fixture(
    scope="module", params=[pytest.param("moonshine", marks=pytest.mark.slow), "whisper"]
)
def tuned(request, tmp_path_factory):
    """A model loaded from a tiny random preset and fine-tuned on the same batch, its loss
    per epoch and the directory it came from."""
    keras.utils.set_random_seed(0)
    directory = random_speech_preset(
        tmp_path_factory.mktemp(request.param) / "preset", kind=request.param, texts=TEXTS * 4
    )
    model = load_speech_model(str(directory), max_target_length=MAX_LENGTH)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    history = model.fit(batches(tone_clips()), steps_per_epoch=10, epochs=3, verbose=0)
    return request.param, model, history.history["loss"], directory


def test_loads_its_kind_from_a_local_preset(tuned):
    kind, model, _, directory = tuned
    assert check_speech_preset(str(directory)) == kind
    assert isinstance(model, WhisperSpeechToText) == (kind == "whisper")


def test_fine_tuning_lowers_the_loss(tuned):
    _, _, losses, _ = tuned
    assert losses[-1] < 0.5 * losses[0], losses


def test_transcribes_in_a_graph(tuned):
    _, model, _, _ = tuned
    waves = tone_clips()
    greedy = graph_transcriber(model)(waves).numpy()
    assert greedy.shape == (4,) and all(isinstance(text, bytes) for text in greedy)
    assert graph_transcriber(model, beams=2)(waves[:3]).numpy().shape == (3,)


def test_save_and_load_keep_the_transcripts(tuned, tmp_path):
    _, model, _, _ = tuned
    waves = tone_clips()
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert list(graph_transcriber(restored)(waves).numpy()) == list(
        graph_transcriber(model)(waves).numpy()
    )


def test_fine_tuning_memorises_the_batch(tuned):
    _, model, _, _ = tuned
    assert [text.decode() for text in graph_transcriber(model)(tone_clips()).numpy()] == TEXTS


def test_a_directory_without_a_preset_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no readable config.json") as error:
        check_speech_preset(str(tmp_path))
    assert "\n" not in str(error.value)


def test_a_preset_of_another_model_is_a_one_line_config_error(tmp_path):
    config = {"class_name": "BertBackbone", "registered_name": "keras_hub>BertBackbone"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="BertBackbone, not a speech model") as error:
        load_speech_model(str(tmp_path))
    assert "\n" not in str(error.value) and "Moonshine" in str(error.value)


def test_an_unknown_preset_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="moonshine_tiny_en.*whisper_tiny_en"):
        check_speech_preset("no_such_speech_model")
