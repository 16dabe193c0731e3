"""ImageClassifier: the classify-images recipe."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.core import files
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.export import Signature
from dltoolkit.core.metrics import classification_metrics
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.records import Bad, assemble, attempt, stop_if_strict
from dltoolkit.core.report import Report, plot_confusion_matrix, plot_image_grid
from dltoolkit.core.runtime import Runtime, file_shard
from dltoolkit.core.training import Plan, Stage, balanced_class_weights, pretrained_stages
from dltoolkit.data.augment import build_augmenter
from dltoolkit.data.images import (
    ImageSet,
    decode_error,
    decode_image_bytes,
    decoded_batches,
    image_files,
    infer_image_shape,
    load_image_source,
    make_dataset,
    prepare_array,
    split_stratified,
    to_image_shape,
    unreadable_reasons,
)
from dltoolkit.data.splits import concat_sets
from dltoolkit.models.vision import build_image_model, default_image_size, default_weights
from dltoolkit.specs.classify import SPEC

STEP_BUDGET = 3000  # default training length in batches: small data gets more epochs


@dataclass
class _Prepared:
    splits: dict[str, ImageSet]
    class_names: list[str]
    image_shape: tuple[int, int, int]
    description: str
    skipped: list[tuple[str, str]]
    held_out: ImageSet | None = None
    held_out_probabilities: np.ndarray | None = None


class ImageClassifier(Recipe):
    """Classify images with a small CNN or a pretrained backbone (transfer learning).

    >>> ImageClassifier(epochs=5).fit("./imgs").predict(["photo.jpg"])
    """

    spec = SPEC
    learned = ("class_names_", "image_shape_")

    def __init__(self, **params):
        super().__init__(**params)
        self.class_names_: list[str] = []
        self.image_shape_: tuple[int, int, int] | None = None
        self._backbone: keras.Model | None = None  # a pretrained one, frozen for the head phase

    # -- data ---------------------------------------------------------------------------

    def _validate(self) -> None:
        c = self.config
        default_image_size(c.backbone)  # checks the name
        if c.fine_tune_epochs > 0 and c.backbone == "small-cnn":
            raise ConfigError(
                "fine_tune_epochs needs a pretrained backbone; small-cnn trains fully already"
            )

    def _prepare(self, data, console) -> _Prepared:
        c = self.config
        source = load_image_source(
            data,
            strict=c.strict,
            path_col=c.path_col,
            label_col=c.label_col,
            tfds_data_dir=c.tfds_data_dir,
        )
        splits = dict(source.splits)
        wanted = {
            k: f
            for k, f in (("val", c.val_split), ("test", c.test_split))
            if f > 0 and k not in splits
        }
        if wanted:
            splits.update(split_stratified(splits.pop("train"), wanted, c.seed))
        size = c.image_size or default_image_size(c.backbone)
        shape = infer_image_shape(splits["train"])
        if size:
            shape = (size, size, shape[2])
        if console is not None:
            counts = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
            console.print(
                f"data: {source.description}; {counts}; images {shape[0]}x{shape[1]}x{shape[2]}"
            )
            if source.skipped:
                console.print(
                    f"[yellow]skipped {len(source.skipped)} unreadable file(s), e.g. {source.skipped[0][0]}[/]"
                )
        return _Prepared(splits, source.class_names, shape, source.description, source.skipped)

    def _dataset(self, images: ImageSet, training: bool, rt: Runtime | None = None):
        """Batches of `images`; in a multi-worker run (`rt`) each worker reads its own files."""
        c = self.config
        augment = None
        if training:
            augment = build_augmenter(
                c.augment, flip=c.flip, mixup=c.mixup, cutmix=c.cutmix, seed=c.seed
            )
        return make_dataset(
            images,
            self.image_shape_,
            c.batch_size,
            training=training,
            num_classes=len(self.class_names_),
            seed=c.seed,
            augment=augment,
            shard=file_shard(rt, len(images)),
        )

    # -- training -------------------------------------------------------------------------

    def _adopt(self, prepared: _Prepared, run) -> None:
        self.class_names_, self.image_shape_ = prepared.class_names, prepared.image_shape

    def _plan(self, prepared: _Prepared, rt, run) -> Plan:
        c = self.config
        train, val = prepared.splits["train"], prepared.splits.get("val")
        steps = math.ceil(len(train) / c.batch_size)
        return Plan(
            train=self._dataset(train, training=True, rt=rt),
            val=self._dataset(val, training=False, rt=rt) if val is not None and len(val) else None,
            steps=steps,
            epochs=c.epochs or min(20, max(3, math.ceil(STEP_BUDGET / steps))),
            class_weight=self._class_weight(train),
        )

    def _build(self, prepared: _Prepared, plan: Plan) -> keras.Model:
        c = self.config
        weights = default_weights(c.backbone) if c.weights == "auto" else c.weights
        built = build_image_model(
            c.backbone,
            self.image_shape_,
            len(self.class_names_),
            weights=weights,
            dropout=c.dropout,
        )
        self._backbone = built.backbone
        return built.model

    def _compile_args(self) -> dict:
        return {
            "loss": self._loss(),
            "metrics": [keras.metrics.CategoricalAccuracy(name="accuracy")],
        }

    def _stages(self, plan: Plan) -> list[Stage]:
        c, pretrained = self.config, self._backbone
        if pretrained is None:
            return [Stage("train", plan.epochs)]
        return pretrained_stages(
            plan.epochs, pretrained, c.fine_tune_epochs, c.fine_tune_lr_factor, first="head"
        )

    def _loss(self):
        c = self.config
        if c.loss == "focal":
            return keras.losses.CategoricalFocalCrossentropy(label_smoothing=c.label_smoothing)
        return keras.losses.CategoricalCrossentropy(label_smoothing=c.label_smoothing)

    def _class_weight(self, train: ImageSet) -> dict | None:
        if self.config.class_weight != "balanced":
            return None
        return balanced_class_weights(train.labels, len(self.class_names_))

    # -- evaluation and prediction ----------------------------------------------------------

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        splits = prepared.splits
        prepared.held_out = splits[self._held_out([k for k, v in splits.items() if v])]
        prepared.held_out_probabilities = self._probabilities(prepared.held_out)
        return self._metrics(prepared.held_out, prepared.held_out_probabilities)

    def _probabilities(self, images: ImageSet) -> np.ndarray:
        return self.model_.predict(self._dataset(images, training=False), verbose=0)

    def _metrics(self, images: ImageSet, probabilities: np.ndarray) -> dict:
        return classification_metrics(
            images.labels, probabilities, self.class_names_, self.config.top_k
        )

    def evaluate(self, data) -> dict:
        """Metrics (accuracy, macro-F1, per-class, confusion matrix) on labelled `data`."""
        self._require_model()
        source = load_image_source(
            data,
            strict=self.config.strict,
            path_col=self.config.path_col,
            label_col=self.config.label_col,
            tfds_data_dir=self.config.tfds_data_dir,
            class_names=self.class_names_,
        )
        images = source.splits.get("test") or concat_sets(list(source.splits.values()))
        return self._metrics(images, self._probabilities(images))

    def predict_proba(self, inputs) -> np.ndarray:
        """Class probabilities, shape (N, classes), for image files/folders or an image array.

        An unreadable image file is a DataError (`predict` skips it instead).
        """
        self._require_model()
        if isinstance(inputs, np.ndarray):
            return self._probabilities(self._array_set(inputs))
        results = self._file_probabilities(inputs)
        stop_if_strict(results, strict=True)
        return np.stack([probs for _, probs in results])

    def predict(self, inputs, *, strict: bool = False) -> list[dict]:
        """Top-k labels with probabilities for each input image (files, folders or arrays).

        An image file that cannot be read or decoded gets an error row in its place
        (`{"input": path, "error": reason}`, see `dltoolkit.core.records`); with `strict`
        the first one raises a DataError.
        """
        self._require_model()
        if isinstance(inputs, np.ndarray):
            probabilities = self._probabilities(self._array_set(inputs))
            return [self._label_row(str(i), probs) for i, probs in enumerate(probabilities)]
        results = [
            r if isinstance(r, Bad) else self._label_row(*r)
            for r in self._file_probabilities(inputs)
        ]
        return assemble(results, strict=strict)

    def _label_row(self, name: str, probs: np.ndarray) -> dict:
        order = np.argsort(-probs)[: min(self.config.top_k, len(self.class_names_))]
        return {
            "input": name,
            "label": self.class_names_[order[0]],
            "probability": float(probs[order[0]]),
            "top_k": [
                {"label": self.class_names_[i], "probability": float(probs[i])} for i in order
            ],
        }

    def _array_set(self, array: np.ndarray) -> ImageSet:
        array = array if array.ndim == 4 else array[None]
        return ImageSet(
            labels=np.zeros(len(array), np.int32), images=prepare_array(array, self.image_shape_)
        )

    def _file_probabilities(self, inputs) -> list[tuple[str, np.ndarray] | Bad]:
        """(path, class probabilities) per image file of `inputs` (files or folders), in the
        order given (folders sorted), or a Bad for an input that cannot be read or decoded."""
        items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
        if not items:
            raise DataError("no inputs to predict; pass JPEG/PNG/BMP/GIF files or folders")
        found = []
        for item in items:
            files = attempt({"input": str(item)}, image_files, [item])
            found += [files] if isinstance(files, Bad) else files
        paths = [f for f in found if not isinstance(f, Bad)]
        reasons = unreadable_reasons(paths)
        readable = [p for p in paths if not reasons[p]]
        probabilities = {}
        for pixels, indices in decoded_batches(readable, self.image_shape_, self.config.batch_size):
            batch = self.model_.predict_on_batch(pixels)
            probabilities.update(zip((readable[i] for i in indices.numpy()), batch, strict=True))
        results = []
        for f in found:
            if isinstance(f, Bad):
                results.append(f)
            elif f in probabilities:
                results.append((f, probabilities[f]))
            else:
                results.append(Bad({"input": f}, reasons[f] or decode_error(f) or "not decodable"))
        return results

    # -- persistence and export ---------------------------------------------------------------

    def _outputs(self, probabilities):
        probabilities = tf.cast(probabilities, tf.float32)
        scores, indices = tf.math.top_k(
            probabilities, k=min(self.config.top_k, len(self.class_names_))
        )
        labels = tf.gather(tf.constant(self.class_names_), indices)
        return {
            "label": labels[:, 0],
            "score": scores[:, 0],
            "top_labels": labels,
            "top_scores": scores,
            "probabilities": probabilities,
        }

    def _signatures(self) -> dict[str, Signature]:
        shape = self.image_shape_

        def decode(image_bytes):
            return tf.map_fn(
                lambda b: decode_image_bytes(b, shape),
                image_bytes,
                fn_output_signature=tf.TensorSpec(shape, tf.float32),
            )

        return {
            "serving_default": Signature(
                [tf.TensorSpec([None], tf.string, name="image_bytes")], decode, self._outputs
            ),
            "predict_images": Signature(
                [tf.TensorSpec([None, None, None, shape[2]], tf.float32, name="images")],
                lambda images: to_image_shape(images, shape),
                self._outputs,
            ),
        }

    def _tflite_signature(self) -> Signature:
        return Signature(
            [tf.TensorSpec([None, *self.image_shape_], tf.float32, name="images")],
            outputs=lambda probabilities: {"probabilities": tf.cast(probabilities, tf.float32)},
        )

    def _write_tflite_side_files(self, directory: Path) -> None:
        files.write_text(directory / "labels.txt", "\n".join(self.class_names_) + "\n")

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        m = self.metrics_
        report.text(
            "Data",
            f"{prepared.description}; images resized to "
            f"{prepared.image_shape[0]}x{prepared.image_shape[1]}x{prepared.image_shape[2]}; "
            + ", ".join(f"{k}: {len(v)}" for k, v in prepared.splits.items()),
        )
        report.table("Test metrics", {k: v for k, v in m.items() if isinstance(v, int | float)})
        report.table("Per-class metrics", [{"class": k, **v} for k, v in m["per_class"].items()])
        report.figure(
            "Confusion matrix",
            plot_confusion_matrix(np.array(m["confusion_matrix"]), self.class_names_),
            "confusion_matrix",
        )
        report.figure(
            "Examples: predicted (true), mistakes first",
            self._examples_figure(prepared),
            "examples",
        )
        if prepared.skipped:
            report.table("Skipped files", [{"file": p, "reason": r} for p, r in prepared.skipped])

    def _examples_figure(self, prepared: _Prepared, count: int = 16):
        images, probabilities = prepared.held_out, prepared.held_out_probabilities
        predicted = probabilities.argmax(axis=1)
        order = np.argsort(predicted == images.labels, kind="stable")[:count]
        pixels = np.concatenate([x for x, _ in self._dataset(images.subset(order), training=False)])
        names = self.class_names_
        titles = [f"{names[predicted[i]]} ({names[images.labels[i]]})" for i in order]
        return plot_image_grid(pixels, titles)
