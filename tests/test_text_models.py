"""From-scratch text classifiers on learnable toys: reviews whose class is given by one of a few
"good" or "bad" words among filler, and topics (multi-label) given by their own words. Each
model must learn them from raw strings, survive save/load, read long texts by the named
truncation or window by window, and the Transformer's encoder must pretrain as a masked LM."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dltoolkit.core.errors import ConfigError
from dltoolkit.core.export import Signature, write_saved_model
from dltoolkit.data.text import train_vocabulary
from dltoolkit.models.text_classification import (
    CLASSIFIER_TOKENS,
    CLS_ID,
    MASK_ID,
    PAD_ID,
    ConvTextClassifier,
    FastTextClassifier,
    TextIds,
    TransformerClassifier,
    classification_loss,
    mask_tokens,
    mlm_pretrainer,
)

GOOD = ["good", "great", "lovely", "superb"]
BAD = ["bad", "awful", "poor", "boring"]
FILLER = [
    "the",
    "a",
    "film",
    "movie",
    "plot",
    "actor",
    "scene",
    "was",
    "is",
    "and",
    "it",
    "very",
    "really",
    "story",
]
TOPICS = {"sport": ["goal", "match", "team"], "food": ["bread", "soup", "cheese"]}
LENGTH = 16


def reviews(count, seed):
    """Texts of filler words with one good (label 1) or bad (label 0) word somewhere."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(count):
        label = int(rng.integers(2))
        words = [*rng.choice(FILLER, 8), rng.choice(GOOD if label else BAD)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels, "int32")


