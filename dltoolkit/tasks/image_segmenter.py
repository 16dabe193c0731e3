"""ImageSegmenter: the segment-images recipe (semantic segmentation, U-Net)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.core import files
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.export import Signature
from dltoolkit.core.metrics import pixel_confusion, segmentation_metrics
from dltoolkit.core.optim import time_budget
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.records import Bad, assemble, stop_if_strict
from dltoolkit.core.report import Report, plot_confusion_matrix, plot_image_grid
from dltoolkit.core.runtime import file_shard
from dltoolkit.core.training import Plan, Stage, pretrained_stages, small_data_epochs
from dltoolkit.data.images import (
    image_inputs,
    read_image_file,
    read_images,
    sampled_sizes,
    to_channels,
)
from dltoolkit.data.mask_batches import build_mask_augmenter, segmentation_dataset
from dltoolkit.data.masks import IGNORE, MaskSet, decode_mask, load_mask_source
from dltoolkit.data.splits import concat_sets, random_splits
from dltoolkit.models.segment_inference import image_probabilities
from dltoolkit.models.segmentation import (
    SegmentationLoss,
    build_segmentation_model,
    preset_image_size,
)
from dltoolkit.models.vision import APPLICATIONS
from dltoolkit.specs.segment import LOSS_TERMS, SPEC
from dltoolkit.tasks.mask_drawing import colorize, overlay, palette_png, rgb_png

STEP_BUDGET = 1500  # default training length in batches
EPOCH_STEPS = 50  # the fewest batches an epoch has
MAX_SIDE = 256  # default longest training side (resize) or tile side (tile)
EXAMPLES = 3  # best and worst test images shown in the report


@dataclass
class _Prepared:
    splits: dict[str, MaskSet]
    class_names: list[str]
    colors: list[tuple[int, int, int]]
    image_shape: tuple[int, int, int]
    description: str
    skipped: list[tuple[str, str]]
    held_out: MaskSet | None = None
    per_image: list[dict] = field(default_factory=list)  # held-out images' IoU and masks


class ImageSegmenter(Recipe):
    """Label every pixel of an image with a class: U-Net from scratch, a U-Net on a pretrained
    encoder, or a KerasHub segmenter (DeepLabV3, SegFormer).

    >>> ImageSegmenter(epochs=20).fit("./scans").predict(["slide.png"], output="masks/")
    """

    spec = SPEC
    learned = ("class_names_", "colors_", "image_shape_")

    def __init__(self, **params):
        super().__init__(**params)
        self.class_names_: list[str] = []
        self.colors_: list[tuple[int, int, int]] = []
        self.image_shape_: tuple[int, int, int] | None = None
        self._encoder: keras.Model | None = None  # a pretrained one, frozen at first
        self._segmenter = None  # the traced whole-image function (see _segment_fn)

    # -- data ---------------------------------------------------------------------------

    def _validate(self) -> None:
        c = self.config
        self._loss_terms()
        self._check_image_size()
        if c.backbone != "unet" and c.backbone not in APPLICATIONS:
            raise ConfigError(
                f"unknown backbone {c.backbone!r}; choose unet or a keras.applications encoder: "
                + ", ".join(APPLICATIONS)
            )
        if c.fine_tune_epochs > 0 and (c.backbone == "unet" or c.preset):
            raise ConfigError(
                "fine_tune_epochs needs a pretrained keras.applications --backbone; "
                "unet and KerasHub presets train fully already"
            )

    def _check_image_size(self) -> None:
        c = self.config
        if c.image_size is None or c.preset:
            return
        multiple = self._size_multiple()
        network = f"U-Net of depth {c.depth}" if c.backbone == "unet" else "a pretrained encoder"
        if c.image_size % multiple:
            raise ConfigError(
                f"{network} needs --image-size divisible by {multiple}, not {c.image_size}; "
                f"pass e.g. {max(multiple, c.image_size // multiple * multiple)}"
            )

    def _size_multiple(self) -> int:
        """What the network's input sides must divide by (its total downsampling)."""
        c = self.config
        return 2**c.depth if c.backbone == "unet" and not c.preset else 32

    def _loss_terms(self) -> tuple[str, ...]:
        terms = tuple(t.strip() for t in self.config.loss.split("+"))
        unknown = [t for t in terms if t not in LOSS_TERMS]
        if unknown or len(set(terms)) != len(terms):
            raise ConfigError(
                f"loss {self.config.loss!r} is not a sum of distinct terms from "
                f"{', '.join(LOSS_TERMS)}; e.g. crossentropy+dice"
            )
        return terms

    def _source(self, data, class_names=None, masks=None, images=None):
        c = self.config
        return load_mask_source(
            data,
            images=images,
            masks=masks,
            classes=c.classes,
            ignore_value=c.ignore_value,
            strict=c.strict,
            tfds_data_dir=c.tfds_data_dir,
            class_names=class_names,
        )

    def _prepare(self, data, console) -> _Prepared:
        c = self.config
        source = self._source(data, masks=c.masks, images=c.images)
        splits = dict(source.splits)
        wanted = {
            k: f for k, f in (("val", c.val_split), ("test", c.test_split)) if f and k not in splits
        }
        splits.update(random_splits(splits.pop("train"), wanted, c.seed))
        shape = self._image_shape(splits["train"])
        if console is not None:
            counts = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
            mode = "tiles" if c.tile else "images resized to"
            console.print(f"data: {source.description}; {counts}; {mode} {shape[0]}x{shape[1]}")
            if source.skipped:
                console.print(
                    f"[yellow]skipped {len(source.skipped)} unreadable file(s), "
                    f"e.g. {source.skipped[0][0]}[/]"
                )
        return _Prepared(
            splits, source.class_names, source.colors, shape, source.description, source.skipped
        )

    def _image_shape(self, train: MaskSet) -> tuple[int, int, int]:
        """(h, w, C) the model sees: --image-size (square), a preset's size, or the data's
        usual size with the longer side at most MAX_SIDE, rounded to what the network divides."""
        c = self.config
        sizes, gray = sampled_sizes(train)
        channels = 1 if gray else 3
        multiple = self._size_multiple()
        size = c.image_size or (preset_image_size(c.preset) if c.preset else None)
        if size:
            return size, size, channels
        height, width = sizes.most_common(1)[0][0]
        scale = min(1.0, MAX_SIDE / max(height, width))
        if c.tile:  # square tiles no larger than the images
            side = min(height, width, MAX_SIDE)
            height = width = side
            scale = 1.0
        return (
            max(multiple, round(height * scale / multiple) * multiple),
            max(multiple, round(width * scale / multiple) * multiple),
            channels,
        )

    def _dataset(self, pairs: MaskSet, training: bool, rt=None, repeat=1) -> tf.data.Dataset:
        c = self.config
        augment = build_mask_augmenter(c.augment, c.flip, c.seed) if training else None
        return segmentation_dataset(
            pairs,
            self.image_shape_,
            c.batch_size,
            training=training,
            tile=c.tile,
            seed=c.seed,
            augment=augment,
            shard=file_shard(rt, len(pairs)),
            repeat=repeat,
        )

    # -- training -------------------------------------------------------------------------

    def _adopt(self, prepared: _Prepared, run) -> None:
        self.class_names_, self.colors_ = prepared.class_names, prepared.colors
        self.image_shape_ = prepared.image_shape

    def _plan(self, prepared: _Prepared, rt, run) -> Plan:
        c = self.config
        train, val = prepared.splits["train"], prepared.splits.get("val")
        repeat, steps = small_data_epochs(len(train), c.batch_size, EPOCH_STEPS)
        self._class_weights = (
            self._balanced_weights(train) if c.class_weight == "balanced" else None
        )
        epochs = c.epochs or max(3, math.ceil(STEP_BUDGET / steps))
        return Plan(
            train=self._dataset(train, training=True, rt=rt, repeat=repeat),
            val=self._dataset(val, training=False, rt=rt) if val is not None and len(val) else None,
            steps=steps,
            epochs=epochs,
            callbacks=time_budget(c, steps, epochs),
        )

    def _balanced_weights(self, train: MaskSet) -> list[float]:
        """Inverse pixel frequency per class, normalised to mean 1 and capped at 10."""
        counts = np.zeros(len(self.class_names_))
        for png in train.masks:
            mask = decode_mask(png)
            counts += np.bincount(mask[mask != IGNORE].ravel(), minlength=len(counts))[
                : len(counts)
            ]
        weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
        return list(np.minimum(weights / weights.mean(), 10.0))

    def _build(self, prepared: _Prepared, plan: Plan) -> keras.Model:
        c = self.config
        built = build_segmentation_model(
            c.backbone,
            self.image_shape_,
            len(self.class_names_),
            weights=c.weights,
            preset=c.preset,
            filters=c.filters,
            depth=c.depth,
            upsampling=c.upsampling,
            dropout=c.dropout,
        )
        self._encoder = built.encoder
        return built.model

    def _compile_args(self) -> dict:
        return {
            "loss": SegmentationLoss(self._loss_terms(), self._class_weights),
            "metrics": [
                keras.metrics.MeanIoU(
                    len(self.class_names_),
                    sparse_y_pred=False,
                    ignore_class=IGNORE,
                    name="mean_iou",
                )
            ],
        }

    def _stages(self, plan: Plan) -> list[Stage]:
        c, pretrained = self.config, self._encoder
        if pretrained is None:
            return [Stage("train", plan.epochs)]
        return pretrained_stages(
            plan.epochs, pretrained, c.fine_tune_epochs, c.fine_tune_lr_factor, first="decoder"
        )

    # -- evaluation and prediction ------------------------------------------------------------

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        splits = prepared.splits
        prepared.held_out = splits[self._held_out([k for k, v in splits.items() if v])]
        metrics, prepared.per_image = self._score(prepared.held_out)
        return metrics

    def evaluate(self, data, *, masks=None, images=None) -> dict:
        """Mean IoU, Dice, pixel accuracy, per-class IoU/Dice and the confusion matrix, over
        every labelled pixel of `data` at the images' own size. `masks` is the mask folder
        when `data` is an image folder, `images` the image folder of COCO JSON `data`;
        mask values map to classes as in training."""
        self._require_model()
        source = self._source(data, class_names=self.class_names_, masks=masks, images=images)
        pairs = source.splits.get("test") or concat_sets(list(source.splits.values()))
        return self._score(pairs)[0]

    def _score(self, pairs: MaskSet) -> tuple[dict, list[dict]]:
        """Metrics over all pixels of `pairs`, and each image's IoU with its masks."""
        classes = len(self.class_names_)
        total, per_image = np.zeros((classes, classes), np.int64), []
        with self._phase("evaluation"):
            for index in range(len(pairs)):
                image = self._pixels(pairs, index)
                if image is None:
                    continue
                truth, predicted = decode_mask(pairs.masks[index]), self._segment(image)[0]
                matrix = pixel_confusion(truth, predicted, classes)
                total += matrix
                iou = segmentation_metrics(matrix, self.class_names_)["mean_iou"]
                per_image.append(
                    {"index": index, "iou": iou, "truth": truth, "predicted": predicted}
                )
        if not per_image:
            raise DataError("none of the evaluation images can be read; check them")
        return segmentation_metrics(total, self.class_names_), per_image

    def _pixels(self, pairs: MaskSet, index: int) -> np.ndarray | None:
        if pairs.images is not None:
            return pairs.images[index]
        result = read_image_file(pairs.paths[index])
        return None if isinstance(result, Bad) else result

    def predict_masks(self, inputs) -> list[np.ndarray]:
        """Class-index masks (uint8, each at its image's size) for image files/folders or a
        batch of arrays (N, H, W[, C]). An unreadable file is a DataError."""
        return [self._segment(image)[0] for image in self._readable(inputs)]

    def predict_proba(self, inputs) -> np.ndarray:
        """Class probabilities at the model's resolution, (N, h, w, K), for the same inputs
        as `predict_masks`."""
        return np.stack([self._segment(image)[1] for image in self._readable(inputs)])

    def _readable(self, inputs) -> list[np.ndarray]:
        self._require_model()
        images = list(inputs) if isinstance(inputs, np.ndarray) else read_images(inputs)
        stop_if_strict(images, strict=True)
        return images

    def _segment(self, image) -> tuple[np.ndarray, np.ndarray]:
        """One image's class-index mask at its size and probabilities at the model's."""
        mask, probabilities = self._segment_fn()(self._as_model_pixels(image))
        return mask.numpy(), probabilities.numpy()

    def predict(self, inputs, *, strict: bool = False, output=None) -> list[dict]:
        """Per image: its size and each class's share of its pixels; with `output` (a folder)
        also `<name>.png` (the class-index mask, with a colour palette) and
        `<name>_overlay.png` (the mask drawn over the image), whose paths the rows give.

        An image file that cannot be read gets an error row in its place; with `strict` the
        first one raises a DataError.
        """
        self._require_model()
        if isinstance(inputs, np.ndarray):
            names, images = [str(i) for i in range(len(inputs))], list(inputs)
        else:
            names = image_inputs(inputs)
            images = [read_image_file(p) for p in names]
        rows = []
        for name, image, stem in zip(names, images, files.output_stems(names, output), strict=True):
            if isinstance(image, Bad):
                rows.append(image)
                continue
            mask = self._segment(image)[0]
            rows.append(self._row(name, image, mask, stem))
        return assemble(rows, strict=strict)

    def _row(self, name: str, image: np.ndarray, mask: np.ndarray, stem: Path | None) -> dict:
        shares = np.bincount(mask.ravel(), minlength=len(self.class_names_)) / mask.size
        row = {
            "input": name,
            "height": int(mask.shape[0]),
            "width": int(mask.shape[1]),
            "classes": {n: float(s) for n, s in zip(self.class_names_, shares, strict=True) if s},
        }
        if stem is not None:
            files.write_bytes(f"{stem}.png", palette_png(mask, self.colors_))
            drawn = overlay(np.asarray(image), colorize(mask, self.colors_))
            files.write_bytes(f"{stem}_overlay.png", rgb_png(drawn))
            row.update(mask=f"{stem}.png", overlay=f"{stem}_overlay.png")
        return row

    def _as_model_pixels(self, image) -> tf.Tensor:
        image = np.asarray(image)
        image = image[..., None] if image.ndim == 2 else image
        return to_channels(tf.convert_to_tensor(image), self.image_shape_[2])

    def _segment_fn(self):
        """One image (H, W, C) -> (uint8 class-index mask (H, W), probabilities (h, w, K)),
        traced once per recipe (the same ops the export runs)."""
        if self._segmenter is None:
            shape, c = self.image_shape_, self.config

            @tf.function(input_signature=[tf.TensorSpec([None, None, shape[2]], tf.float32)])
            def segment(image):
                full, small = image_probabilities(
                    self.model_, image, shape[:2], tile=c.tile, overlap=c.tile_overlap
                )
                return tf.cast(tf.argmax(full, axis=-1), tf.uint8), small

            self._segmenter = segment
        return self._segmenter

    def _restored(self) -> None:
        self.image_shape_ = tuple(self.image_shape_)
        self.colors_ = [tuple(color) for color in self.colors_]
        self._segmenter = None

    def _fitted(self, prepared) -> None:
        self._segmenter = None

    # -- export ---------------------------------------------------------------------------

    def _signatures(self) -> dict[str, Signature]:
        shape, c = self.image_shape_, self.config
        colors = tf.constant(colorize(np.arange(256)[None], self.colors_)[0], tf.uint8)
        classes = len(self.class_names_)

        def decode(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            return to_channels(image, shape[2])

        def serve(image_bytes):
            sizes = tf.map_fn(
                lambda data: tf.shape(decode(data))[:2],
                image_bytes,
                fn_output_signature=tf.TensorSpec([2], tf.int32),
            )
            largest = tf.reduce_max(sizes, axis=0)

            def one(data):
                full, small = image_probabilities(
                    self.model_, decode(data), shape[:2], tile=c.tile, overlap=c.tile_overlap
                )
                mask = tf.cast(tf.argmax(full, axis=-1), tf.uint8)
                png = tf.io.encode_png(tf.gather(colors, tf.cast(mask, tf.int32)))
                pad = largest - tf.shape(mask)
                padded = tf.pad(mask, [[0, pad[0]], [0, pad[1]]], constant_values=IGNORE)
                return padded, png, small

            masks, pngs, probabilities = tf.map_fn(
                one,
                image_bytes,
                fn_output_signature=(
                    tf.TensorSpec([None, None], tf.uint8),
                    tf.TensorSpec([], tf.string),
                    tf.TensorSpec([*shape[:2], classes], tf.float32),
                ),
            )
            return {
                "mask": masks,
                "height": sizes[:, 0],
                "width": sizes[:, 1],
                "color_png": pngs,
                "probabilities": probabilities,
            }

        return {
            "serving_default": Signature(
                [tf.TensorSpec([None], tf.string, name="image_bytes")], call=serve
            )
        }

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        m, shape = self.metrics_, prepared.image_shape
        mode = "tiles of" if self.config.tile else "images resized to"
        report.text(
            "Data",
            f"{prepared.description}; {mode} {shape[0]}x{shape[1]}; "
            + ", ".join(f"{k}: {len(v)}" for k, v in prepared.splits.items()),
        )
        report.table("Test metrics", {k: v for k, v in m.items() if isinstance(v, int | float)})
        report.table("Per-class metrics", [{"class": k, **v} for k, v in m["per_class"].items()])
        if len(self.class_names_) <= 30:
            report.figure(
                "Confusion matrix (pixels)",
                plot_confusion_matrix(np.array(m["confusion_matrix"]), self.class_names_),
                "confusion_matrix",
            )
        report.figure(
            "Best and worst test images: image, truth, prediction (IoU)",
            self._examples_figure(prepared),
            "examples",
        )
        if prepared.skipped:
            report.table("Skipped files", [{"file": p, "reason": r} for p, r in prepared.skipped])

    def _examples_figure(self, prepared: _Prepared):
        # an image whose pixels are all unlabeled has no IoU (None)
        ranked = sorted(
            (r for r in prepared.per_image if r["iou"] is not None), key=lambda r: -r["iou"]
        )
        chosen = ranked[:EXAMPLES] + ranked[EXAMPLES:][-EXAMPLES:]
        pairs, tiles, titles = prepared.held_out, [], []
        for r in chosen:
            image = np.asarray(self._pixels(pairs, r["index"]), np.float32)
            image = image[..., None] if image.ndim == 2 else image
            rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
            name = pairs.names[r["index"]] if pairs.names is not None else str(r["index"])
            tiles += [
                rgb,
                overlay(rgb, colorize(r["truth"], self.colors_)),
                overlay(rgb, colorize(r["predicted"], self.colors_)),
            ]
            titles += [str(name)[:16], "truth", f"IoU {r['iou']:.3f}"]
        return plot_image_grid(tiles, titles, columns=6)
