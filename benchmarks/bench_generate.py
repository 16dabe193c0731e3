"""MNIST image generation: VAE vs DCGAN (or WGAN-GP) vs DDPM, each with the same wall-time budget.

Each ImageGenerator trains on the 60k MNIST train images (28x28) for `--minutes` of
training wall time (the per-epoch sample grids included), unconditionally or, with
`--conditional`, on the labels too (every model; the DDPM with classifier-free guidance),
then draws `--samples` images with a fixed seed (conditional: every digit in turn). One
small-CNN ImageClassifier, trained once on the MNIST train images by the toolkit, scores
every model against the 10k test images: the Fréchet distance in its penultimate features
(the real-train vs real-test distance of the same number of images is the floor), the
share of samples it classifies with probability >= 0.9, and how evenly the predicted
digits spread (class coverage: 1 is uniform; digits present: classes among the confident
samples). A 64-image sample grid of every model is written to benchmarks/generate_<model>.png.
Target: DDPM's distance below the VAE's and the GAN's, confident-class rate >= 90% and
all 10 digits present.

    python benchmarks/bench_generate.py --mnist /work/shared/data/mnist --minutes 7 [--conditional] [--set ddpm:width=16]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import common
import numpy as np

from dltoolkit import ImageClassifier, ImageGenerator
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.config import parse_value
from dltoolkit.tasks.generation_eval import class_statistics, classifier_outputs, frechet_distance
from dltoolkit.tasks.sample_grids import tile_images, write_png

# Per-model settings; everything else is the recipe's default.
MODELS = {
    "vae": dict(model="vae", width=32),
    "gan": dict(model="gan", width=32),
    "wgan-gp": dict(model="wgan-gp", width=32),
    "ddpm": dict(
        model="ddpm",
        width=16,
        blocks=1,
        learning_rate=2e-3,
        sample_steps=50,
        prediction="v",
        grid_every=5,
    ),  # a 64-image grid costs 50 U-Net passes: one every 1,500 steps
}
COLUMNS = [
    "model",
    "frechet",
    "confident",
    "coverage",
    "digits",
    "train_steps~",
    "fit_s",
    "sample_s",
]
SHARED = dict(
    schedule="constant",
    epochs=1000,
    steps_per_epoch=300,
    batch_size=64,
    grid_size=64,
    grid_every=1,
    eval_samples=2,
)


def scores(classifier, images: np.ndarray, test_features: np.ndarray) -> dict:
    features, probabilities = classifier_outputs(
        classifier.model_, images[..., None] if images.ndim == 3 else images
    )
    stats = class_statistics(probabilities, 0.9)
    return {
        "frechet": frechet_distance(features, test_features),
        "confident": stats["confident_rate"],
        "coverage": stats["class_coverage"],
        "digits": stats["classes_present"],
    }


def changes(sets: list[str], model: str) -> dict:
    """The MODEL:KEY=VALUE items of `sets` that name `model`, as parameters."""
    params = {}
    for item in sets:
        name, _, assignment = item.partition(":")
        key, _, raw = assignment.partition("=")
        if name == model:
            params[key.strip()] = parse_value(raw.strip())
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.mnist_arg(parser)
    parser.add_argument("--minutes", type=float, default=7.0, help="training wall time per model")
    parser.add_argument(
        "--models", default="vae,gan,ddpm", help=f"comma-separated: {', '.join(MODELS)}"
    )
    parser.add_argument(
        "--samples", type=int, default=2000, help="generated images scored per model"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--conditional", action="store_true", help="train and sample every model per digit"
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="MODEL:KEY=VALUE",
        help="change one model's parameter, e.g. ddpm:width=16 (repeatable)",
    )
    parser.add_argument(
        "--grids", type=Path, default=Path(__file__).parent, help="where the PNG grids go"
    )
    args = parser.parse_args()
    x, y = common.load_mnist(args.mnist, "train")
    x_test, y_test = common.load_mnist(args.mnist, "test")
    work = Path(tempfile.mkdtemp(prefix="bench_generate_"))

    classifier = ImageClassifier(epochs=3, test_split=0.0, label_smoothing=0.0, seed=args.seed).fit(
        (x, y), work / "classifier", progress=False
    )
    test_features, _ = classifier_outputs(classifier.model_, x_test[..., None])
    pick = np.random.default_rng(args.seed).choice(len(x), args.samples, replace=False)
    rows = [{"model": "real train images (floor)", **scores(classifier, x[pick], test_features)}]

    data = (x, y) if args.conditional else (x, np.zeros(len(x), np.int32))
    for name in args.models.split(","):
        params = dict(
            SHARED,
            **MODELS[name],
            train_minutes=args.minutes,
            seed=args.seed,
            conditional=args.conditional,
            **changes(args.sets, name),
        )
        print(f"{name}: {params}", flush=True)
        times: dict = {}
        with common.timer(times, "fit"):
            generator = ImageGenerator(**params).fit(data, work / name, progress=True)
        with common.timer(times, "sample"):
            images = generator.sample(args.samples, seed=args.seed + 1)
        write_png(args.grids / f"generate_{name}.png", tile_images(images[:64], 8))
        steps = len(read_history(work / name / "history.csv")) * SHARED["steps_per_epoch"]
        rows.append(
            {
                "model": name,
                **scores(classifier, images, test_features),
                "train_steps~": steps,
                "fit_s": times["fit"],
                "sample_s": times["sample"],
            }
        )
        common.print_table("so far", rows, COLUMNS)

    kind = "class-conditional" if args.conditional else "unconditional"
    print(
        f"\nMNIST generation, {kind}, {args.minutes:g} min of training per model, {args.samples} samples; "
        f"{common.machine()}; {common.load_average()}; runs in {work}"
    )
    common.print_table(
        "Generators (Fréchet distance in classifier features; lower is better)", rows, COLUMNS
    )


if __name__ == "__main__":
    main()
