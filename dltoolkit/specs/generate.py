"""Generate images: `ImageGenerator`'s parameters and its `dltoolkit generate` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import TrainConfig
from dltoolkit.core.params import param
from dltoolkit.registry import Option, RecipeSpec

MODELS = ("ddpm", "vae", "gan", "wgan-gp")
LEARNING_RATES = {"ddpm": 2e-3, "vae": 1e-3, "gan": 2e-4, "wgan-gp": 1e-4}
LATENT_DIMS = {"vae": 32, "gan": 64, "wgan-gp": 64, "ddpm": 0}
WIDTHS = {"ddpm": 16, "vae": 32, "gan": 32, "wgan-gp": 32}
NOISE_SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("v", "eps")
MAX_NUM = 4096  # images per predict call


def _per_model(values: dict) -> str:
    return ", ".join(f"{model} {value:g}" for model, value in values.items() if value)


@dataclass
class GeneratorConfig(TrainConfig):
    """Parameters of ImageGenerator (see the README's 'generate images' section)."""

    model: str = param(
        "ddpm", "ddpm (default), vae, gan (DCGAN) or wgan-gp.", choices=MODELS, cli=True
    )
    epochs: int | None = param(
        None,
        "Training epochs (default: about 1200 optimizer steps for ddpm, 3000 for the others; 5 to 200 epochs).",
        ge=1,
        cli=True,
    )
    learning_rate: float | None = param(
        None,
        f"Peak learning rate (default per model: {_per_model(LEARNING_RATES)}).",
        gt=0,
        cli=True,
    )
    early_stopping_patience: int = param(
        0,
        "ddpm, vae: stop after this many epochs without a lower loss (0: never; losses do "
        "not say when samples stop improving; gan and wgan-gp have no single loss).",
        ge=0,
    )
    steps_per_epoch: int | None = param(
        None, "Optimizer steps per epoch (default: one pass over the training images).", ge=1
    )
    train_minutes: float | None = param(
        None, "Stop training after this many minutes.", gt=0, cli=True
    )
    image_size: int | None = param(
        None,
        "Square size to generate (16-32 in steps of 4, 40-64 in 8s, 80-128 in 16s); default: "
        "the data's size rounded up.",
        cli=True,
    )
    conditional: bool = param(False, "Per-class generation (needs labelled data).", cli=True)
    width: int | None = param(
        None,
        "Base number of feature maps of the networks (default: ddpm 16, the others 32).",
        ge=1,
        cli=True,
    )
    latent_dim: int | None = param(
        None, f"vae, gan, wgan-gp: latent code size (default: {_per_model(LATENT_DIMS)}).", ge=1
    )
    beta: float = param(1.0, "vae: weight of the KL term.", ge=0)
    kl_warmup_epochs: float = param(
        1.0, "vae: epochs over which the KL weight rises to beta.", ge=0
    )
    gp_weight: float = param(10.0, "wgan-gp: weight of the gradient penalty.", ge=0)
    critic_steps: int = param(2, "wgan-gp: critic updates per generator update.", ge=1)
    d_lr_factor: float = param(
        4.0,
        "gan, wgan-gp: discriminator learning rate = factor * learning_rate (two-timescale rule).",
        gt=0,
    )
    noise_schedule: str = param(
        "cosine", "ddpm: noise schedule, cosine or linear.", choices=NOISE_SCHEDULES
    )
    prediction: str = param(
        "v", "ddpm: the network's target, v (velocity) or eps (noise).", choices=PREDICTIONS
    )
    timesteps: int = param(1000, "ddpm: diffusion steps of the noise schedule.", ge=1)
    sample_steps: int = param(25, "ddpm: DDIM sampling steps (at most timesteps).", ge=1, cli=True)
    ema_decay: float = param(
        0.999, "ddpm: decay of the moving average of the weights that samples.", ge=0, lt=1
    )
    blocks: int = param(1, "ddpm: residual blocks per resolution of the U-Net.", ge=1)
    guidance: float = param(1.0, "ddpm --conditional: classifier-free guidance weight.", cli=True)
    label_dropout: float = param(
        0.1, "ddpm --conditional: share of training labels dropped (for guidance).", ge=0, lt=1
    )
    grid_size: int = param(64, "Images per sample grid in the report.", ge=1, le=MAX_NUM)
    grid_every: int | None = param(
        None, "Epochs between sample grids (default: about 20 grids per run).", ge=1
    )
    eval_samples: int = param(500, "Samples generated for the quality metrics.", ge=2)
    eval_classifier_epochs: int = param(
        5, "Epochs of the classifier trained on the real images to judge the samples.", ge=1
    )
    confidence: float = param(
        0.9, "Probability from which that classifier counts a sample as confident.", ge=0, le=1
    )
    inception_weights: str | None = param(
        None, "Local InceptionV3 no-top .h5 file: enables FID/KID.", cli=True
    )
    val_split: float = param(
        0.1, "Share of the images held out to compare the samples with.", ge=0, lt=1
    )
    strict: bool = param(False, "Fail on an unreadable image instead of skipping it.")
    path_col: str | None = param(None, "CSV column with image paths.")
    label_col: str | None = param(None, "CSV column with labels.")
    tfds_data_dir: str | None = param(None, "tensorflow-datasets data_dir (default TFDS_DATA_DIR).")


SPEC = RecipeSpec(
    task="generate",
    recipe="dltoolkit.tasks.image_generator:ImageGenerator",
    config=GeneratorConfig,
    summary="Train an image generator (built-in digits sample when --data is not given).",
    default_data="digits",
    predict_options=(
        Option("num", int, "How many images to sample."),
        Option("label", str, "The class to sample (conditional models)."),
        Option("seed", int, "Random seed."),
        Option("out", str, "Image or GIF file to write."),
    ),
)
