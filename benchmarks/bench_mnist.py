"""Quality and time of the default ImageClassifier on full MNIST, beside a plain Keras convnet.

The recipe gets the 60k MNIST train images as arrays with its defaults, except
`test_split=0` (MNIST has its own test set; the default `val_split` still holds out 10%
for validation); `--set key=value` changes other parameters. The reference is the
classic Keras MNIST convnet example (two conv/pool blocks, dropout 0.5, Adam, batch 128,
15 epochs, 10% validation). Both are scored on the 10k MNIST test images.
Target: recipe test accuracy >= 99.0% with `fit` under 5 minutes on 2 CPU cores.

    python benchmarks/bench_mnist.py --mnist /work/shared/data/mnist [--set epochs=8 ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import common
import keras  # after common, which sets the TF log level
import numpy as np

from dltoolkit import ImageClassifier
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.config import parse_value


def keras_mnist_convnet(x, y, x_test, y_test, epochs: int, seed: int) -> dict:
    """The keras.io 'Simple MNIST convnet' example; returns its fit wall/CPU seconds and test accuracy."""
    times: dict = {}
    with common.timer(times, "fit"):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(32, 3, activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Conv2D(64, 3, activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        model.fit(
            x[..., None] / np.float32(255),
            keras.utils.to_categorical(y, 10),
            batch_size=128,
            epochs=epochs,
            validation_split=0.1,
            verbose=0,
        )
    probabilities = model.predict(x_test[..., None] / np.float32(255), verbose=0)
    return {**times, "accuracy": float(np.mean(probabilities.argmax(1) == y_test))}


def parse_sets(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, _, raw = item.partition("=")
        params[key.strip()] = parse_value(raw.strip())
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.mnist_arg(parser)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe parameter on top of test_split=0 (repeatable)",
    )
    parser.add_argument("--baseline-epochs", type=int, default=15)
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain Keras convnet")
    args = parser.parse_args()

    x, y = common.load_mnist(args.mnist, "train")
    x_test, y_test = common.load_mnist(args.mnist, "test")
    params = {"test_split": 0.0, **parse_sets(args.set)}
    print(f"machine: {common.machine()}")
    print(
        f"recipe: ImageClassifier(**{params}) on MNIST train {len(x)}, test {len(x_test)}",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="bench_mnist_") as tmp:
        clf = ImageClassifier(**params)
        times = common.timed_fit(clf, (x, y), Path(tmp) / "run")
        history = read_history(clf.run_.history_file)
    accuracy = clf.evaluate((x_test, y_test))["accuracy"]
    columns = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
    common.print_table("Recipe history", history, columns)
    seconds = [r["seconds"] for r in history]
    rows = [
        {
            "model": f"recipe ImageClassifier({', '.join(f'{k}={v!r}' for k, v in params.items())})",
            "epochs run": len(history),
            "test accuracy": accuracy,
            "fit wall s": times["fit"],
            "fit CPU s": times["fit_cpu"],
            "epoch s (min / median)": f"{min(seconds):.1f} / {common.median(seconds):.1f}",
        }
    ]
    if not args.no_baseline:
        keras.backend.clear_session()
        base = keras_mnist_convnet(x, y, x_test, y_test, args.baseline_epochs, seed=0)
        rows.append(
            {
                "model": "plain Keras MNIST convnet example",
                "epochs run": args.baseline_epochs,
                "test accuracy": base["accuracy"],
                "fit wall s": base["fit"],
                "fit CPU s": base["fit_cpu"],
            }
        )
    common.print_table("MNIST (60k train, 10k test); target: recipe >= 0.99 in < 300 s", rows)
    met = accuracy >= 0.99 and times["fit"] < 300
    print(
        f"recipe target {'MET' if met else 'MISSED'}: accuracy {accuracy:.4f}, fit {times['fit']:.0f} s; "
        f"machine at the end: {common.load_average()}"
    )


if __name__ == "__main__":
    main()
