"""Tests of dltoolkit.models.detection: network layout, assignment, losses, decoding, a toy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from dltoolkit.core.errors import ConfigError
from dltoolkit.models.detection import (
    STRIDES,
    DetectionLoss,
    anchor_points,
    assign_targets,
    box_iou,
    build_detector,
    decode_detections,
    distances_to_boxes,
    iou_loss,
)

ROOT = Path(__file__).resolve().parents[1]


def _boxes(*rows, size=3):
    """[1, M, 5] y_true from (x1, y1, x2, y2, class) rows, padded to `size` rows."""
    y = np.full((1, size, 5), -1.0, np.float32)
    if rows:
        y[0, : len(rows)] = rows
    return y


def _perfect_outputs(y_true, image_size, num_classes, shift=0.0, logit=4.0):
    """Outputs whose every anchor point predicts the first true box, moved by `shift` px in x,
    with logit `logit` for its class; distances clipped at 0 outside the box."""
    centres, _ = anchor_points(image_size)
    box = y_true[0, 0, :4] + np.array([shift, 0, shift, 0], np.float32)
    distances = np.concatenate([centres - box[:2], box[2:] - centres], axis=-1).clip(0)
    logits = np.full((len(centres), num_classes), -6.0, np.float32)
    logits[:, int(y_true[0, 0, 4])] = logit
    return np.concatenate([distances, logits], axis=-1)[None].astype(np.float32)


# --- network --------------------------------------------------------------------------------


@pytest.mark.parametrize(("image_size", "channels", "classes"), [(64, 3, 2), (96, 1, 5)])
def test_output_shape_and_distances(image_size, channels, classes):
    model = build_detector(classes, image_size, channels, width=8)
    images = np.random.default_rng(0).uniform(0, 255, (2, image_size, image_size, channels))
    outputs = model(images.astype("float32")).numpy()
    points = sum((image_size // s) ** 2 for s in STRIDES)
    assert outputs.shape == (2, points, 4 + classes)
    assert outputs.dtype == np.float32
    assert (outputs[..., :4] >= 0).all()
    assert model.name == "yolo"


def test_anchor_points_follow_the_output_order():
    centres, strides = anchor_points(64)
    assert centres.shape == (84, 2) and strides.shape == (84,)
    np.testing.assert_array_equal(centres[:2], [[4, 4], [12, 4]])  # row-major: x first
    np.testing.assert_array_equal(centres[64], [8, 8])
    np.testing.assert_array_equal(centres[-1], [48, 48])
    np.testing.assert_array_equal(np.unique(strides, return_counts=True)[1], [64, 16, 4])
    model = build_detector(2, 64, width=8)
    maps = keras.Model(model.input, [model.get_layer(f"head{s}_out").output for s in STRIDES])
    images = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    outputs, per_level = model(images).numpy()[0], [m.numpy()[0] for m in maps(images)]
    for point in (0, 5, 63, 64, 70, 83):
        x, y = centres[point]
        level = STRIDES.index(int(strides[point]))
        row, column = int(y // strides[point]), int(x // strides[point])
        np.testing.assert_allclose(outputs[point], per_level[level][row, column], rtol=1e-6)


def test_bad_network_settings_are_config_errors():
    with pytest.raises(ConfigError, match="multiple of 32"):
        build_detector(2, 100)
    with pytest.raises(ConfigError, match="num_classes"):
        build_detector(0, 64)


# --- assignment -----------------------------------------------------------------------------


def _assign(y_true, image_size=64, classes=2, top_k=10, seed=0):
    """Assignment for random scores and boxes jittered around the anchor points."""
    centres, strides = anchor_points(image_size)
    rng = np.random.default_rng(seed)
    batch = len(y_true)
    scores = rng.uniform(0.01, 1, (batch, len(centres), classes)).astype("float32")
    distances = (rng.uniform(0.5, 3, (batch, len(centres), 4)) * strides[:, None]).astype("float32")
    boxes = distances_to_boxes(distances, centres)
    return assign_targets(
        scores,
        boxes,
        tf.constant(centres),
        tf.constant(y_true[..., :4]),
        tf.constant(y_true[..., 4].astype("int32")),
        top_k=top_k,
    )


def test_assigner_positives_inside_their_boxes_and_at_most_top_k():
    y_true = np.concatenate(
        [
            _boxes([2, 2, 40, 30, 0], [20, 10, 62, 60, 1]),  # overlapping boxes
            _boxes([26, 26, 38, 38, 1]),  # one small box: 4 candidates
            _boxes(),  # an empty image
        ]
    )
    centres, _ = anchor_points(64)
    for top_k in (3, 10):
        assigned = _assign(y_true, top_k=top_k)
        positive = assigned.positive.numpy()
        index = assigned.box_index.numpy()
        assert positive[:2].any(axis=1).all() and not positive[2].any()
        for image, point in zip(*np.nonzero(positive), strict=True):
            x1, y1, x2, y2, label = y_true[image, index[image, point]]
            assert label >= 0  # never a padding row
            assert x1 < centres[point, 0] < x2 and y1 < centres[point, 1] < y2
            np.testing.assert_array_equal(assigned.boxes[image, point], [x1, y1, x2, y2])
            assert np.argmax(assigned.scores[image, point]) == label
        for image in range(2):
            counts = np.bincount(index[image][positive[image]], minlength=3)
            assert counts.max() <= top_k and counts[2] == 0
        assert (assigned.scores.numpy()[~positive] == 0).all()


def test_soft_targets_peak_at_each_box_best_iou():
    y_true = _boxes([8, 8, 40, 40, 1])
    outputs = _perfect_outputs(y_true, 64, 2, shift=3.0)
    centres, _ = anchor_points(64)
    boxes = distances_to_boxes(outputs[..., :4], centres)
    assigned = assign_targets(
        tf.sigmoid(outputs[..., 4:]),
        boxes,
        tf.constant(centres),
        tf.constant(y_true[..., :4]),
        tf.constant(y_true[..., 4].astype("int32")),
    )
    positive = assigned.positive.numpy()[0]
    ious = box_iou(boxes[0], y_true[0, :1, :4]).numpy()
    np.testing.assert_allclose(assigned.scores.numpy()[0, :, 1].max(), ious[positive].max(), 1e-5)
    assert (assigned.scores.numpy()[0, :, 0] == 0).all()


# --- losses ---------------------------------------------------------------------------------


def test_iou_losses_zero_for_a_perfect_box_and_grow_with_shift():
    true = tf.constant([[10.0, 10.0, 30.0, 20.0]])
    for kind in ("ciou", "giou"):
        values = [float(iou_loss(true + [[s, 0, s, 0]], true, kind)[0]) for s in (0, 2, 5, 10, 25)]
        assert values[0] == pytest.approx(0, abs=1e-5)
        assert all(a < b for a, b in zip(values, values[1:], strict=False))
        assert values[-1] > 1  # disjoint boxes: beyond plain 1 - IoU


@pytest.mark.parametrize("box", ["ciou", "giou"])
def test_detection_box_term_zero_when_perfect_and_grows_with_shift(box):
    y_true = _boxes([8, 8, 40, 32, 1])
    loss = DetectionLoss(2, 64, box=box)
    box_terms = [
        float(loss.terms(y_true, _perfect_outputs(y_true, 64, 2, shift=s))[1][0])
        for s in (0.0, 2.0, 6.0, 12.0)
    ]
    assert box_terms[0] == pytest.approx(0, abs=1e-4)
    assert all(a < b for a, b in zip(box_terms, box_terms[1:], strict=False))


@pytest.mark.parametrize("classification", ["varifocal", "focal"])
def test_empty_image_gives_only_the_classification_term(classification):
    loss = DetectionLoss(2, 64, classification=classification, class_weight=0.7)
    outputs = _perfect_outputs(_boxes([8, 8, 40, 32, 1]), 64, 2)
    empty = _boxes()
    classification_term, box_term = loss.terms(empty, outputs)
    assert float(box_term[0]) == 0
    assert float(classification_term[0]) > 0
    assert float(loss(empty, outputs)) == pytest.approx(0.7 * float(classification_term[0]))
    no_rows = np.zeros((1, 0, 5), np.float32)
    assert float(loss(no_rows, outputs)) == pytest.approx(float(loss(empty, outputs)))


def test_loss_is_normalised_by_the_batch_total():
    """Two copies of an image: twice the sums over twice the target total, the same loss."""
    y_true = _boxes([8, 8, 40, 32, 1], [40, 40, 60, 60, 0])
    outputs = _perfect_outputs(y_true, 64, 2, shift=4.0)
    loss = DetectionLoss(2, 64)
    single = float(loss(y_true, outputs))
    double = float(loss(np.concatenate([y_true] * 2), np.concatenate([outputs] * 2)))
    assert single > 0 and double == pytest.approx(single, rel=1e-5)


_MIRRORED = """
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from dltoolkit.models.detection import DetectionLoss, anchor_points

