"""The pretrained detector path on tiny randomly initialised KerasHub presets saved to tmp_path."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from dltoolkit.core.errors import ConfigError
from dltoolkit.models.hub_detection import (
    hub_compile_args,
    hub_detections,
    hub_detector,
    hub_targets,
)

SIZE = 64


def tiny_resnet(**kwargs):
    """The smallest ResNet KerasHub builds (its first stage must have 64 filters)."""
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16, 16],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        **kwargs,
    )


def save_retinanet(directory, image_shape=(None, None, 3), preprocessor=True):
    """A random 3-class RetinaNet (pyramid levels 3-4) saved in KerasHub's default "yxyx",
    with a [0, 1] image converter to 32x32 (or no preprocessor)."""
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=tiny_resnet(image_shape=image_shape),
        min_level=3,
        max_level=4,
        use_p5=False,
        image_shape=image_shape,
    )
    converter = keras_hub.layers.RetinaNetImageConverter(image_size=(32, 32), scale=1 / 255)
    task = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone,
        num_classes=3,
        preprocessor=keras_hub.models.RetinaNetObjectDetectorPreprocessor(converter)
        if preprocessor
        else None,
        pre_logits_num_conv_layers=1,
    )
    task.save_to_preset(directory)
    return str(directory)


@pytest.fixture(scope="module")
def retinanet_preset(tmp_path_factory):
    return save_retinanet(tmp_path_factory.mktemp("retinanet") / "preset")


def toy_boxes(count: int, seed: int = 0):
    """Images with one bright square (class 0) and, in every other image, one wide bar
    (class 1) on dark noise, and their packed boxes [count, 3, 5] (padding rows class -1)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 40, (count, SIZE, SIZE, 3)).astype("float32")
    packed = np.full((count, 3, 5), -1.0, "float32")
    for i in range(count):
        x, y = rng.integers(2, 30, size=2)
        images[i, y : y + 28, x : x + 28] = 230.0
        packed[i, 0] = (x, y, x + 28, y + 28, 0)
        if i % 2:
            images[i, 56:62, 4:60] = 200.0
            packed[i, 1] = (4, 56, 60, 62, 1)
    return images, packed


def test_hub_targets_pads_with_minus_one_inside_tf_data():
    _, packed = toy_boxes(4)
    targets = next(iter(tf.data.Dataset.from_tensor_slices(packed).batch(4).map(hub_targets)))
    np.testing.assert_array_equal(targets["labels"][1], [0, 1, -1])
    np.testing.assert_array_equal(targets["boxes"][0, 1:], -np.ones((2, 4)))
    np.testing.assert_array_equal(targets["boxes"][1, :2], packed[1, :2, :4])


def test_retinanet_fine_tunes_decodes_and_survives_saving(retinanet_preset, tmp_path):
    model = hub_detector(retinanet_preset, num_classes=2, image_size=SIZE)
    assert model.num_classes == 2
    assert model.bounding_box_format == "xyxy"
    assert model.preprocessor.image_converter.image_size == (SIZE, SIZE)
    assert model.preprocessor.image_converter.bounding_box_format == "xyxy"
    assert model.preprocessor.image_converter.scale == 1 / 255  # the preset's value scaling
    assert model.label_encoder.bounding_box_format == "xyxy"
    preset = keras_hub.models.ObjectDetector.from_preset(retinanet_preset)
    for kept in (model.box_head, model.backbone):  # class-independent weights come along
        twin = preset.box_head if kept is model.box_head else preset.backbone
        for ours, theirs in zip(kept.weights, twin.weights, strict=True):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())

    images, packed = toy_boxes(8)
    data = tf.data.Dataset.from_tensor_slices((images, packed)).batch(4)
    data = data.map(lambda x, boxes: (x, hub_targets(boxes))).repeat()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), **hub_compile_args(model))
    losses = model.fit(data, epochs=6, steps_per_epoch=2, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))
    assert min(losses[-2:]) < losses[0]

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32),  # as the SavedModel signature
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.int32),
        ]
    )
    def detect(x, score, iou, most):
        return hub_detections(
            model, x, score_threshold=score, iou_threshold=iou, max_detections=most
        )

    found = detect(images[:3], tf.constant(0.0), tf.constant(0.5), tf.constant(7))
    assert found["boxes"].shape == (3, 7, 4) and found["boxes"].dtype == tf.float32
    assert found["scores"].dtype == tf.float32 and found["labels"].dtype == tf.int32
    assert found["count"].dtype == tf.int32 and found["count"].shape == (3,)
    assert np.all(found["count"].numpy() == 7)  # a zero threshold keeps max_detections boxes
    assert set(np.unique(found["labels"])) <= {0, 1}
    boxes = found["boxes"].numpy()
    assert boxes.min() >= 0 and boxes.max() <= SIZE
    assert np.all(boxes[..., 2] >= boxes[..., 0]) and np.all(boxes[..., 3] >= boxes[..., 1])
    scores = found["scores"].numpy()
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first

    none = detect(images[:3], tf.constant(1.0), tf.constant(0.5), tf.constant(7))
    np.testing.assert_array_equal(none["count"], [0, 0, 0])
    np.testing.assert_array_equal(none["labels"], -np.ones((3, 7)))
    np.testing.assert_array_equal(none["boxes"], np.zeros((3, 7, 4)))

    before = hub_detections(model, images[:3], score_threshold=0.0, max_detections=7)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    after = hub_detections(loaded, images[:3], score_threshold=0.0, max_detections=7)
    for key in ("boxes", "scores", "labels", "count"):
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-5)


