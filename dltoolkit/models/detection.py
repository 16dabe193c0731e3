"""A YOLO-style single-stage object detector trained from scratch, its loss and its decoder.

Network: a small CSP-style CNN (conv-BN-SiLU, C2f blocks), an SPPF block, a PAN-FPN neck
(top-down then bottom-up) and a decoupled anchor-free head on the stride-8, 16 and 32 maps.

Box parameterisation: anchor-free, one prediction per anchor point (the centre of every
cell of the three maps): the distances (left, top, right, bottom) in input pixels from
the point to the box sides, `softplus(raw) * stride`; the box is the point -/+ them, in
"xyxy" pixels.

Label assignment: task-aligned assignment (TAL, from TOOD, as in YOLOv8). Candidates are
the anchor points inside a true box; each scores `t = score^alpha * IoU^beta` (score: the
predicted probability of the box's class, IoU: of the predicted box with the true one); the
`top_k` candidates of highest t per true box are its positives, an anchor point claimed by
several boxes goes to the box it overlaps most. The class target of a positive is t scaled
per box so that its best anchor gets that anchor's IoU (IoU-aware soft targets), 0 elsewhere.

Losses: varifocal (or sigmoid focal, gamma 2, alpha 0.25) over every anchor point and
class, plus CIoU (or GIoU) on the positives weighted by their class target.

Normalisation: both sums are divided by the total class target of the whole batch (at
least 1), as YOLOv8 does. Each image's value is its own sums times the batch size over
that total, so the mean Keras takes over the batch is the batch-normalised loss. Under
tf.distribute (MirroredStrategy, multi-worker) the total is summed over all replicas and
each image's value also multiplied by the replica count, which Keras divides out: the summed
replica gradients are exactly those of the single-device loss on the global batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.core.errors import ConfigError

STRIDES = (8, 16, 32)
_PRIOR = 0.01  # initial class probability: the class bias starts at logit(0.01)
_BN = {"momentum": 0.97, "epsilon": 1e-3}
_EPS = 1e-7


# --- network -------------------------------------------------------------------------------


def build_detector(
    num_classes: int,
    image_size: int,
    channels: int = 3,
    *,
    width: int = 32,
    depth: int = 1,
    name: str = "yolo",
) -> keras.Model:
    """The detector for [B, S, S, channels] images in [0, 255] (S = `image_size`).

    Returns float32 [B, A, 4 + num_classes]: per anchor point (`anchor_points` order) the
    distances (left, top, right, bottom) in input pixels, then the class logits. `width`
    is the filters of the stride-4 stage (doubled per stage, half of it in the stem),
    `depth` the C2f bottlenecks per stage.
    """
    _check_network(num_classes, image_size, channels, width, depth)
    inputs = keras.Input((image_size, image_size, channels), name="images")
    x = keras.layers.Rescaling(1 / 255, name="rescaling")(inputs)
    levels = _backbone(x, width, depth)
    levels = _neck(levels, [width * 2**i for i in (1, 2, 3)], depth)
    outputs = [
        _head(level, num_classes, stride, width * 2, f"head{stride}")
        for level, stride in zip(levels, STRIDES, strict=True)
    ]
    outputs = keras.layers.Concatenate(axis=1, dtype="float32", name="predictions")(outputs)
    return keras.Model(inputs, outputs, name=name)


def _check_network(num_classes, image_size, channels, width, depth) -> None:
    if num_classes < 1:
        raise ConfigError(f"num_classes is {num_classes}; a detector needs at least 1 class")
    if image_size < STRIDES[-1] or image_size % STRIDES[-1]:
        raise ConfigError(
            f"image size {image_size} is not a positive multiple of {STRIDES[-1]}; "
            "pass e.g. --image-size 320"
        )
    if channels < 1:
        raise ConfigError(f"channels is {channels}; images need at least 1 channel")
    if width < 8 or width % 2:
        raise ConfigError(f"width {width} must be an even number >= 8; pick e.g. 32")
    if depth < 1:
        raise ConfigError(f"depth {depth} must be >= 1 block per stage; pick e.g. 1")


def _conv(x, filters: int, kernel: int, name: str, strides: int = 1):
    x = keras.layers.Conv2D(
        filters, kernel, strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)
    return keras.layers.Activation("silu", name=f"{name}_silu")(x)


def _c2f(x, filters: int, blocks: int, shortcut: bool, name: str):
    """CSP block with two convolutions: two 1x1 halves, `blocks` bottlenecks chained on the
    second, every intermediate map concatenated and fused by a 1x1 convolution."""
    half = filters // 2
    parts = [_conv(x, half, 1, f"{name}_a"), _conv(x, half, 1, f"{name}_b")]
    for i in range(blocks):
        y = _conv(parts[-1], half, 3, f"{name}_m{i}_1")
        y = _conv(y, half, 3, f"{name}_m{i}_2")
        if shortcut:
            y = keras.layers.Add(name=f"{name}_m{i}_add")([parts[-1], y])
        parts.append(y)
    x = keras.layers.Concatenate(name=f"{name}_concat")(parts)
    return _conv(x, filters, 1, f"{name}_fuse")


def _sppf(x, filters: int, name: str = "sppf"):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools, concatenated."""
    x = _conv(x, filters // 2, 1, f"{name}_in")
    pooled = [x]
    for i in range(3):
        pooled.append(
            keras.layers.MaxPooling2D(5, 1, padding="same", name=f"{name}_pool{i}")(pooled[-1])
        )
    x = keras.layers.Concatenate(name=f"{name}_concat")(pooled)
    return _conv(x, filters, 1, f"{name}_out")


def _backbone(x, width: int, depth: int) -> list:
    """The feature maps at strides 8, 16 and 32 (the last after SPPF)."""
    x = _conv(x, width // 2, 3, "stem", strides=2)
    levels = []
    for stage in range(4):  # strides 4, 8, 16, 32
        filters = width * 2**stage
        x = _conv(x, filters, 3, f"stage{stage}_down", strides=2)
        x = _c2f(x, filters, depth, True, f"stage{stage}")
        levels.append(x)
    levels[-1] = _sppf(levels[-1], width * 8)
    return levels[1:]


def _neck(levels: list, filters: list[int], depth: int) -> list:
    """PAN-FPN: stride 32 -> 8 (upsample, concatenate, C2f), then back to 32 (strided conv)."""
    p3, p4, p5 = levels

    def merge(moved, skip, width: int, name: str):
        joined = keras.layers.Concatenate(name=f"{name}_cat")([moved, skip])
        return _c2f(joined, width, depth, False, name)

    t4 = merge(keras.layers.UpSampling2D(name="top_down4_up")(p5), p4, filters[1], "top_down4")
    n3 = merge(keras.layers.UpSampling2D(name="top_down3_up")(t4), p3, filters[0], "top_down3")
    down = _conv(n3, filters[0], 3, "bottom_up4_down", strides=2)
    n4 = merge(down, t4, filters[1], "bottom_up4")
    down = _conv(n4, filters[1], 3, "bottom_up5_down", strides=2)
    n5 = merge(down, p5, filters[2], "bottom_up5")
    return [n3, n4, n5]


def _head(x, num_classes: int, stride: int, filters: int, name: str):
    """Decoupled head of one level: [B, h*w, 4 + num_classes] (distances, logits)."""
    box = _conv(_conv(x, filters, 3, f"{name}_box1"), filters, 3, f"{name}_box2")
    box = keras.layers.Conv2D(
        4, 1, bias_initializer=keras.initializers.Constant(1.0), dtype="float32", name=f"{name}_box"
    )(box)
    box = keras.layers.Activation("softplus", dtype="float32", name=f"{name}_softplus")(box)
    box = keras.layers.Rescaling(float(stride), dtype="float32", name=f"{name}_pixels")(box)
    cls_filters = max(filters, min(num_classes, 100))
    cls = _conv(_conv(x, cls_filters, 3, f"{name}_cls1"), cls_filters, 3, f"{name}_cls2")
    prior = keras.initializers.Constant(-math.log((1 - _PRIOR) / _PRIOR))
    cls = keras.layers.Conv2D(
        num_classes, 1, bias_initializer=prior, dtype="float32", name=f"{name}_cls"
    )(cls)
    x = keras.layers.Concatenate(dtype="float32", name=f"{name}_out")([box, cls])
    cells = x.shape[1] * x.shape[2]
    return keras.layers.Reshape((cells, 4 + num_classes), dtype="float32", name=f"{name}_flat")(x)


def anchor_points(image_size: int, strides=STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """(centres float32 [A, 2] as x, y in input pixels, strides float32 [A]): the cell
    centres of each stride's map, strides in order, each map row-major."""
    centres, point_strides = [], []
    for stride in strides:
        cells = image_size // stride
        offsets = (np.arange(cells, dtype=np.float32) + 0.5) * stride
        y, x = np.meshgrid(offsets, offsets, indexing="ij")
        centres.append(np.stack([x.ravel(), y.ravel()], axis=-1))
        point_strides.append(np.full(cells * cells, stride, np.float32))
    return np.concatenate(centres), np.concatenate(point_strides)


# --- boxes ---------------------------------------------------------------------------------


def distances_to_boxes(distances, centres):
    """(left, top, right, bottom) distances [..., A, 4] from `centres` [A, 2] -> xyxy."""
    return tf.concat([centres - distances[..., :2], centres + distances[..., 2:]], axis=-1)


def _area(boxes):
    return tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(
        boxes[..., 3] - boxes[..., 1], 0.0
    )


def _intersection_union(a, b):
    low = tf.maximum(a[..., :2], b[..., :2])
    high = tf.minimum(a[..., 2:], b[..., 2:])
    inter = tf.reduce_prod(tf.maximum(high - low, 0.0), axis=-1)
    return inter, _area(a) + _area(b) - inter


def box_iou(a, b):
    """IoU of xyxy boxes, broadcast over the leading axes."""
    inter, union = _intersection_union(a, b)
    return inter / (union + _EPS)


def iou_loss(pred, true, kind: str = "ciou"):
    """1 - CIoU (or 1 - GIoU) of xyxy boxes, elementwise over the leading axes."""
    inter, union = _intersection_union(pred, true)
    iou = inter / (union + _EPS)
    outer_low = tf.minimum(pred[..., :2], true[..., :2])
    outer_high = tf.maximum(pred[..., 2:], true[..., 2:])
    outer = tf.maximum(outer_high - outer_low, 0.0)
    if kind == "giou":
        hull = outer[..., 0] * outer[..., 1]
        return 1 - (iou - (hull - union) / (hull + _EPS))
    diagonal = tf.reduce_sum(outer**2, axis=-1) + _EPS
    centre_gap = tf.reduce_sum(
        ((pred[..., :2] + pred[..., 2:]) - (true[..., :2] + true[..., 2:])) ** 2 / 4, axis=-1
    )
    aspect = (4 / math.pi**2) * (_aspect_angle(true) - _aspect_angle(pred)) ** 2
    trade_off = tf.stop_gradient(aspect / (aspect - iou + 1 + _EPS))
    return 1 - (iou - centre_gap / diagonal - trade_off * aspect)


def _aspect_angle(boxes):
    return tf.atan((boxes[..., 2] - boxes[..., 0]) / (boxes[..., 3] - boxes[..., 1] + _EPS))


# --- label assignment ----------------------------------------------------------------------


class Assignment(NamedTuple):
    """Targets per anchor point; all [B, A, ...]."""

    boxes: tf.Tensor  # float32 [B, A, 4] xyxy: the assigned true box (meaningless if negative)
    scores: tf.Tensor  # float32 [B, A, C]: soft class targets, zero rows for negatives
    positive: tf.Tensor  # bool [B, A]
    box_index: tf.Tensor  # int32 [B, A]: row of y_true assigned (meaningless if negative)


def assign_targets(
    scores, boxes, centres, true_boxes, true_classes, *, top_k=10, alpha=1.0, beta=6.0
) -> Assignment:
    """Task-aligned assignment (see the module docstring).

    scores [B, A, C] predicted probabilities, boxes [B, A, 4] predicted xyxy, centres [A, 2],
    true_boxes [B, M, 4] xyxy, true_classes [B, M] int (< 0: padding row). No gradient.
    """
    scores, boxes = tf.stop_gradient(scores), tf.stop_gradient(boxes)
    num_points = centres.shape[0]
    valid = true_classes >= 0
    classes = tf.maximum(true_classes, 0)
    # [B, M, A]: anchor point strictly inside a real true box
    gaps = tf.concat(
        [centres - true_boxes[:, :, None, :2], true_boxes[:, :, None, 2:] - centres], axis=-1
    )
    inside = (tf.reduce_min(gaps, axis=-1) > 1e-9) & valid[..., None]
    inside_f = tf.cast(inside, tf.float32)
    overlaps = box_iou(true_boxes[:, :, None, :], boxes[:, None, :, :]) * inside_f
    class_scores = tf.gather(tf.transpose(scores, [0, 2, 1]), classes, batch_dims=1)
    alignment = class_scores**alpha * overlaps**beta * inside_f
    positive = _top_k_mask(alignment, min(top_k, num_points)) * inside_f  # [B, M, A]
    # an anchor point claimed by several boxes goes to the one it overlaps most
    best_box = tf.one_hot(tf.argmax(overlaps, axis=1), tf.shape(overlaps)[1], axis=1)
    claims = tf.reduce_sum(positive, axis=1, keepdims=True)
    positive = tf.where(claims > 1, best_box * positive, positive)
    box_index = tf.argmax(positive, axis=1, output_type=tf.int32)  # [B, A]
    is_positive = tf.reduce_sum(positive, axis=1) > 0
    # soft targets: alignment scaled per box so its best anchor gets its best IoU
    alignment *= positive
    best_alignment = tf.reduce_max(alignment, axis=-1, keepdims=True)
    best_overlap = tf.reduce_max(overlaps * positive, axis=-1, keepdims=True)
    quality = tf.reduce_max(alignment * best_overlap / (best_alignment + 1e-9), axis=1)
    labels = tf.gather(classes, box_index, batch_dims=1)
    target_scores = tf.one_hot(labels, tf.shape(scores)[-1]) * quality[..., None]
    target_scores *= tf.cast(is_positive, tf.float32)[..., None]
    return Assignment(
        boxes=tf.gather(true_boxes, box_index, batch_dims=1),
        scores=tf.stop_gradient(target_scores),
        positive=is_positive,
        box_index=box_index,
    )


def _top_k_mask(values, k: int):
    """1.0 at the `k` largest entries of the last axis of [B, M, A], else 0.0."""
    _, index = tf.math.top_k(values, k)  # [B, M, k]
    shape = tf.shape(index)
    batch = tf.broadcast_to(tf.range(shape[0])[:, None, None], shape)
    row = tf.broadcast_to(tf.range(shape[1])[None, :, None], shape)
    where = tf.stack([batch, row, index], axis=-1)
    return tf.scatter_nd(where, tf.ones(shape, tf.float32), tf.shape(values))


# --- loss ----------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="dltoolkit")
class DetectionLoss(keras.losses.Loss):
    """Task-aligned assignment, then classification + box loss (see the module docstring).

    y_true: float32 [B, M, 5] = x1, y1, x2, y2 (input pixels), class index; rows with class
    < 0 are padding (M may be 0). y_pred: the `build_detector` output [B, A, 4 + num_classes].
    Keep the default reduction: the per-image values are scaled for Keras' mean over the
    batch. Default weights: box 7.5 (YOLOv8's box gain), class 1.0 (PP-YOLOE's varifocal).
    """

    CLASSIFICATIONS = ("varifocal", "focal")
    BOXES = ("ciou", "giou")

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        *,
        classification: str = "varifocal",
        box: str = "ciou",
        top_k: int = 10,
        alpha: float = 1.0,
        beta: float = 6.0,
        box_weight: float = 7.5,
        class_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**{"name": "detection_loss", **kwargs})
        if self.reduction != "sum_over_batch_size":
            raise ConfigError(
                f"DetectionLoss normalises by the batch itself; its reduction must stay "
                f"'sum_over_batch_size', got {self.reduction!r}"
            )
        if classification not in self.CLASSIFICATIONS:
            raise ConfigError(
                f"unknown classification loss {classification!r}; choose one of: "
                + ", ".join(self.CLASSIFICATIONS)
            )
        if box not in self.BOXES:
            raise ConfigError(f"unknown box loss {box!r}; choose one of: " + ", ".join(self.BOXES))
        if top_k < 1:
            raise ConfigError(f"top_k {top_k} must be >= 1 anchor point per box; pick e.g. 10")
        self.num_classes, self.image_size = int(num_classes), int(image_size)
        self.classification, self.box = classification, box
        self.top_k, self.alpha, self.beta = int(top_k), float(alpha), float(beta)
        self.box_weight, self.class_weight = float(box_weight), float(class_weight)
        self.centres = tf.constant(anchor_points(self.image_size)[0])

    def call(self, y_true, y_pred):
        classification, box = self.terms(y_true, y_pred)
        return self.class_weight * classification + self.box_weight * box

    def terms(self, y_true, y_pred) -> tuple[tf.Tensor, tf.Tensor]:
        """(classification, box) per image [B], each already normalised (unweighted)."""
        expected = (len(self.centres), 4 + self.num_classes)
        if any(d not in (None, e) for d, e in zip(y_pred.shape[1:], expected, strict=True)):
            raise ValueError(
                f"DetectionLoss({self.num_classes} classes, image size {self.image_size}) "
                f"expects predictions [B, {expected[0]}, {expected[1]}], got {y_pred.shape}"
            )
        y_pred = tf.cast(y_pred, tf.float32)
        y_true = tf.cast(y_true, tf.float32)
        y_true = tf.pad(y_true, [[0, 0], [0, 1], [0, 0]], constant_values=-1.0)  # M >= 1
        boxes = distances_to_boxes(y_pred[..., :4], self.centres)
        logits = y_pred[..., 4:]
        targets = assign_targets(
            tf.sigmoid(logits),
            boxes,
            self.centres,
            y_true[..., :4],
            tf.cast(tf.round(y_true[..., 4]), tf.int32),
            top_k=self.top_k,
            alpha=self.alpha,
            beta=self.beta,
        )
        weight = tf.reduce_sum(targets.scores, axis=-1)  # [B, A], zero for negatives
        box = tf.reduce_sum(iou_loss(boxes, targets.boxes, self.box) * weight, axis=-1)
        losses = _varifocal if self.classification == "varifocal" else _focal
        classification = tf.reduce_sum(losses(logits, targets.scores), axis=[1, 2])
        scale = _batch_scale(tf.reduce_sum(targets.scores), tf.shape(y_pred)[0])
        return classification * scale, box * scale

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "classification": self.classification,
            "box": self.box,
            "top_k": self.top_k,
            "alpha": self.alpha,
            "beta": self.beta,
            "box_weight": self.box_weight,
            "class_weight": self.class_weight,
        }


def _batch_scale(target_total, batch_size):
    """Replicas x local batch size / max(global target total, 1): turns an image's sums into
    the value whose mean over the batch (and the replicas) is the batch-normalised loss."""
    replicas = 1
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        replicas = context.num_replicas_in_sync
        target_total = context.all_reduce(tf.distribute.ReduceOp.SUM, target_total)
    return replicas * tf.cast(batch_size, tf.float32) / tf.maximum(target_total, 1.0)


def _varifocal(logits, targets, alpha=0.75, gamma=2.0):
    """Varifocal loss [B, A, C]: positives weighted by their target q, negatives by
    alpha * p^gamma."""
    probs = tf.sigmoid(logits)
    weight = tf.where(targets > 0, targets, alpha * probs**gamma)
    return tf.nn.sigmoid_cross_entropy_with_logits(targets, logits) * tf.stop_gradient(weight)


def _focal(logits, targets, alpha=0.25, gamma=2.0):
    """Sigmoid focal loss [B, A, C] (soft targets: the modulating factor is |q - p|^gamma)."""
    probs = tf.sigmoid(logits)
    balance = targets * alpha + (1 - targets) * (1 - alpha)
    modulation = tf.abs(targets - probs) ** gamma
    return tf.nn.sigmoid_cross_entropy_with_logits(targets, logits) * balance * modulation


# --- decoding ------------------------------------------------------------------------------


def decode_detections(
    outputs,
    image_size: int,
    *,
    score_threshold: float = 0.25,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    candidates: int = 1000,
) -> dict[str, tf.Tensor]:
    """Model output [B, A, 4 + C] -> boxes after class-aware non-max suppression.

    TensorFlow ops only; the thresholds and `max_detections` may be scalar tensors. Returns
    "boxes" float32 [B, max, 4] xyxy input pixels, "scores" float32 [B, max], "labels" int32
    [B, max] (-1 after "count") and "count" int32 [B], best score first.
    """
    outputs = tf.cast(outputs, tf.float32)
    centres = tf.constant(anchor_points(image_size)[0])
    boxes = tf.clip_by_value(distances_to_boxes(outputs[..., :4], centres), 0.0, image_size)
    scores = tf.sigmoid(outputs[..., 4:])
    return non_max_suppression(
        boxes, scores, score_threshold, iou_threshold, max_detections, candidates
    )


def non_max_suppression(
    boxes, scores, score_threshold, iou_threshold, max_detections, candidates
) -> dict[str, tf.Tensor]:
    """Class-aware NMS of boxes [B, N, 4] (xyxy) with class probabilities [B, N, K]: the
    `candidates` boxes of highest top-class score go in; the result is padded to
    `max_detections` (see decode_detections). Shared by every detector family."""
    keep = tf.minimum(candidates, tf.shape(scores)[1])
    best = tf.math.top_k(tf.reduce_max(scores, axis=-1), k=keep).indices
    boxes = tf.gather(boxes, best, batch_dims=1)
    scores = tf.gather(scores, best, batch_dims=1)
    # IoU is symmetric in x and y, so xyxy boxes go in where NMS documents yxyx
    kept = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],
        scores,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        clip_boxes=False,
    )
    count = tf.cast(kept.valid_detections, tf.int32)
    present = tf.range(tf.shape(kept.nmsed_scores)[1])[None, :] < count[:, None]
    return {
        "boxes": tf.where(present[..., None], kept.nmsed_boxes, 0.0),
        "scores": tf.where(present, kept.nmsed_scores, 0.0),
        "labels": tf.where(present, tf.cast(kept.nmsed_classes, tf.int32), -1),
        "count": count,
    }
