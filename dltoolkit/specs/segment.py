"""Segment images: `ImageSegmenter`'s parameters and its `dltoolkit segment` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.params import among, between, param
from dltoolkit.registry import IMAGES, STRICT, Objective, Option, RecipeSpec
from dltoolkit.specs.image_data import ImageDataConfig

LOSS_TERMS = ("crossentropy", "dice", "focal")  # `loss` joins one or more with "+"
CLASS_WEIGHTS = ("none", "balanced")
AUGMENT_LEVELS = ("none", "standard", "strong")
FLIPS = ("none", "horizontal", "vertical", "both")
UPSAMPLING = ("transpose", "resize")


@dataclass
class SegmenterConfig(ImageDataConfig):
    """Parameters of ImageSegmenter (see the README's 'segment images' section)."""

    epochs: int | None = param(
        None,
        "Training epochs of at least 50 batches (default: about 1500 optimizer steps).",
        ge=1,
        cli=True,
    )
    train_minutes: float | None = param(
        None, "Stop training after this many minutes of wall time.", gt=0, cli=True
    )
    batch_size: int = param(8, "Global batch size (split across replicas).", ge=1, cli=True)
    learning_rate: float = param(
        2e-3,
        "Peak learning rate (warmup then cosine decay).",
        gt=0,
        cli=True,
        tune=between(3e-4, 1e-2, log=True),
    )
    backbone: str = param(
        "unet",
        "unet (U-Net from scratch, default) or a pretrained keras.applications encoder under "
        "a U-Net decoder: resnet50, efficientnetv2-b0, mobilenetv3-small, ...",
        cli=True,
    )
    weights: str = param(
        "auto",
        "Encoder weights: auto|imagenet|none or a local .weights.h5 file.",
        cli=True,
    )
    preset: str | None = param(
        None,
        "A KerasHub image segmenter (DeepLabV3, SegFormer): a preset name, a kaggle:// or "
        "hf:// handle, or a local preset directory; replaces --backbone.",
        cli=True,
    )
    filters: int = param(
        16,
        "U-Net width: filters of the first level, doubled per level.",
        ge=4,
        tune=among(8, 16, 32),
    )
    depth: int = param(4, "U-Net levels below the first (each halves the map).", ge=1, le=6)
    upsampling: str = param(
        "transpose",
        "U-Net decoder upsampling: transpose (transposed conv) or resize (resize-conv).",
        choices=UPSAMPLING,
        cli=True,
    )
    dropout: float = param(
        0.1, "Dropout in the U-Net bottleneck.", ge=0, lt=1, tune=between(0.0, 0.5)
    )
    image_size: int | None = param(
        None,
        "Square training input (default: the data's size, longer side at most 256; 224 for "
        "pretrained encoders); with --tile the tile size.",
        ge=8,
        cli=True,
    )
    tile: bool = param(
        False,
        "Train on random tiles of image_size cut from full-resolution images, and predict "
        "with overlapping tiles (large images keep their detail); default: resize images.",
        cli=True,
    )
    tile_overlap: float = param(0.25, "Overlap of neighbouring tiles when predicting.", ge=0, lt=1)
    fine_tune_epochs: int = param(
        0,
        "After training with a frozen encoder, fine-tune everything this many epochs.",
        ge=0,
        cli=True,
    )
    fine_tune_lr_factor: float = param(
        0.1, "Fine-tuning learning rate as a fraction of learning_rate.", gt=0
    )
    loss: str = param(
        "crossentropy+dice",
        "crossentropy, dice, focal or a sum of them joined by '+'.",
        cli=True,
    )
    class_weight: str = param(
        "none", "none|balanced (by pixel counts).", choices=CLASS_WEIGHTS, cli=True
    )
    augment: str = param(
        "standard",
        "none|standard (shift, rotation, zoom)|strong (also contrast and brightness); "
        "image and mask move together.",
        choices=AUGMENT_LEVELS,
        cli=True,
    )
    flip: str = param(
        "horizontal", "Random flips: none|horizontal|vertical|both.", choices=FLIPS, cli=True
    )
    classes: str | None = param(
        None,
        "Class file (YAML/JSON/TOML, or text 'value name' lines): mask value or RGB colour -> "
        "class name; an entry named unlabeled, void or ignore marks the ignore value.",
        cli=True,
    )
    ignore_value: int | None = param(
        None, "Mask value of unlabeled pixels, counted by no loss or metric.", ge=0, cli=True
    )
    images: str | None = param(
        None, "Image folder for COCO JSON data (--data instances.json).", cli=True
    )
    masks: str | None = param(
        None, "Mask folder, when --data is the image folder (default: DATA/masks).", cli=True
    )
    strict: bool = param(False, "Fail on an unreadable image instead of skipping it.", cli=True)


SPEC = RecipeSpec(
    task="segment",
    recipe="dltoolkit.tasks.image_segmenter:ImageSegmenter",
    config=SegmenterConfig,
    summary="Train a semantic segmenter, U-Net (built-in digit-scenes sample when --data is "
    "not given).",
    default_data="digit-scenes",
    data_help="Data: a folder with images/ and masks/, a COCO JSON file (with --images), "
    "tfds:NAME or a built-in name (`dltoolkit datasets`).",
    predict_options=(STRICT,),
    evaluate_options=(
        Option("masks", str, "The mask folder of --data (segment runs)."),
        IMAGES,
    ),
    objective=Objective("mean_iou", "maximize", "val_mean_iou"),
)