rng = np.random.default_rng(0)
points = len(anchor_points(64)[0])
y_pred = np.concatenate(
    [rng.uniform(2, 20, (4, points, 4)), rng.normal(-2, 2, (4, points, 2))], axis=-1
).astype("float32")
y_true = np.full((4, 3, 5), -1, "float32")
y_true[0, 0] = [4, 4, 30, 30, 0]  # replica 0: few objects, replica 1: many
y_true[2] = [[4, 4, 30, 30, 0], [30, 30, 60, 50, 1], [2, 40, 20, 62, 1]]
y_true[3, :2] = [[10, 10, 50, 50, 1], [0, 0, 16, 16, 0]]
loss = DetectionLoss(2, 64)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
batches = strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensor_slices((y_true, y_pred)).batch(4)
)


@tf.function
def replicated(batch):
    return strategy.reduce("SUM", strategy.run(loss, args=batch), axis=None)


print(float(loss(y_true, y_pred)), float(replicated(next(iter(batches)))))
"""


def test_loss_under_mirrored_strategy_equals_the_single_device_loss():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MIRRORED)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    single, replicated = map(float, done.stdout.split())
    assert replicated == pytest.approx(single, rel=1e-5)


def test_loss_config_round_trip_and_bad_options():
    loss = DetectionLoss(3, 96, classification="focal", box="giou", top_k=7, box_weight=5.0)
    again = DetectionLoss.from_config(loss.get_config())
    assert again.get_config() == loss.get_config()
    y_true = np.concatenate([_boxes([8, 8, 40, 32, 2]), _boxes()])
    outputs = np.random.default_rng(0).normal(0, 3, (2, 189, 7)).astype("float32")
    outputs[..., :4] = np.abs(outputs[..., :4]) * 4
    assert float(again(y_true, outputs)) == pytest.approx(float(loss(y_true, outputs)))
    with pytest.raises(ConfigError, match="varifocal"):
        DetectionLoss(2, 64, classification="bce")
    with pytest.raises(ConfigError, match="ciou"):
        DetectionLoss(2, 64, box="iou")
    with pytest.raises(ValueError, match=r"\[B, 84, 6\]"):
        DetectionLoss(2, 64)(y_true, outputs)  # a model of another size and class count


# --- decoding -------------------------------------------------------------------------------

_SIZE = 64


def _point(x, y, stride=8):
    """Index of the anchor point at cell centre (x, y) of the `stride` map."""
    cells = _SIZE // stride
    before = sum((_SIZE // s) ** 2 for s in STRIDES[: STRIDES.index(stride)])
    return before + int(y // stride) * cells + int(x // stride)


def _hand_made_outputs():
    """Four confident predictions: a box of class 0 twice (the second a duplicate), the same
    box as class 1, and a box of class 1 elsewhere that sticks out of the image."""
    centres, _ = anchor_points(_SIZE)
    outputs = np.zeros((2, len(centres), 6), np.float32)
    outputs[..., :4] = 1.0
    outputs[..., 4:] = -10.0

    def put(point, box, label, logit):
        outputs[0, point, :4] = [*(centres[point] - box[:2]), *(box[2:] - centres[point])]
        outputs[0, point, 4 + label] = logit

    square, corner = np.array([10, 10, 30, 30.0]), np.array([44, 44, 70, 60.0])
    put(_point(20, 20), square, 0, 3.0)
    put(_point(28, 20), square + 1, 0, 2.0)  # duplicate of the first: suppressed
    put(_point(12, 28), square, 1, 1.0)  # same place, other class: kept
    put(_point(48, 48, 32), corner, 1, 4.0)
    return outputs


def test_decode_orders_suppresses_and_keeps_classes_apart():
    decoded = decode_detections(_hand_made_outputs(), _SIZE, max_detections=5)
    assert decoded["count"].numpy().tolist() == [3, 0]
    np.testing.assert_allclose(
        decoded["boxes"][0, :3], [[44, 44, 64, 60], [10, 10, 30, 30], [10, 10, 30, 30]], atol=1e-4
    )
    np.testing.assert_allclose(decoded["scores"][0, :3], tf.sigmoid([4.0, 3.0, 1.0]), atol=1e-5)
    assert decoded["labels"].numpy().tolist() == [[1, 0, 1, -1, -1], [-1] * 5]
    assert decoded["boxes"].shape == (2, 5, 4) and decoded["labels"].dtype == tf.int32
    assert (decoded["boxes"].numpy()[0, 3:] == 0).all() and (decoded["boxes"].numpy()[1] == 0).all()
    assert (decoded["scores"].numpy()[0, 3:] == 0).all()
    assert decode_detections(_hand_made_outputs(), _SIZE, candidates=1)["count"][0] == 1


def test_decode_takes_tensor_thresholds_in_a_tf_function():
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 84, 6], tf.float32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.int32),
        ]
    )
    def serve(outputs, score_threshold, iou_threshold, max_detections):
        return decode_detections(
            outputs,
            _SIZE,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
        )

    outputs = tf.constant(_hand_made_outputs())
    assert serve(outputs, 0.25, 0.5, 10)["count"].numpy().tolist() == [3, 0]
    assert serve(outputs, 0.9, 0.5, 10)["count"].numpy().tolist() == [2, 0]
    assert serve(outputs, 0.25, 0.99, 10)["count"].numpy().tolist() == [4, 0]  # no suppression
    top = serve(outputs, 0.25, 0.5, 1)
    assert top["boxes"].shape == (2, 1, 4) and top["labels"].numpy().tolist() == [[1], [-1]]


# --- a learnable toy ------------------------------------------------------------------------


def _toy(n=64, size=64, seed=0):
    """Noise images with 1-2 bright filled rectangles: squares (class 0), wide bars (class 1)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 60, (n, size, size, 3)).astype("float32")
    y_true = np.full((n, 2, 5), -1, np.float32)
    for i in range(n):
        kinds = rng.integers(2, size=rng.integers(1, 3))
        for j, kind in enumerate(kinds):
            w, h = (rng.integers(12, 21),) * 2 if kind == 0 else rng.integers((30, 7), (44, 11))
            while True:  # a place that does not touch the first rectangle
                x, y = rng.integers(0, size - w), rng.integers(0, size - h)
                box = np.array([x, y, x + w, y + h], np.float32)
                if j == 0 or float(box_iou(box, y_true[i, 0, :4])) == 0:
                    break
            images[i, y : y + h, x : x + w] = 230
            y_true[i, j] = [*box, kind]
    return images, y_true