def test_same_classes_keep_the_preset_head(retinanet_preset):
    model = hub_detector(retinanet_preset, num_classes=3, image_size=SIZE)
    preset = keras_hub.models.ObjectDetector.from_preset(retinanet_preset)
    for ours, theirs in zip(model.weights, preset.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_a_preset_without_preprocessor_gets_a_0_1_converter(tmp_path):
    model = hub_detector(save_retinanet(tmp_path, preprocessor=False), 2, SIZE)
    converter = model.preprocessor.image_converter
    assert (converter.image_size, converter.scale) == ((SIZE, SIZE), 1 / 255)
    found = hub_detections(model, np.full((1, SIZE, SIZE, 3), 255.0, "float32"), score_threshold=0)
    assert found["boxes"].shape == (1, 100, 4)


def one_line_config_error(fragment: str, *args):
    with pytest.raises(ConfigError, match=fragment) as caught:
        hub_detector(*args)
    assert "\n" not in str(caught.value)


def test_bad_presets_are_one_line_config_errors(retinanet_preset, tmp_path):
    one_line_config_error("not a KerasHub preset directory", str(tmp_path / "missing"), 2, SIZE)
    one_line_config_error("unknown object-detector preset 'yolo_v99'", "yolo_v99", 2, SIZE)
    one_line_config_error("divisible by 32, got 70; pass e.g. --image-size 64", "x", 2, 70)
    fixed = save_retinanet(tmp_path / "fixed", image_shape=(32, 32, 3))
    one_line_config_error("takes 32x32 images; pass --image-size 32", fixed, 2, SIZE)
    classifier = keras_hub.models.ResNetImageClassifier(backbone=tiny_resnet(), num_classes=2)
    classifier.save_to_preset(tmp_path / "classifier")
    one_line_config_error(
        "could not be loaded as a KerasHub object detector", str(tmp_path / "classifier"), 2, SIZE
    )


def test_a_d_fine_preset_is_refused(tmp_path):
    image_shape = (SIZE, SIZE, 3)
    stages = ["stage3", "stage4"]
    encoder = keras_hub.models.HGNetV2Backbone(
        stem_channels=[3, 8, 8],
        stackwise_stage_filters=[
            [8, 8, 16, 1, 3, 3],
            [16, 8, 32, 1, 3, 3],
            [32, 16, 64, 1, 3, 5],
            [64, 16, 64, 1, 3, 5],
        ],
        apply_downsample=[False, True, True, True],
        use_lightweight_conv_block=[False, False, True, True],
        depths=[1, 1, 1, 1],
        hidden_sizes=[16, 32, 64, 64],
        embedding_size=8,
        use_learnable_affine_block=True,
        hidden_act="relu",
        image_shape=image_shape,
        out_features=stages,
    )
    backbone = keras_hub.models.DFineBackbone(
        backbone=encoder,
        decoder_in_channels=[16, 16],
        encoder_hidden_dim=16,
        num_labels=2,
        num_denoising=0,
        learn_initial_query=False,
        num_queries=10,
        anchor_image_size=(SIZE, SIZE),
        feat_strides=[16, 32],
        num_feature_levels=2,
        hidden_dim=16,
        encoder_in_channels=[64, 64],
        encode_proj_layers=[1],
        num_attention_heads=2,
        encoder_ffn_dim=32,
        num_encoder_layers=1,
        hidden_expansion=0.34,
        depth_multiplier=0.5,
        eval_idx=-1,
        num_decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        decoder_n_points=[2, 2],
        lqe_hidden_dim=8,
        num_lqe_layers=1,
        out_features=stages,
        image_shape=image_shape,
    )
    keras_hub.models.DFineObjectDetector(backbone=backbone, num_classes=2).save_to_preset(
        tmp_path / "dfine"
    )
    one_line_config_error("is a D-FINE detector", str(tmp_path / "dfine"), 2, SIZE)
