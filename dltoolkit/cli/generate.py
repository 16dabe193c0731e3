"""`dltoolkit generate`: train an image generator, report and export it."""

from __future__ import annotations

from typing import Annotated

import typer

from dltoolkit.cli import common as c
from dltoolkit.tasks import ImageGenerator


@c.recipe_command(ImageGenerator)
def generate(
    data: c.Data = None,
    model: Annotated[
        str | None, typer.Option(help="ddpm (default), vae, gan (DCGAN) or wgan-gp.")
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            help="Square size to generate (16-32 in steps of 4, 40-64 in 8s, 80-128 in 16s); default: the data's size rounded up."
        ),
    ] = None,
    conditional: Annotated[
        bool | None,
        typer.Option(
            "--conditional/--no-conditional", help="Per-class generation (needs labelled data)."
        ),
    ] = None,
    width: Annotated[
        int | None, typer.Option(help="Base number of feature maps of the networks.")
    ] = None,
    sample_steps: Annotated[int | None, typer.Option(help="ddpm: DDIM sampling steps.")] = None,
    guidance: Annotated[
        float | None, typer.Option(help="ddpm --conditional: classifier-free guidance weight.")
    ] = None,
    train_minutes: Annotated[
        float | None, typer.Option(help="Stop training after this many minutes.")
    ] = None,
    inception_weights: Annotated[
        str | None, typer.Option(help="Local InceptionV3 no-top .h5 file: enables FID/KID.")
    ] = None,
    epochs: c.Epochs = None,
    batch_size: c.BatchSize = None,
    learning_rate: c.LearningRate = None,
):
    """Train an image generator (built-in digits sample when --data is not given)."""
    return data, dict(
        model=model,
        image_size=image_size,
        conditional=conditional,
        width=width,
        sample_steps=sample_steps,
        guidance=guidance,
        train_minutes=train_minutes,
        inception_weights=inception_weights,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
    )