def topics(count, seed):
    """Texts with the words of a non-empty set of topics, and multi-hot labels."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(count):
        hot = [1.0, 1.0]
        hot[int(rng.integers(2))] = float(rng.integers(2))
        words = list(rng.choice(FILLER, 6))
        words += [rng.choice(TOPICS[t]) for t, on in zip(TOPICS, hot, strict=True) if on]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(hot)
    return texts, np.array(labels, "float32")


def dataset(texts, labels=None, batch=32):
    items = texts if labels is None else (texts, labels)
    return tf.data.Dataset.from_tensor_slices(items).batch(batch)


@pytest.fixture(scope="module")
def vocabulary():
    texts = reviews(300, 0)[0] + topics(100, 0)[0]
    return train_vocabulary(texts, 200, reserved=CLASSIFIER_TOKENS)


MODELS = {
    "fasttext": lambda v, classes, multi: FastTextClassifier(
        classes, multi, buckets=2000, dim=16, dropout=0.0
    ),
    "transformer": lambda v, classes, multi: TransformerClassifier(
        v,
        LENGTH,
        classes,
        multi,
        d_model=32,
        layers=1,
        heads=2,
        ff_dim=64,
        dropout=0.0,
        pooling="cls" if multi else "mean",  # both poolings learn
    ),
    "cnn": lambda v, classes, multi: ConvTextClassifier(
        v, LENGTH, classes, multi, d_model=32, filters=16, dropout=0.0
    ),
}


LEARNING_RATES = {"fasttext": 5e-2, "transformer": 5e-3, "cnn": 1e-2}


def trained(vocabulary, name, data, multi_label, epochs):
    """Model `name` fitted on (texts, labels) `data` fed as a tf.data dataset of strings."""
    keras.utils.set_random_seed(0)
    model = MODELS[name](vocabulary, 2, multi_label)
    model.compile(keras.optimizers.Adam(LEARNING_RATES[name]), classification_loss(multi_label))
    texts, labels = data
    model.fit(dataset(texts, labels).shuffle(64, seed=0), epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def classifiers(vocabulary):
    """Each model trained on the reviews toy."""
    data = reviews(240, 1)
    return {name: trained(vocabulary, name, data, False, 6) for name in MODELS}


# -- strings -> ids -------------------------------------------------------------------------


def word_ids(vocabulary, words):
    return [vocabulary.index(w) for w in words]


def test_head_and_head_tail_truncation_keep_the_right_tokens(vocabulary):
    words = FILLER[:12]
    text = tf.constant([" ".join(words), "film plot", ""])
    head = TextIds(vocabulary, 8, "head")(text).numpy()
    both = TextIds(vocabulary, 8, "head+tail")(text).numpy()
    assert head.dtype == np.int32 and head.shape == (3, 8)
    assert list(head[0]) == [CLS_ID, *word_ids(vocabulary, words[:7])]
    assert list(both[0]) == [CLS_ID, *word_ids(vocabulary, words[:4] + words[-3:])]
    for ids in (head, both):
        assert list(ids[1]) == [CLS_ID, *word_ids(vocabulary, ["film", "plot"]), *[PAD_ID] * 5]
        assert list(ids[2]) == [CLS_ID, *[PAD_ID] * 7]


def test_windows_cover_every_token_with_their_owner(vocabulary):
    words = FILLER[:7]
    ids, owner = TextIds(vocabulary, 4).windows(tf.constant([" ".join(words), "", "story"]))
    assert list(owner.numpy()) == [0, 0, 0, 1, 2]
    assert (ids.numpy()[:, 0] == CLS_ID).all()
    pieces = ids.numpy()[:3, 1:].ravel()
    assert list(pieces[pieces != PAD_ID]) == word_ids(vocabulary, words)
    assert list(ids.numpy()[3]) == [CLS_ID, 0, 0, 0]
    assert list(ids.numpy()[4]) == [CLS_ID, vocabulary.index("story"), 0, 0]


def test_fasttext_terms_are_lower_cased_words_of_any_script_and_their_ngrams():
    terms = FastTextClassifier(2, ngrams=2).terms(tf.constant(["Café au-lait!", "", "Ωμέγα"]))
    assert terms.to_list() == [
        [b"caf\xc3\xa9", b"au", b"lait", b"caf\xc3\xa9 au", b"au lait"],
        [],
        ["ωμέγα".encode()],
    ]


def test_bad_settings_are_config_errors(vocabulary):
    with pytest.raises(ConfigError, match="truncation"):
        TextIds(vocabulary, 8, "middle")
    with pytest.raises(ConfigError, match=r"\[PAD\]"):
        TextIds(["a", "b", *vocabulary], 8)
    with pytest.raises(ConfigError, match="pooling"):
        TransformerClassifier(vocabulary, 8, 2, d_model=8, heads=2, pooling="max")
    with pytest.raises(ConfigError, match="multiple of heads"):
        TransformerClassifier(vocabulary, 8, 2, d_model=10, heads=4)


# -- learning -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_each_model_learns_the_reviews_toy(classifiers, name):
    texts, labels = reviews(100, 2)
    probabilities = classifiers[name].predict(dataset(texts), verbose=0)
    assert probabilities.dtype == np.float32 and probabilities.shape == (100, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.mean(probabilities.argmax(axis=1) == labels) >= 0.95


@pytest.mark.slow  # the recipe test covers multi-label fast
@pytest.mark.parametrize("name", MODELS)
def test_each_model_learns_the_multi_label_toy(vocabulary, name):
    model = trained(vocabulary, name, topics(600, 3), True, 5)
    texts, labels = topics(80, 4)
    probabilities = model(tf.constant(texts)).numpy()
    assert probabilities.dtype == np.float32 and probabilities.shape == (80, 2)
    assert np.mean((probabilities > 0.5) == labels) >= 0.95


@pytest.mark.parametrize("name", MODELS)
def test_save_load_gives_the_same_probabilities(classifiers, name, tmp_path):
    texts = tf.constant(reviews(20, 5)[0] + ["", "a much longer text " * 9])
    model = classifiers[name]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded(texts), model(texts))
    if name != "fasttext":
        np.testing.assert_allclose(
            loaded.chunk_probabilities(texts), model.chunk_probabilities(texts), atol=1e-6
        )


@pytest.mark.parametrize("name", ["transformer", "cnn"])
def test_chunk_probabilities_average_the_windows(classifiers, name):
    model = classifiers[name]
    short, long = reviews(2, 6)[0], " ".join(reviews(4, 7)[0])
    strings = tf.constant([*short, long])
    chunked = tf.function(model.chunk_probabilities)(strings).numpy()
    assert chunked.shape == (3, 2)
    np.testing.assert_allclose(chunked[:2], model(tf.constant(short)).numpy(), atol=1e-5)
    ids, owner = model.text_ids.windows(tf.constant([long]))
    assert len(owner) > 1
    windows = model.probabilities(model.classify_ids(ids)).numpy()
    np.testing.assert_allclose(chunked[2], windows.mean(axis=0), atol=1e-5)


@pytest.mark.slow  # the contract checks the recipe export in a fresh process
def test_a_saved_model_serves_strings(classifiers, tmp_path):
    model, texts = classifiers["transformer"], tf.constant(reviews(4, 9)[0] + [""])
    spec = [tf.TensorSpec([None], tf.string, name="text")]
    signatures = {
        "serving_default": Signature(spec),
        "chunks": Signature(spec, call=lambda s: {"output": model.chunk_probabilities(s)}),
    }
    served = tf.saved_model.load(str(write_saved_model(tmp_path / "1", model, signatures)))
    whole = served.signatures["serving_default"](text=texts)["output"]
    np.testing.assert_allclose(whole, model(texts), atol=1e-6)
    chunks = served.signatures["chunks"](text=texts)["output"]
    np.testing.assert_allclose(chunks, model.chunk_probabilities(texts), atol=1e-6)


# -- masked-language-model pretraining ------------------------------------------------------


def test_mask_tokens_masks_only_word_pieces():
    ids = np.full((64, 32), 7, "int32")
    ids[:, 0], ids[:, 20:] = CLS_ID, PAD_ID
    masked, picked = mask_tokens(ids, 0.3, 50, seed=keras.random.SeedGenerator(1))
    masked, picked = np.asarray(masked), np.asarray(picked)
    assert not picked[:, 0].any() and not picked[:, 20:].any()
    assert 0.25 < picked[:, 1:20].mean() < 0.35
    assert (masked[~picked] == ids[~picked]).all()
    changed = masked[picked]
    assert 0.7 < np.mean(changed == MASK_ID) < 0.9
    assert ((changed == MASK_ID) | (changed == 7) | (changed >= len(CLASSIFIER_TOKENS))).all()


def test_mlm_pretraining_lowers_its_loss_and_trains_the_classifiers_encoder(vocabulary):
    keras.utils.set_random_seed(0)
    classifier = MODELS["transformer"](vocabulary, 2, False)
    pretrainer = mlm_pretrainer(classifier, mask_rate=0.2)
    assert pretrainer.encoder is classifier.encoder
    pretrainer.build()
    before = [w.numpy().copy() for w in classifier.encoder.weights]
    pretrainer.compile(keras.optimizers.Adam(5e-3))
    history = pretrainer.fit(dataset(reviews(240, 8)[0]), epochs=6, verbose=0).history["loss"]
    assert history[-1] < 0.8 * history[0]
    pretrained = [w.numpy().copy() for w in classifier.encoder.weights]
    assert all(not np.allclose(a, b) for a, b in zip(pretrained, before, strict=True))
    assert classifier(tf.constant(["good film", ""])).shape == (2, 2)
    for weight, value in zip(classifier.encoder.weights, pretrained, strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)
