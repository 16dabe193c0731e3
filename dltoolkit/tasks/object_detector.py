"""ObjectDetector: the detect-objects recipe (YOLO-style single-stage detection)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.core import files
from dltoolkit.core.coco_eval import RECALL_POINTS, coco_scores
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.export import Signature
from dltoolkit.core.optim import time_budget
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.records import Bad, assemble
from dltoolkit.core.report import Report, plot_image_grid
from dltoolkit.core.runtime import file_shard
from dltoolkit.core.training import Plan, small_data_epochs
from dltoolkit.data.box_batches import build_box_augmenter, detection_dataset
from dltoolkit.data.boxes import BoxSet, load_box_source
from dltoolkit.data.images import image_inputs, read_image_file, sampled_sizes, to_channels
from dltoolkit.data.letterbox import from_canvas, geometry, letterbox
from dltoolkit.data.splits import concat_sets, random_splits
from dltoolkit.models.detection import DetectionLoss, build_detector, decode_detections
from dltoolkit.specs.detect_objects import SPEC
from dltoolkit.tasks.box_drawing import class_colors, draw_boxes

STEP_BUDGET = 2000  # default training length in batches (the sample: about 4 minutes on 2 cores)
EPOCH_STEPS = 50  # the fewest batches an epoch has
MAX_SIDE = 320  # default longest side of the letterboxed input
MULTIPLE = 32  # the detector's largest stride: input sides divide by it
EVAL_SCORE = 0.001  # detections down to this score are scored (COCO practice)
EXAMPLES = 8  # test images drawn in the report


@dataclass
class _Prepared:
    splits: dict[str, BoxSet]
    class_names: list[str]
    image_size: int
    channels: int
    description: str
    problems: list[tuple[str, str]]
    held_out: BoxSet | None = None
    found: list[dict] = field(default_factory=list)  # the held-out images' detections


class ObjectDetector(Recipe):
    """Find and classify objects with boxes: a YOLO-style anchor-free detector trained from
    scratch, or a KerasHub detector (RetinaNet, D-FINE) from a preset.

    >>> ObjectDetector(epochs=30).fit("./dataset").predict(["street.jpg"], output="annotated/")
    """

    spec = SPEC
    learned = ("class_names_", "image_size_", "channels_", "prior_box_", "prior_class_")

    def __init__(self, **params):
        super().__init__(**params)
        self.class_names_: list[str] = []
        self.image_size_: int | None = None
        self.channels_: int = 3
        self.prior_box_: list[float] = []  # the mean true box relative to its image (baseline)
        self.prior_class_: int = 0  # the most frequent class (baseline)
        self._detector = None  # the traced batch function (see _detect_fn)

    # -- data ---------------------------------------------------------------------------

    def _validate(self) -> None:
        size = self.config.image_size
        if size is not None and size % MULTIPLE and not self.config.preset:
            raise ConfigError(
                f"the detector needs --image-size divisible by {MULTIPLE}, not {size}; "
                f"pass e.g. {max(MULTIPLE, size // MULTIPLE * MULTIPLE)}"
            )

    def _source(self, data, class_names=None, images=None):
        c = self.config
        return load_box_source(
            data,
            images=images,
            strict=c.strict,
            class_names=class_names,
            tfds_data_dir=c.tfds_data_dir,
        )

    def _prepare(self, data, console) -> _Prepared:
        c = self.config
        source = self._source(data, images=c.images)
        splits = dict(source.splits)
        wanted = {
            k: f for k, f in (("val", c.val_split), ("test", c.test_split)) if f and k not in splits
        }
        splits.update(random_splits(splits.pop("train"), wanted, c.seed))
        size = self._input_size(splits["train"])
        channels = 3 if c.preset else _channels(splits["train"])  # KerasHub detectors take RGB
        if console is not None:
            counts = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
            console.print(
                f"data: {source.description}; {counts}; letterboxed to {size}x{size}; "
                f"{len(source.class_names)} classes"
            )
            if source.problems:
                file, what = source.problems[0]
                console.print(
                    f"[yellow]{len(source.problems)} data problem(s) reported, e.g. {file}: "
                    f"{what} (see the report; --strict makes them errors)[/]"
                )
        return _Prepared(
            splits, source.class_names, size, channels, source.description, source.problems
        )

    def _input_size(self, train: BoxSet) -> int:
        """--image-size, a preset's 512, or the usual longer side (at most MAX_SIDE) rounded
        to the detector's stride."""
        c = self.config
        if c.image_size:
            return c.image_size
        if c.preset:
            return 512
        sides = np.max(np.asarray(train.sizes), axis=1)
        side = min(MAX_SIDE, int(np.median(sides)))
        return max(2 * MULTIPLE, round(side / MULTIPLE) * MULTIPLE)

    def _dataset(self, boxes: BoxSet, training: bool, rt=None, repeat=1) -> tf.data.Dataset:
        c = self.config
        augment = build_box_augmenter(c.augment, c.flip, c.seed) if training else None
        ds = detection_dataset(
            boxes,
            self.image_size_,
            self.channels_,
            c.batch_size,
            training=training,
            seed=c.seed,
            augment=augment,
            shard=file_shard(rt, len(boxes)),
            repeat=repeat,
        )
        if c.preset:
            from dltoolkit.models.hub_detection import hub_targets

            ds = ds.map(lambda images, targets: (images, hub_targets(targets)))
        return ds

    # -- training -------------------------------------------------------------------------

    def _adopt(self, prepared: _Prepared, run) -> None:
        self.class_names_ = prepared.class_names
        self.image_size_, self.channels_ = prepared.image_size, prepared.channels
        self.prior_box_, self.prior_class_ = _prior(
            prepared.splits["train"], len(self.class_names_)
        )

    def _plan(self, prepared: _Prepared, rt, run) -> Plan:
        c = self.config
        train, val = prepared.splits["train"], prepared.splits.get("val")
        repeat, steps = small_data_epochs(len(train), c.batch_size, EPOCH_STEPS)
        epochs = c.epochs or max(3, math.ceil(STEP_BUDGET / steps))
        return Plan(
            train=self._dataset(train, training=True, rt=rt, repeat=repeat),
            val=self._dataset(val, training=False, rt=rt) if val is not None and len(val) else None,
            steps=steps,
            epochs=epochs,
            callbacks=time_budget(c, steps, epochs),
        )

    def _build(self, prepared: _Prepared, plan: Plan) -> keras.Model:
        c, classes = self.config, len(self.class_names_)
        if c.preset:
            from dltoolkit.models.hub_detection import hub_detector

            return hub_detector(c.preset, classes, self.image_size_)
        return build_detector(
            classes, self.image_size_, self.channels_, width=c.width, depth=c.depth
        )

    def _compile_args(self) -> dict:
        c = self.config
        if c.preset:
            from dltoolkit.models.hub_detection import hub_compile_args

            return hub_compile_args(self.model_)
        return {
            "loss": DetectionLoss(
                len(self.class_names_),
                self.image_size_,
                classification=c.classification_loss,
                box=c.box_loss,
                top_k=c.assign_top_k,
            )
        }

    # -- detection ------------------------------------------------------------------------

    def _detect_fn(self):
        """(canvases [B, S, S, C], heights, widths, score threshold, NMS IoU, max detections)
        -> detections in pixels of each original image; traced once (the ops the export runs)."""
        if self._detector is None:
            size = self.image_size_

            @tf.function(
                input_signature=[
                    tf.TensorSpec([None, size, size, self.channels_], tf.float32),
                    tf.TensorSpec([None], tf.int32),
                    tf.TensorSpec([None], tf.int32),
                    tf.TensorSpec([], tf.float32),
                    tf.TensorSpec([], tf.float32),
                    tf.TensorSpec([], tf.int32),
                ]
            )
            def detect(canvases, heights, widths, score_threshold, nms_iou, max_detections):
                return self._detections(
                    canvases, heights, widths, score_threshold, nms_iou, max_detections
                )

            self._detector = detect
        return self._detector

    def _detections(self, canvases, heights, widths, score_threshold, nms_iou, max_detections):
        """The in-graph detection of letterboxed images (predict, evaluate and export)."""
        size = self.image_size_
        if self.config.preset:
            from dltoolkit.models.hub_detection import hub_detections

            found = hub_detections(
                self.model_,
                canvases,
                score_threshold=score_threshold,
                iou_threshold=nms_iou,
                max_detections=max_detections,
            )
        else:
            found = decode_detections(
                self.model_(canvases, training=False),
                size,
                score_threshold=score_threshold,
                iou_threshold=nms_iou,
                max_detections=max_detections,
            )
        scale, _, offset = geometry(heights, widths, size)
        return _inside_images(found, from_canvas(found["boxes"], scale, offset, heights, widths))

    def _detect_images(self, images: list[np.ndarray], thresholds: tuple) -> list[dict]:
        """Detections (numpy, original pixels) of decoded images, in batches."""
        found, size = [], self.image_size_
        for start in range(0, len(images), self.config.batch_size):
            chunk = images[start : start + self.config.batch_size]
            pixels = [to_channels(tf.convert_to_tensor(_hwc(x)), self.channels_) for x in chunk]
            canvases = tf.stack([letterbox(x, size)[0] for x in pixels])
            heights = tf.constant([x.shape[0] for x in pixels], tf.int32)
            widths = tf.constant([x.shape[1] for x in pixels], tf.int32)
            batch = self._detect_fn()(canvases, heights, widths, *_as_tensors(thresholds))
            found += _unbatch(batch)
        return found

    def _thresholds(self, score_threshold=None, nms_iou=None, max_detections=None) -> tuple:
        c = self.config
        return (
            c.score_threshold if score_threshold is None else score_threshold,
            c.nms_iou if nms_iou is None else nms_iou,
            c.max_detections if max_detections is None else max_detections,
        )

    def _restored(self) -> None:
        self._detector = None

    def _fitted(self, prepared) -> None:
        self._detector = None

    # -- evaluation and prediction ------------------------------------------------------------

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        splits = prepared.splits
        prepared.held_out = splits.get("test") or splits.get("val") or splits["train"]
        metrics, prepared.found = self._score(prepared.held_out)
        return metrics

    def evaluate(self, data, *, images=None) -> dict:
        """COCO mAP@[.5:.95], mAP@.5, mAP@.75, AP by object size, average recall and per-class
        AP (pycocotools) of detections down to score 0.001 on `data` (its test split when it
        has one), beside the prior-box baseline. `images` is the image folder of COCO JSON or
        CSV `data`; class names map onto the run's."""
        self._require_model()
        source = self._source(data, class_names=self.class_names_, images=images)
        boxes = source.splits.get("test") or concat_sets(list(source.splits.values()))
        return self._score(boxes)[0]

    def _score(self, boxes: BoxSet) -> tuple[dict, list[dict]]:
        thresholds = (EVAL_SCORE, self.config.nms_iou, max(100, self.config.max_detections))
        with self._phase("evaluation"):
            found = []
            for start in range(0, len(boxes), 64):  # decoded a chunk at a time
                chunk = [_pixels(boxes, i) for i in range(start, min(start + 64, len(boxes)))]
                found += self._detect_images(chunk, thresholds)
        truth = [
            {"boxes": b, "labels": lab, "size": s}
            for b, lab, s in zip(boxes.boxes, boxes.labels, boxes.sizes, strict=True)
        ]
        metrics = coco_scores(truth, found, self.class_names_)
        baseline = coco_scores(
            truth, [self._prior_detection(s) for s in boxes.sizes], self.class_names_
        )
        metrics["baseline_map50"], metrics["baseline_map"] = baseline["map50"], baseline["map"]
        metrics["images"] = len(boxes)
        return metrics, found

    def _prior_detection(self, size) -> dict:
        """The baseline's one box per image: the mean training box, most frequent class."""
        height, width = size
        box = np.asarray(self.prior_box_) * [width, height, width, height]
        return {"boxes": box[None], "scores": [1.0], "labels": [self.prior_class_]}

    def predict(
        self,
        inputs,
        *,
        strict: bool = False,
        output=None,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        max_detections: int | None = None,
    ) -> list[dict]:
        """Per image: its boxes (x1, y1, x2, y2 in its pixels), class names, class indices and
        scores, best first; the thresholds default to the run's. With `output` (a folder) also
        `<name>.jpg` (the boxes drawn) and `<name>.json` (the row), whose paths the row gives.

        Inputs are image files/folders or arrays (N, H, W[, C]). An image file that cannot be
        read gets an error row in its place; with `strict` the first one raises a DataError.
        """
        self._require_model()
        if isinstance(inputs, np.ndarray):
            names, images = [str(i) for i in range(len(inputs))], list(inputs)
        else:
            names = image_inputs(inputs)
            images = [read_image_file(p) for p in names]
        good = [i for i, image in enumerate(images) if not isinstance(image, Bad)]
        thresholds = self._thresholds(score_threshold, nms_iou, max_detections)
        found = dict(
            zip(good, self._detect_images([images[i] for i in good], thresholds), strict=True)
        )
        stems = files.output_stems(names, output)
        rows = []
        for i, (name, image) in enumerate(zip(names, images, strict=True)):
            rows.append(image if i not in found else self._row(name, image, found[i], stems[i]))
        return assemble(rows, strict=strict)

    def _row(self, name: str, image: np.ndarray, found: dict, stem: Path | None) -> dict:
        row = {
            "input": name,
            "count": len(found["scores"]),
            "boxes": found["boxes"].tolist(),
            "labels": [self.class_names_[k] for k in found["labels"]],
            "classes": found["labels"].tolist(),
            "scores": found["scores"].tolist(),
        }
        if stem is not None:
            files.write_bytes(f"{stem}.jpg", _jpeg(self._drawn(image, found)))
            row.update(drawn=f"{stem}.jpg", json=f"{stem}.json")
            files.write_json(f"{stem}.json", row)
        return row

    def _drawn(self, image, found: dict, truth=None) -> np.ndarray:
        colors = class_colors(len(self.class_names_))
        captions = [
            f"{self.class_names_[k]} {s:.2f}"
            for k, s in zip(found["labels"], found["scores"], strict=True)
        ]
        return draw_boxes(
            image, found["boxes"], captions, [colors[k] for k in found["labels"]], truth
        )

    # -- export ---------------------------------------------------------------------------

    def _signatures(self) -> dict[str, Signature]:
        size, channels = self.image_size_, self.channels_
        names = tf.constant(self.class_names_)
        defaults = self._thresholds()

        def serve(image_bytes, score_threshold, nms_iou, max_detections):
            def one(data):
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
                shape = tf.shape(image)
                return letterbox(to_channels(image, channels), size)[0], shape[0], shape[1]

            canvases, heights, widths = tf.map_fn(
                one,
                image_bytes,
                fn_output_signature=(
                    tf.TensorSpec([size, size, channels], tf.float32),
                    tf.int32,
                    tf.int32,
                ),
            )
            found = self._detections(
                canvases, heights, widths, score_threshold, nms_iou, max_detections
            )
            labels = tf.where(
                found["labels"] >= 0, tf.gather(names, tf.maximum(found["labels"], 0)), ""
            )
            return {
                "boxes": found["boxes"],
                "scores": found["scores"],
                "classes": found["labels"],
                "labels": labels,
                "count": found["count"],
            }

        def serve_default(image_bytes):
            return serve(image_bytes, *_as_tensors(defaults))

        image_bytes = tf.TensorSpec([None], tf.string, name="image_bytes")
        return {
            "serving_default": Signature([image_bytes], call=serve_default),
            "detect_with_thresholds": Signature(
                [
                    image_bytes,
                    tf.TensorSpec([], tf.float32, name="score_threshold"),
                    tf.TensorSpec([], tf.float32, name="nms_iou"),
                    tf.TensorSpec([], tf.int32, name="max_detections"),
                ],
                call=serve,
            ),
        }

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        m, size = self.metrics_, prepared.image_size
        report.text(
            "Data",
            f"{prepared.description}; letterboxed to {size}x{size}; "
            + ", ".join(f"{k}: {len(v)} images" for k, v in prepared.splits.items()),
        )
        report.table(
            "Test metrics (pycocotools)",
            {k: v for k, v in m.items() if isinstance(v, int | float) or v is None},
        )
        report.table("Per-class AP", [{"class": k, **v} for k, v in m["per_class"].items()])
        if m["pr_curves"]:
            report.figure(
                "Precision-recall curves at IoU 0.5", _plot_pr(m["pr_curves"]), "pr_curves"
            )
        report.figure(
            "Test images: detections at the run's score threshold, true boxes in green",
            self._examples_figure(prepared),
            "examples",
        )
        if prepared.problems:
            report.table(
                f"Data problems ({len(prepared.problems)})",
                [{"file": f, "problem": p} for f, p in prepared.problems],
            )

    def _examples_figure(self, prepared: _Prepared):
        boxes, tiles, titles = prepared.held_out, [], []
        for index in range(min(EXAMPLES, len(boxes))):
            found = prepared.found[index]
            keep = found["scores"] >= self.config.score_threshold
            shown = {k: v[keep] for k, v in found.items()}
            tiles.append(self._drawn(_pixels(boxes, index), shown, truth=boxes.boxes[index]))
            name = boxes.names[index] if boxes.names is not None else str(index)
            titles.append(f"{str(name)[:16]}: {keep.sum()} found, {len(boxes.boxes[index])} true")
        return plot_image_grid(tiles, titles, columns=4)


