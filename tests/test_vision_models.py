"""Tests of dltoolkit.models.vision: shapes, learning, weights sources, save/load."""

import socket
from pathlib import Path

import keras
import numpy as np
import pytest

from dltoolkit.core.errors import ConfigError, WeightsError
from dltoolkit.models.vision import (
    BACKBONES,
    CaffePreprocess,
    build_image_model,
    default_image_size,
)


def _images(shape, n=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def _assert_probabilities(probs, n, num_classes):
    probs = np.asarray(probs)
    assert probs.shape == (n, num_classes)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_backbone_names_and_default_sizes():
    assert BACKBONES[0] == "small-cnn"
    assert {
        "resnet50",
        "efficientnet-b0",
        "efficientnetv2-s",
        "mobilenetv3-small",
        "convnext-tiny",
        "vit-b16",
        "vit-tiny",
    } <= set(BACKBONES)
    assert default_image_size("small-cnn") is None
    assert default_image_size("vit-tiny") is None
    assert default_image_size("resnet50") == 224
    assert default_image_size("vit-b16") == 224
    assert default_image_size("efficientnet-b3") == 300


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_small_cnn_output(shape):
    built = build_image_model("small-cnn", shape, 10)
    assert built.backbone is None
    assert 50_000 <= built.model.count_params() <= 300_000
    _assert_probabilities(built.model(_images(shape)), 3, 10)


def test_small_cnn_learns_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images[..., None] * (255 / 16)).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    keras.utils.set_random_seed(0)
    model = build_image_model("small-cnn", (8, 8, 1), 10).model
    model.compile(
        optimizer=keras.optimizers.AdamW(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=32, epochs=8, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy > 0.9


@pytest.mark.parametrize("channels", [1, 3])
def test_pretrained_family_forward(channels):
    built = build_image_model("mobilenetv3-small", (32, 32, channels), 4)
    assert isinstance(built.backbone, keras.Model)
    _assert_probabilities(built.model(_images((32, 32, channels))), 3, 4)


def test_grey_is_repeated_to_rgb_and_backbone_stays_in_inference_mode():
    grey = build_image_model("resnet50", (32, 32, 1), 4, dropout=0.0)
    rgb = build_image_model("resnet50", (32, 32, 3), 4, dropout=0.0)
    x = _images((32, 32, 1), n=4)
    probs = np.asarray(grey.model(x))
    assert probs.std() > 1e-3  # not a degenerate constant output
    rgb.model.set_weights(grey.model.get_weights())
    np.testing.assert_allclose(rgb.model(np.repeat(x, 3, axis=-1)), probs, atol=1e-5)
    # training=True (as in fit) must not switch the backbone's BatchNorm to batch stats.
    np.testing.assert_allclose(grey.model(x, training=True), probs, atol=1e-5)
    grey.backbone.trainable = False  # the recipe's frozen phase: only the head trains
    assert len(grey.model.trainable_weights) == 2
    bn = next(
        layer
        for layer in grey.backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    moving_mean, gamma = np.array(bn.moving_mean), np.array(bn.gamma)
    grey.backbone.trainable = True  # fine-tuning: BatchNorm weights train, stats stay
    grey.model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,
    )  # one step: skip tracing the graph
    grey.model.fit(x, np.arange(4), epochs=1, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean, moving_mean)
    assert not np.array_equal(bn.gamma, gamma)


def test_vit_tiny_forward():
    for shape in [(28, 28, 1), (6, 6, 3)]:
        built = build_image_model("vit-tiny", shape, 3)
        assert isinstance(built.backbone, keras.Model)
        _assert_probabilities(built.model(_images(shape)), 3, 3)


def test_caffe_preprocess_matches_keras_applications():
    x = _images((4, 4, 3))
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(CaffePreprocess()(x), expected, atol=1e-4)


@pytest.mark.parametrize("backbone", ["mobilenetv3-small", "vit-tiny", "small-cnn"])
def test_weights_from_local_file(tmp_path, backbone):
    first = build_image_model(backbone, (32, 32, 3), 5)
    source = first.backbone or first.model
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    second = build_image_model(backbone, (32, 32, 3), 5, weights=str(path))
    loaded = second.backbone or second.model
    for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_weights_from_legacy_h5_file(tmp_path):
    """The format of the *_notop.h5 files keras.applications downloads."""
    h5py = pytest.importorskip("h5py")
    legacy = pytest.importorskip("keras.src.legacy.saving.legacy_h5_format")
    first = build_image_model("mobilenetv3-small", (32, 32, 3), 5)
    path = tmp_path / "mobilenet_v3_small_notop.h5"
    with h5py.File(path, "w") as f:
        legacy.save_weights_to_hdf5_group(f, first.backbone)
    second = build_image_model("mobilenetv3-small", (32, 32, 3), 5, weights=str(path))
    for a, b in zip(first.backbone.get_weights(), second.backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_weights_from_local_kerashub_preset(tmp_path):
    import keras_hub

    first = build_image_model("vit-tiny", (32, 32, 3), 2)
    first.backbone.save_to_preset(tmp_path)
    keras_hub.layers.ViTImageConverter(
        image_size=(32, 32), scale=1 / 255.0, offset=-0.5
    ).save_to_preset(tmp_path)
    second = build_image_model("vit-tiny", (32, 32, 1), 2, weights=str(tmp_path))
    for a, b in zip(first.backbone.get_weights(), second.backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    rescaling = second.model.get_layer("vit_rescaling")
    assert rescaling.scale == pytest.approx(1 / 255.0) and rescaling.offset == -0.5
    with pytest.raises(ConfigError, match="32x32"):
        build_image_model("vit-tiny", (64, 64, 3), 2, weights=str(tmp_path))


@pytest.mark.parametrize(
    ("backbone", "shape"),
    [
        ("small-cnn", (28, 28, 1)),
        ("resnet50", (32, 32, 1)),  # CaffePreprocess + grey -> RGB
        ("vit-tiny", (32, 32, 3)),  # KerasHub backbone + ClassToken
    ],
)
def test_keras_file_round_trip(tmp_path, backbone, shape):
    model = build_image_model(backbone, shape, 3).model
    x = _images(shape)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored(x), model(x), rtol=1e-5, atol=1e-6)


def test_output_is_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for backbone in ("small-cnn", "mobilenetv3-small", "vit-tiny"):
            probs = build_image_model(backbone, (32, 32, 3), 3).model(_images((32, 32, 3)))
            assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_unknown_backbone():
    with pytest.raises(ConfigError, match="did you mean 'resnet50'") as info:
        build_image_model("resnet-50", (32, 32, 3), 2)
    assert "small-cnn" in str(info.value) and "vit-b16" in str(info.value)
    with pytest.raises(ConfigError, match="valid backbones"):
        default_image_size("alexnet")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backbone": "small-cnn", "weights": "imagenet"}, ConfigError, "no ImageNet weights"),
        ({"backbone": "resnet50", "image_shape": (28, 28, 1)}, ConfigError, "at least 32x32"),
        ({"backbone": "small-cnn", "image_shape": (28, 28, 2)}, ConfigError, "grayscale or RGB"),
        ({"backbone": "small-cnn", "num_classes": 1}, ConfigError, "at least 2 classes"),
        ({"backbone": "vit-b16", "image_shape": (40, 40, 3)}, ConfigError, "divisible by 16"),
        ({"backbone": "vit-b16", "weights": "imagenet"}, ConfigError, "224x224"),
        ({"backbone": "vit-tiny", "weights": "imagenet"}, ConfigError, "no ImageNet weights"),
    ],
)
def test_invalid_options(kwargs, error, match):
    args = {"image_shape": (32, 32, 3), "num_classes": 3, **kwargs}
    with pytest.raises(error, match=match):
        build_image_model(
            args.pop("backbone"), args.pop("image_shape"), args.pop("num_classes"), **args
        )


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, on the wrong file
def test_missing_or_wrong_weights_path(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build_image_model("mobilenetv3-small", (32, 32, 3), 2, weights=str(tmp_path / "x.h5"))
    with pytest.raises(WeightsError, match="directory"):
        build_image_model("mobilenetv3-small", (32, 32, 3), 2, weights=str(tmp_path))
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"\.weights\.h5"):
        build_image_model("small-cnn", (8, 8, 1), 2, weights=str(tmp_path / "weights.npz"))
    other = tmp_path / "other.weights.h5"
    build_image_model("small-cnn", (8, 8, 1), 2).model.save_weights(other)
    with pytest.raises(WeightsError, match="cannot load"):
        build_image_model("mobilenetv3-small", (32, 32, 3), 2, weights=str(other))


def test_imagenet_offline_raises_weights_error():
    cached = Path.home() / ".keras/models/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    if cached.exists():
        pytest.skip("MobileNetV3Small ImageNet weights are cached in ~/.keras")
    try:
        build_image_model("mobilenetv3-small", (32, 32, 3), 2, weights="imagenet")
    except WeightsError as e:
        message = str(e)
    else:
        pytest.skip("ImageNet weights could be downloaded: this machine is online")
    assert "mobilenetv3-small" in message and "weights=none" in message
    assert "\n" not in message


def test_vit_imagenet_offline_raises_weights_error():
    try:
        socket.getaddrinfo("www.kaggle.com", 443)
    except OSError:
        pass
    else:
        pytest.skip("Kaggle is reachable: the test would download the 330 MB ViT-B/16 preset")
    with pytest.raises(WeightsError, match="vit-b16.*KerasHub preset directory"):
        build_image_model("vit-b16", (224, 224, 3), 2, weights="imagenet")
