"""Overhead of the ImageClassifier recipe over a plain Keras script training the same model.

Both sides train the identical model (`build_image_model`), optimizer and schedule
(`build_optimizer` on the recipe's own config), loss (label smoothing), batch size and
epochs, with no augmentation, on the same train/validation arrays: the plain side splits
with the recipe's `split_stratified` and seed, the recipe gets `val_split` and
`test_split=0`. Runs alternate (plain, recipe, recipe, plain, ...) after an unreported
warm-up, and both are scored on the MNIST test set. Target: recipe/plain <= 1.05 in wall
time (median of 5 runs per side); CPU time and the cores used (CPU / wall) are beside it.

    python benchmarks/bench_overhead.py --mnist /work/shared/data/mnist

On a machine other processes share, wall times mostly measure them; as root,
`chrt -r 1 python benchmarks/bench_overhead.py ...` runs the benchmark ahead of them.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import common
import keras  # after common, which sets the TF log level
import numpy as np

from dltoolkit import ImageClassifier
from dltoolkit.core.optim import build_optimizer
from dltoolkit.data.images import (
    ImageSet,
    infer_image_shape,
    prepare_array,
    split_stratified,
)
from dltoolkit.models.vision import build_image_model, default_image_size

NUM_CLASSES = 10


def recipe_shape(config, train: ImageSet) -> tuple[int, int, int]:
    """The input shape the recipe trains at (same rule as ImageClassifier._prepare)."""
    shape = infer_image_shape(train)
    size = config.image_size or default_image_size(config.backbone)
    return (size, size, shape[2]) if size else shape


def train_plain(config, train: ImageSet, val: ImageSet, shape) -> keras.Model:
    """The hand-written Keras equivalent of the recipe's training (no callbacks, no files)."""
    keras.utils.set_random_seed(config.seed)
    x, xv = prepare_array(train.images, shape), prepare_array(val.images, shape)
    y, yv = (keras.utils.to_categorical(s.labels, NUM_CLASSES) for s in (train, val))
    model = build_image_model(
        config.backbone, shape, NUM_CLASSES, weights=None, dropout=config.dropout
    ).model
    steps = math.ceil(len(x) / config.batch_size)
    model.compile(
        optimizer=build_optimizer(config, steps, config.epochs),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    model.fit(
        x,
        y,
        batch_size=config.batch_size,
        epochs=config.epochs,
        shuffle=True,
        validation_data=(xv, yv),
        verbose=0,
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.mnist_arg(parser)
    parser.add_argument(
        "--train", type=int, default=20000, help="first N MNIST train images (default 20000)"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--val-split", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5, help="runs per side (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x, y = common.load_mnist(args.mnist, "train")
    x, y = x[: args.train, ..., None], y[: args.train]
    x_test, y_test = common.load_mnist(args.mnist, "test")
    params = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        augment="none",
        val_split=args.val_split,
        test_split=0.0,
        seed=args.seed,
    )
    config = ImageClassifier(**params).config
    splits = split_stratified(
        ImageSet(labels=y.astype(np.int32), images=x), {"val": args.val_split}, args.seed
    )
    train, val = splits["train"], splits["val"]
    shape = recipe_shape(config, train)
    test_x = prepare_array(x_test, shape)
    print(f"machine: {common.machine()}")
    print(
        f"data: MNIST train[:{args.train}] -> train {len(train)}, val {len(val)}; "
        f"test {len(x_test)}; input {shape}; params {params}",
        flush=True,
    )

    # Warm-up (TF start-up, thread pools, kernels), not reported.
    keras.backend.clear_session()
    warm = ImageClassifier(**{**params, "epochs": 1}).config
    train_plain(warm, train.subset(slice(0, 1024)), val.subset(slice(0, 256)), shape)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as tmp:
        for i in range(args.repeats):
            for side in ("plain", "recipe") if i % 2 == 0 else ("recipe", "plain"):
                keras.backend.clear_session()
                load = common.load_average()
                if side == "plain":
                    times = {}
                    with common.timer(times, "train"):
                        model = train_plain(config, train, val, shape)
                    times.update(fit=times["train"], fit_cpu=times["train_cpu"])
                    accuracy = float(np.mean(model.predict(test_x, verbose=0).argmax(1) == y_test))
                else:
                    clf = ImageClassifier(**params)
                    times = common.timed_fit(clf, (x, y), Path(tmp) / f"run{i}")
                    assert clf.image_shape_ == shape, (clf.image_shape_, shape)
                    accuracy = clf.evaluate((x_test, y_test))["accuracy"]
                rows.append(
                    {
                        "run": len(rows) + 1,
                        "side": side,
                        "test accuracy": accuracy,
                        "load before": load,
                        **times,
                    }
                )
                print(
                    f"  run {len(rows)} {side}: train {times['train']:.1f}s, fit {times['fit']:.1f}s, "
                    f"test accuracy {accuracy:.4f} ({load})",
                    flush=True,
                )

    common.print_table(
        "Runs (seconds; _cpu: CPU seconds of all threads)",
        rows,
        [
            "run",
            "side",
            "test accuracy",
            "load before",
            "train",
            "train_cpu",
            "fit",
            "fit_cpu",
            "prepare",
            "evaluate",
            "save",
            "other",
        ],
    )
    common.print_table(f"Summary (median of {args.repeats} runs per side)", summarize(rows))


def summarize(rows: list[dict]) -> list[dict]:
    """Per side: median and minimum wall time, median CPU time; the recipe's fixed costs; ratios.

    The minimum is the run least disturbed by other processes on a shared machine.
    """

    def stats(side, key):
        values = [r[key] for r in rows if r["side"] == side]
        cpu = [r[f"{key}_cpu"] for r in rows if r["side"] == side]
        return {
            "median wall s": common.median(values),
            "min wall s": min(values),
            "median CPU s": common.median(cpu),
            "median cores": common.median(
                c / max(v, 1e-9) for c, v in zip(cpu, values, strict=True)
            ),
        }

    def ratio(a, b):
        return {k: a[k] / b[k] for k in a}

    plain, recipe_train, recipe_fit = (
        stats("plain", "train"),
        stats("recipe", "train"),
        stats("recipe", "fit"),
    )
    out = [
        {"measure": "plain Keras: build + fit", **plain},
        {"measure": "recipe: _learn (datasets, model, fit with callbacks)", **recipe_train},
        {"measure": "recipe: whole fit()", **recipe_fit},
        *(
            {"measure": f"recipe fixed cost: {k}", **stats("recipe", k)}
            for k in ("prepare", "evaluate", "save", "other")
        ),
        {"measure": "ratio recipe _learn / plain", **ratio(recipe_train, plain)},
        {"measure": "ratio recipe fit() / plain (target <= 1.05)", **ratio(recipe_fit, plain)},
    ]
    for side in ("plain", "recipe"):
        out.append(
            {
                "measure": f"test accuracy {side} (median)",
                "median wall s": common.median(
                    r["test accuracy"] for r in rows if r["side"] == side
                ),
            }
        )
    return out


if __name__ == "__main__":
    main()