def _prior(train: BoxSet, classes: int) -> tuple[list[float], int]:
    """(mean true box relative to its image's width and height, most frequent class)."""
    relative = [
        np.asarray(b, np.float64).reshape(-1, 4) / [w, h, w, h]
        for b, (h, w) in zip(train.boxes, train.sizes, strict=True)
    ]
    stacked = np.concatenate(relative + [np.zeros((0, 4))])
    labels = np.concatenate([np.asarray(lab, int) for lab in train.labels] + [np.zeros(0, int)])
    box = stacked.mean(axis=0) if len(stacked) else np.array([0.25, 0.25, 0.75, 0.75])
    return box.tolist(), int(np.bincount(labels, minlength=classes).argmax())


def _inside_images(found: dict, boxes: tf.Tensor) -> dict:
    """`found` with its boxes mapped to the original images (`boxes`), dropping those that
    lie wholly on the letterbox border (nothing left after clipping), best-first kept."""
    sides = boxes[..., 2:] - boxes[..., :2]
    real = tf.range(tf.shape(boxes)[1])[None, :] < found["count"][:, None]
    keep = real & tf.reduce_all(sides >= 1.0, axis=-1)
    order = tf.argsort(tf.cast(~keep, tf.int32), axis=1, stable=True)
    kept = tf.gather(keep, order, batch_dims=1)
    return {
        "boxes": tf.where(kept[..., None], tf.gather(boxes, order, batch_dims=1), 0.0),
        "scores": tf.where(kept, tf.gather(found["scores"], order, batch_dims=1), 0.0),
        "labels": tf.where(kept, tf.gather(found["labels"], order, batch_dims=1), -1),
        "count": tf.reduce_sum(tf.cast(keep, tf.int32), axis=1),
    }


