"""Throughput of the recipe's image-file input pipeline vs the training step it feeds.

Writes N MNIST images as JPEG files into class subfolders of a temporary folder (deleted
afterwards), then measures in images/second: the recipe's pipeline
(`load_image_source` + `make_dataset(..., training=True, cache=False)`: read, decode,
resize, shuffle, batch; with and without the default `standard` augmentation), the
default small-cnn's training on in-memory arrays of the same shape (`model.fit`, the
recipe's optimizer and loss), and both together (`fit` on the file pipeline).
Target: pipeline rate > training rate, i.e. the pipeline is not the bottleneck.
The `large` case writes 128x128 RGB JPEGs and trains at 96x96x3.

    python benchmarks/bench_pipeline.py --mnist /work/shared/data/mnist
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import common
import keras  # after common, which sets the TF log level
import numpy as np
from PIL import Image

from dltoolkit import ImageClassifier
from dltoolkit.core.optim import build_optimizer
from dltoolkit.data.augment import build_augmenter
from dltoolkit.data.images import load_image_source, make_dataset
from dltoolkit.models.vision import build_image_model

# name: (side of the JPEG files, PIL mode of the files, training input shape)
CASES = {"mnist": (28, "L", (28, 28, 1)), "large": (128, "RGB", (96, 96, 3))}


def write_jpegs(x, y, folder: Path, side: int, mode: str) -> None:
    """One JPEG per image in folder/<label>/<index>.jpg, resized to side x side in `mode`."""
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        im = Image.fromarray(image)
        if side != im.width:
            im = im.resize((side, side), Image.Resampling.BILINEAR)
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        im.convert(mode).save(folder / str(label) / f"{i}.jpg", quality=95)


def rates(times: dict, key: str, images: int) -> dict:
    """Images per wall second, and CPU milliseconds (all threads) per image."""
    return {"images/s": images / times[key], "CPU ms/image": 1000 * times[f"{key}_cpu"] / images}


def pass_rate(ds, n: int) -> dict:
    """Rates of one full pass over `ds` (after a first, unmeasured pass)."""
    for _ in ds:
        pass
    times: dict = {}
    with common.timer(times, "pass"):
        for _ in ds:
            pass
    return rates(times, "pass", n)


def fit_rate(model, images_per_step: int, steps: int, warmup: int = 5, **data) -> dict:
    """Rates of a `model.fit` epoch of `steps` batches, after `warmup` unmeasured steps."""
    model.fit(**data, epochs=1, steps_per_epoch=warmup, verbose=0)
    times: dict = {}
    with common.timer(times, "fit"):
        model.fit(**data, epochs=1, steps_per_epoch=steps, verbose=0)
    return rates(times, "fit", steps * images_per_step)


def compiled_model(config, shape, steps: int) -> keras.Model:
    """The default small-cnn compiled as the recipe compiles it.

    The default `epochs` is None (the recipe picks it from the data size); the schedule's
    length does not change the speed of a step, so one epoch stands in for it.
    """
    model = build_image_model(
        config.backbone, shape, 10, weights=None, dropout=config.dropout
    ).model
    model.compile(
        optimizer=build_optimizer(config, steps, config.epochs or 1),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.mnist_arg(parser)
    parser.add_argument(
        "--images", type=int, default=10000, help="number of JPEG files (default 10000)"
    )
    parser.add_argument(
        "--large-images",
        type=int,
        default=4000,
        help="number of JPEG files in the large case (default 4000; it trains slower)",
    )
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()

    config = ImageClassifier().config  # defaults: small-cnn, batch 64, standard augmentation
    bs = config.batch_size
    x, y = common.load_mnist(args.mnist, "train")
    print(f"machine: {common.machine()}")
    print(
        f"MNIST images as JPEG files: {args.images} (mnist case), {args.large_images} (large case); "
        f"batch size {bs}",
        flush=True,
    )

    rows, summary = [], []
    for name in args.cases:
        side, mode, shape = CASES[name]
        count = args.large_images if name == "large" else args.images
        case = f"{name}: {count} {side}x{side} {mode} JPEG -> {shape[0]}x{shape[1]}x{shape[2]}"
        with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
            write_jpegs(x[:count], y[:count], Path(tmp), side, mode)
            times: dict = {}
            with common.timer(times, "scan"):
                images = load_image_source(tmp).splits["train"]
            n = len(images)

            def pipeline(augment=None, cache=False, images=images, shape=shape):
                return make_dataset(
                    images,
                    shape,
                    bs,
                    training=True,
                    num_classes=10,
                    seed=config.seed,
                    augment=augment,
                    cache=cache,
                )

            augment = build_augmenter(config.augment, flip=config.flip, seed=config.seed)
            plain = pass_rate(pipeline(), n)
            augmented = pass_rate(pipeline(augment), n)
            keras.backend.clear_session()
            model = compiled_model(config, shape, math.ceil(n / bs))
            arrays = np.random.default_rng(0).uniform(0, 255, (n, *shape)).astype(np.float32)
            labels = keras.utils.to_categorical(images.labels, 10)
            steps = n // bs
            training = fit_rate(model, bs, steps, x=arrays, y=labels, batch_size=bs)
            e2e = fit_rate(model, bs, steps, x=pipeline(augment).repeat(), shuffle=False)
            # the recipe's default: decoded images cached in memory; measured after a full pass
            cached = fit_rate(
                model,
                bs,
                steps,
                warmup=steps + 1,
                shuffle=False,
                x=pipeline(augment, cache=None).repeat(),
            )
        measured = {
            "load_image_source: scan + check files": rates(times, "scan", n),
            "pipeline: read, decode, resize, batch": plain,
            "pipeline + standard augmentation": augmented,
            "training step, in-memory arrays (fit)": training,
            "fit on the file pipeline + augmentation, cache=False": e2e,
            "fit on the file pipeline + augmentation, default cache (2nd pass)": cached,
        }
        rows += [{"case": case, "measure": k, **v} for k, v in measured.items()]
        speed = training["images/s"]
        summary.append(
            {
                "case": case,
                "pipeline / training": plain["images/s"] / speed,
                "pipeline+augment / training": augmented["images/s"] / speed,
                "end-to-end / training": e2e["images/s"] / speed,
                "end-to-end cached / training": cached["images/s"] / speed,
                "pipeline+augment faster than training": "yes"
                if augmented["images/s"] > speed
                else "NO",
            }
        )
        print(f"  done {case}", flush=True)
    common.print_table("Throughput (images per wall second; CPU ms per image, all threads)", rows)
    common.print_table("Ratios (target: pipeline / training > 1)", summary)
    print(f"machine at the end: {common.load_average()}")


if __name__ == "__main__":
    main()