def _train_toy(steps: int):
    """(model, images, y_true, loss before training, loss per epoch of 4 steps)."""
    keras.utils.set_random_seed(0)
    images, y_true = _toy()
    model = build_detector(2, 64, width=8)
    loss = DetectionLoss(2, 64)
    model.compile(keras.optimizers.Adam(3e-3), loss)
    before = float(loss(y_true, model(images, training=False)))
    history = model.fit(images, y_true, batch_size=16, epochs=steps // 4, verbose=0)
    return model, images, y_true, before, history.history["loss"]


@pytest.fixture(scope="module")
def short_fit():
    """The toy trained for 40 steps: compiling the training step dominates its time."""
    return _train_toy(40)


def test_toy_loss_falls(short_fit):
    _, _, _, before, losses = short_fit
    assert losses[-1] < 0.6 * before


def test_trained_model_file_round_trip(short_fit, tmp_path):
    model, images = short_fit[:2]
    assert keras.Model.from_config(model.get_config()).count_params() == model.count_params()
    path = tmp_path / "detector.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(images[:4]), model(images[:4]), rtol=1e-5, atol=1e-4)
    assert isinstance(loaded.loss, DetectionLoss)
    assert loaded.loss.get_config() == model.loss.get_config()


@pytest.mark.slow
def test_toy_is_learned():
    model, images, y_true, before, losses = _train_toy(300)
    assert losses[-1] < 0.2 * before
    decoded = decode_detections(model.predict(images, verbose=0), 64)
    boxes, labels, counts = (decoded[k].numpy() for k in ("boxes", "labels", "count"))
    found = total = 0
    for i in range(len(images)):
        for *box, label in y_true[i][y_true[i, :, 4] >= 0]:
            ious = box_iou(np.array(box, np.float32), boxes[i, : counts[i]]).numpy()
            found += bool(((ious > 0.5) & (labels[i, : counts[i]] == label)).any())
            total += 1
    assert found >= 0.85 * total
