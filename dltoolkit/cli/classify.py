"""`dltoolkit classify`: train an image classifier, report and export it."""

from __future__ import annotations

from typing import Annotated

import typer

from dltoolkit.cli import common as c
from dltoolkit.tasks import ImageClassifier


@c.recipe_command(ImageClassifier)
def classify(
    data: c.Data = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            help="small-cnn (default) or a pretrained family: resnet50, efficientnet-b0, efficientnetv2-b0, mobilenetv3-small, convnext-tiny, vit-b16, ..."
        ),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            help="auto|imagenet|none, a local weights file or a local KerasHub preset directory."
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(help="Square input size (default: the data's size, 224 for pretrained)."),
    ] = None,
    epochs: c.Epochs = None,
    fine_tune_epochs: Annotated[
        int | None,
        typer.Option(help="After training the head, fine-tune the whole model this many epochs."),
    ] = None,
    batch_size: c.BatchSize = None,
    learning_rate: c.LearningRate = None,
    augment: Annotated[
        str | None, typer.Option(help="none|standard|strong (strong adds RandAugment).")
    ] = None,
    flip: Annotated[
        bool | None, typer.Option("--flip/--no-flip", help="Random horizontal flips.")
    ] = None,
    mixup: Annotated[float | None, typer.Option(help="MixUp alpha (0 = off).")] = None,
    cutmix: Annotated[float | None, typer.Option(help="CutMix factor (0 = off).")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="Label smoothing.")] = None,
    loss: Annotated[str | None, typer.Option(help="crossentropy|focal.")] = None,
    class_weight: Annotated[str | None, typer.Option(help="none|balanced.")] = None,
    strict: Annotated[
        bool | None,
        typer.Option(
            "--strict/--no-strict", help="Fail on an unreadable image instead of skipping it."
        ),
    ] = None,
    path_col: Annotated[str | None, typer.Option(help="CSV column with image paths.")] = None,
    label_col: Annotated[str | None, typer.Option(help="CSV column with labels.")] = None,
    tfds_data_dir: Annotated[
        str | None, typer.Option(help="tensorflow-datasets data_dir (default TFDS_DATA_DIR).")
    ] = None,
):
    """Train an image classifier (built-in digits sample when --data is not given)."""
    return data, dict(
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        epochs=epochs,
        fine_tune_epochs=fine_tune_epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        augment=augment,
        flip=flip,
        mixup=mixup,
        cutmix=cutmix,
        label_smoothing=label_smoothing,
        loss=loss,
        class_weight=class_weight,
        strict=strict,
        path_col=path_col,
        label_col=label_col,
        tfds_data_dir=tfds_data_dir,
    )
