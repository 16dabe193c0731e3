"""The pretrained text-classification path (a KerasHub TextClassifier from a preset) on a tiny
random BERT preset saved to a local directory: fine-tuning on raw strings, save/load, the
SavedModel graph and one-line errors for presets that cannot work."""

from __future__ import annotations

import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from dltoolkit.core.errors import ConfigError
from dltoolkit.models.hub_text import (
    HubTextClassifier,
    load_text_classifier,
    random_text_classifier_preset,
)

FILLER = ["the", "a", "film", "plot", "was", "it", "and", "of", "this", "story", "acting", "very"]
MAX_LENGTH = 16


def toy_reviews(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Texts of filler words with 'great' (class 1) or 'awful' (class 0) at a random place."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    texts = []
    for label in labels:
        words = list(rng.choice(FILLER, 6))
        words.insert(int(rng.integers(0, 7)), "great" if label else "awful")
        texts.append(" ".join(words))
    return np.array(texts, dtype=object), labels


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    texts, _ = toy_reviews(64, seed=1)
    directory = tmp_path_factory.mktemp("bert") / "preset"
    return random_text_classifier_preset(directory, list(texts), max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def tuned(preset):
    """A classifier loaded from the random preset, fine-tuned on the toy, and its losses."""
    keras.utils.set_random_seed(0)
    model = load_text_classifier(str(preset), classes=2, max_length=MAX_LENGTH)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    texts, labels = toy_reviews(48)
    data = tf.data.Dataset.from_tensor_slices((texts.astype(str), labels)).shuffle(48, seed=0)
    history = model.fit(data.batch(8), epochs=8, shuffle=False, verbose=0)
    return model, history.history["loss"]


def test_fine_tuning_learns_the_word_that_separates_the_classes(tuned):
    model, losses = tuned
    assert losses[-1] < 0.5 * losses[0]
    texts, labels = toy_reviews(32, seed=2)
    probabilities = model(tf.constant(texts.astype(str))).numpy()
    assert probabilities.shape == (32, 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert (probabilities.argmax(axis=1) == labels).mean() >= 0.9


def test_save_and_load_give_the_same_probabilities(tuned, tmp_path):
    model, _ = tuned
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded, HubTextClassifier)
    assert loaded.classifier.preprocessor.sequence_length == MAX_LENGTH
    texts = tf.constant(toy_reviews(8, seed=3)[0].astype(str))
    np.testing.assert_allclose(loaded(texts).numpy(), model(texts).numpy(), atol=1e-6)


def test_saved_model_serves_strings(tuned, tmp_path):
    model, _ = tuned
    module = tf.Module()
    module.model = model
    module.serve = tf.function(
        lambda text: {"probabilities": model(text, training=False)},
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    tf.saved_model.save(module, str(tmp_path / "saved"))
    served = tf.saved_model.load(str(tmp_path / "saved"))
    texts = tf.constant(toy_reviews(8, seed=4)[0].astype(str))
    np.testing.assert_allclose(
        served.serve(texts)["probabilities"].numpy(), model(texts).numpy(), atol=1e-5
    )


def test_multi_label_gives_independent_sigmoid_scores(preset):
    model = load_text_classifier(str(preset), classes=3, multi_label=True, max_length=MAX_LENGTH)
    probabilities = model(tf.constant(["great film", "awful plot", ""])).numpy()
    assert probabilities.shape == (3, 3)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert not np.allclose(probabilities.sum(axis=1), 1)
    assert model(keras.Input((), dtype="string")).shape == (None, 3)


def test_max_length_beyond_the_preset_window_is_a_config_error(preset):
    with pytest.raises(ConfigError, match=f"--max-length {MAX_LENGTH}"):
        load_text_classifier(str(preset), classes=2, max_length=4 * MAX_LENGTH)


def test_directory_without_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a KerasHub preset directory"):
        load_text_classifier(str(tmp_path), classes=2)


def test_directory_with_a_broken_preset_is_a_config_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"class_name": "Nothing"}))
    with pytest.raises(ConfigError, match="could not be loaded as a TextClassifier"):
        load_text_classifier(str(tmp_path), classes=2)


def test_backbone_without_tokenizer_is_a_config_error(tmp_path):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=MAX_LENGTH,
    )
    backbone.save_to_preset(str(tmp_path))
    with pytest.raises(ConfigError, match="tokenizer.json"):
        load_text_classifier(str(tmp_path), classes=2, max_length=MAX_LENGTH)


def test_unknown_preset_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'bert_gigantic_xx'") as error:
        load_text_classifier("bert_gigantic_xx", classes=2)
    assert "bert_tiny_en_uncased" in str(error.value)
    assert "\n" not in str(error.value)
