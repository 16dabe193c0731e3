"""Classify images: `ImageClassifier`'s parameters and its `dltoolkit classify` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import TrainConfig
from dltoolkit.core.params import among, between, param, tunable
from dltoolkit.registry import STRICT, Objective, RecipeSpec
from dltoolkit.specs.image_data import ImageDataConfig

LOSSES = ("crossentropy", "focal")
CLASS_WEIGHTS = ("none", "balanced")
AUGMENT_LEVELS = ("none", "standard", "strong")


@dataclass
class ClassifierConfig(ImageDataConfig):
    """Parameters of ImageClassifier (see the README's 'classify images' section)."""

    epochs: int | None = param(
        None,
        "Training epochs (default: about 3000 optimizer steps, 3 to 20 epochs).",
        ge=1,
        cli=True,
    )
    learning_rate: float = param(
        3e-3,
        "Peak learning rate (warmup then cosine decay).",
        gt=0,
        cli=True,
        tune=between(3e-4, 1e-2, log=True),
    )
    weight_decay: float = tunable(TrainConfig, "weight_decay", between(1e-5, 1e-1, log=True))
    backbone: str = param(
        "small-cnn",
        "small-cnn (default) or a pretrained family: resnet50, efficientnet-b0, "
        "efficientnetv2-b0, mobilenetv3-small, convnext-tiny, vit-b16, ...",
        cli=True,
    )
    weights: str = param(
        "auto",
        "auto|imagenet|none, a local weights file or a local KerasHub preset directory.",
        cli=True,
    )
    image_size: int | None = param(
        None, "Square input size (default: the data's size, 224 for pretrained).", ge=1, cli=True
    )
    fine_tune_epochs: int = param(
        0, "After training the head, fine-tune the whole model this many epochs.", ge=0, cli=True
    )
    fine_tune_lr_factor: float = param(
        0.1, "Fine-tuning learning rate as a fraction of learning_rate.", gt=0
    )
    dropout: float = param(
        0.2, "Dropout before the classification layer.", ge=0, lt=1, tune=between(0.0, 0.5)
    )
    label_smoothing: float = param(
        0.1, "Label smoothing.", ge=0, le=1, cli=True, tune=between(0.0, 0.2)
    )
    loss: str = param("crossentropy", "crossentropy|focal.", choices=LOSSES, cli=True)
    class_weight: str = param("none", "none|balanced.", choices=CLASS_WEIGHTS, cli=True)
    augment: str = param(
        "standard",
        "none|standard|strong (strong adds RandAugment).",
        choices=AUGMENT_LEVELS,
        cli=True,
        tune=among(*AUGMENT_LEVELS),
    )
    flip: bool = param(False, "Random horizontal flips.", cli=True)
    mixup: float = param(0.0, "MixUp alpha (0 = off).", ge=0, cli=True)
    cutmix: float = param(0.0, "CutMix factor (0 = off).", ge=0, cli=True)
    top_k: int = param(5, "Labels per prediction, and k of the top-k accuracy.", ge=1)
    strict: bool = param(False, "Fail on an unreadable image instead of skipping it.", cli=True)
    path_col: str | None = param(None, "CSV column with image paths.", cli=True)
    label_col: str | None = param(None, "CSV column with labels.", cli=True)


SPEC = RecipeSpec(
    task="classify",
    recipe="dltoolkit.tasks.image_classifier:ImageClassifier",
    config=ClassifierConfig,
    summary="Train an image classifier (built-in digits sample when --data is not given).",
    default_data="digits",
    predict_options=(STRICT,),
    objective=Objective("accuracy", "maximize", "val_accuracy"),
)
