"""Detect objects: `ObjectDetector`'s parameters and its `dltoolkit detect-objects` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.params import param
from dltoolkit.registry import IMAGES, STRICT, RecipeSpec
from dltoolkit.specs.image_data import ImageDataConfig

CLASSIFICATION_LOSSES = ("varifocal", "focal")
BOX_LOSSES = ("ciou", "giou")
AUGMENT_LEVELS = ("none", "standard", "strong")
FLIPS = ("none", "horizontal", "vertical", "both")


@dataclass
class DetectorConfig(ImageDataConfig):
    """Parameters of ObjectDetector (see the README's 'detect objects' section)."""

    epochs: int | None = param(
        None,
        "Training epochs of at least 50 batches (default: about 2000 optimizer steps).",
        ge=1,
        cli=True,
    )
    train_minutes: float | None = param(
        None, "Stop training after this many minutes of wall time.", gt=0, cli=True
    )
    batch_size: int = param(16, "Global batch size (split across replicas).", ge=1, cli=True)
    learning_rate: float = param(
        2e-3, "Peak learning rate (warmup then cosine decay).", gt=0, cli=True
    )
    weight_decay: float = param(5e-4, "AdamW's decoupled weight decay.", ge=0)
    early_stopping_patience: int = param(
        0, "Stop after this many epochs without a better validation loss (0: never).", ge=0
    )
    image_size: int | None = param(
        None,
        "Side of the square letterboxed input, divisible by 32 (default: the data's usual "
        "longer side, at most 320; a preset's own size).",
        ge=32,
        cli=True,
    )
    width: int = param(16, "Detector width: filters of the first stage, doubled per stage.", ge=8)
    depth: int = param(1, "Blocks per backbone stage.", ge=1, le=4)
    preset: str | None = param(
        None,
        "A KerasHub object detector (RetinaNet, D-FINE): a preset name, a kaggle:// or hf:// "
        "handle, or a local preset directory; replaces the from-scratch detector.",
        cli=True,
    )
    classification_loss: str = param(
        "varifocal",
        "varifocal (IoU-aware soft targets) or focal.",
        choices=CLASSIFICATION_LOSSES,
        cli=True,
    )
    box_loss: str = param("ciou", "ciou or giou.", choices=BOX_LOSSES, cli=True)
    assign_top_k: int = param(10, "Anchor points assigned to each true box (task-aligned).", ge=1)
    augment: str = param(
        "standard",
        "none|standard (shifts, zooms, colour)|strong (larger); boxes move with the pixels.",
        choices=AUGMENT_LEVELS,
        cli=True,
    )
    flip: str = param(
        "horizontal", "Random flips: none|horizontal|vertical|both.", choices=FLIPS, cli=True
    )
    score_threshold: float = param(
        0.25, "Detections below this score are dropped (predict, export).", ge=0, lt=1, cli=True
    )
    nms_iou: float = param(
        0.5,
        "Non-max suppression: overlap (IoU) above which the lower box goes.",
        gt=0,
        le=1,
        cli=True,
    )
    max_detections: int = param(100, "Most detections per image.", ge=1, cli=True)
    images: str | None = param(
        None, "Image folder for COCO JSON or CSV data (default: beside the file).", cli=True
    )
    strict: bool = param(
        False,
        "Fail on an unreadable image, a bad box, an unknown class or a missing label file "
        "instead of reporting it.",
        cli=True,
    )


SPEC = RecipeSpec(
    task="detect-objects",
    recipe="dltoolkit.tasks.object_detector:ObjectDetector",
    config=DetectorConfig,
    summary="Train an object detector, YOLO-style (built-in digit-boxes sample when --data is "
    "not given).",
    default_data="digit-boxes",
    data_help="Data: a YOLO folder (images/ + labels/), an Ultralytics data.yaml, a COCO JSON "
    "file (with --images), a Pascal VOC folder, a CSV of boxes, tfds:NAME or a built-in name "
    "(`dltoolkit datasets`).",
    predict_options=(STRICT,),
    evaluate_options=(IMAGES,),
)