def _channels(train: BoxSet) -> int:
    """1 when every (sampled) image is grayscale, else 3."""
    if train.images is not None:
        return 1 if all(_hwc(x).shape[-1] == 1 for x in train.images[:50]) else 3
    return 1 if sampled_sizes(train)[1] else 3


def _hwc(image) -> np.ndarray:
    image = np.asarray(image)
    return image[..., None] if image.ndim == 2 else image


def _pixels(boxes: BoxSet, index: int) -> np.ndarray:
    if boxes.images is not None:
        return _hwc(boxes.images[index])
    image = read_image_file(boxes.paths[index])
    if isinstance(image, Bad):
        raise DataError(f"{boxes.paths[index]}: {image.reason}")
    return image


def _as_tensors(thresholds: tuple) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    score, iou, most = thresholds
    return (
        tf.constant(score, tf.float32),
        tf.constant(iou, tf.float32),
        tf.constant(most, tf.int32),
    )


def _unbatch(batch: dict) -> list[dict]:
    """Per-image numpy detections, only the real ones (count of each image)."""
    arrays = {k: v.numpy() for k, v in batch.items()}
    return [
        {k: arrays[k][i, :n] for k in ("boxes", "scores", "labels")}
        for i, n in enumerate(arrays["count"])
    ]


def _jpeg(pixels: np.ndarray) -> bytes:
    return tf.io.encode_jpeg(tf.convert_to_tensor(pixels, tf.uint8), quality=90).numpy()


def _plot_pr(curves: dict[str, list[float]], shown: int = 10):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4))
    axes = figure.subplots()
    for name, precision in list(curves.items())[:shown]:
        axes.plot(RECALL_POINTS, precision, label=name)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    if len(curves) <= shown:
        axes.legend(fontsize=7)
    return figure
