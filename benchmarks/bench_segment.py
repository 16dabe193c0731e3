"""ISBI 2012 EM membranes: ImageSegmenter beside keras-io's U-Net-like example, 5-fold by slice.

The 30 labelled 512x512 slices (DATA/data/membrane/train/{image,label}/{i}.png; label 0 =
membrane, 255 = cell) are split by slice with a seeded 5-fold KFold; from each fold's 24
training slices 3 (seeded) are carved for validation, so both sides train on the same 21
slices, validate on the same 3 and are scored on the same 6 held-out slices. Both sides see
the same input (`--input resize256`: the slices resized to 256x256 and the predicted
probabilities resized back bilinearly; or `full512`) and get the same wall-time budget per
fold (`--minutes` of training). The reference is keras-io's "Image segmentation with a
U-Net-like architecture" trained as the example does (rmsprop, sparse categorical
crossentropy, inputs in [0, 1], no augmentation, the weights of the best validation loss),
with the recipe's batch size (the example's 32 exceeds the 21 training slices; both sides
use the recipe's batch_size, 8 by default, and `--set batch_size=N` changes both). The
recipe is `ImageSegmenter(image_size=..., train_minutes=..., seed=..., test_split=0)` with
everything else default (`--set key=value` changes it), trained on {"train", "val"} arrays
and predicting masks at 512x512. One scorer for both: membrane IoU, membrane Dice, pixel
accuracy and mean IoU of the two classes over all held-out pixels of a fold; mean ± std
(population) over folds. Target: the recipe's membrane IoU above the plain example's by more
than the fold spread, under 5 minutes of training per fold on 2 CPU cores.

`--coco DIR` also trains the recipe alone on coco128_seg_det's train2017 semantic masks
(sem_config.yaml classes, unlabeled ignored) and reports its mIoU on val2017 over the classes
present there (a multi-class figure without a target).

    python benchmarks/bench_segment.py --data ../shared/data/isbi_em_membrane [--minutes 4.5 --input resize256 --folds 0,1 --set augment=strong --json out.json --coco ../shared/data/coco128_seg_det --reference-only]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path

import common
import keras
import numpy as np
import tensorflow as tf
from keras import layers
from PIL import Image
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import KFold

from dltoolkit.core.callbacks import TimeBudget, read_history
from dltoolkit.core.config import parse_value
from dltoolkit.specs.segment import SegmenterConfig

SLICES = 30
FOLDS = 5
VAL_SLICES = 3
INPUTS = {"resize256": 256, "full512": 512}
SCORES = ["membrane_iou", "membrane_dice", "pixel_accuracy", "mean_iou"]
COLUMNS = ["fold", "side", *SCORES, "train_s", "fit_s", "epochs", "steps"]


def load_membrane(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 30 slices as uint8 (30, 512, 512, 1) and class indices (30, 512, 512): 0 membrane, 1 cell."""
    folder = root / "data" / "membrane" / "train"
    x = np.stack(
        [np.asarray(Image.open(folder / "image" / f"{i}.png").convert("L")) for i in range(SLICES)]
    )
    labels = np.stack(
        [np.asarray(Image.open(folder / "label" / f"{i}.png").convert("L")) for i in range(SLICES)]
    )
    if not np.isin(labels, (0, 255)).all():
        raise ValueError(f"{folder / 'label'} has values other than 0 and 255")
    return x[..., None], (labels == 255).astype(np.int32)


def fold_splits(seed: int) -> list[dict]:
    """Per fold: the held-out slices, and its 24 training slices split into 21 train and 3 val."""
    splits = []
    for k, (train, test) in enumerate(
        KFold(FOLDS, shuffle=True, random_state=seed).split(np.arange(SLICES))
    ):
        shuffled = np.random.default_rng(seed + k).permutation(train)
        splits.append(
            {
                "train": np.sort(shuffled[VAL_SLICES:]),
                "val": np.sort(shuffled[:VAL_SLICES]),
                "test": test,
            }
        )
    return splits


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Membrane (class 0) IoU and Dice, pixel accuracy and the two classes' mean IoU, over all pixels."""
    cm = confusion_matrix(y_true.ravel(), y_pred.ravel(), labels=[0, 1])
    true_positive = np.diag(cm)
    false_positive = cm.sum(axis=0) - true_positive
    false_negative = cm.sum(axis=1) - true_positive
    iou = true_positive / (true_positive + false_positive + false_negative)
    dice = 2 * true_positive / (2 * true_positive + false_positive + false_negative)
    return {
        "membrane_iou": float(iou[0]),
        "membrane_dice": float(dice[0]),
        "pixel_accuracy": float(true_positive.sum() / cm.sum()),
        "mean_iou": float(iou.mean()),
    }


def unet_like(size: int, num_classes: int) -> keras.Model:
    """keras-io's Xception-style U-Net: a strided entry conv, three separable-conv down blocks and
    four transposed-conv up blocks, each with a projected residual, and a softmax conv head."""
    inputs = keras.Input((size, size, 1))
    x = layers.Conv2D(32, 3, strides=2, padding="same")(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    skip = x
    for filters in (64, 128, 256):
        for _ in range(2):
            x = layers.Activation("relu")(x)
            x = layers.BatchNormalization()(layers.SeparableConv2D(filters, 3, padding="same")(x))
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.add([x, layers.Conv2D(filters, 1, strides=2, padding="same")(skip)])
        skip = x
    for filters in (256, 128, 64, 32):
        for _ in range(2):
            x = layers.Activation("relu")(x)
            x = layers.BatchNormalization()(layers.Conv2DTranspose(filters, 3, padding="same")(x))
        x = layers.UpSampling2D(2)(x)
        x = layers.add([x, layers.Conv2D(filters, 1, padding="same")(layers.UpSampling2D(2)(skip))])
        skip = x
    outputs = layers.Conv2D(num_classes, 3, activation="softmax", padding="same")(x)
    return keras.Model(inputs, outputs)


def scaled(x: np.ndarray, size: int) -> np.ndarray:
    """uint8 images as float32 in [0, 1], resized (antialiased bilinear) to size x size."""
    images = x.astype(np.float32) / 255.0
    if images.shape[1:3] == (size, size):
        return images
    return tf.image.resize(images, (size, size), antialias=True).numpy()


def reference(
    x: np.ndarray,
    y: np.ndarray,
    split: dict,
    size: int,
    batch: int,
    minutes: float,
    seed: int,
    work: Path,
) -> dict:
    """Train the plain example on the fold for `minutes`; masks of the held-out slices at 512."""
    keras.utils.set_random_seed(seed)
    x_in = scaled(x, size)
    y_in = tf.image.resize(y[..., None], (size, size), method="nearest").numpy()
    best = work / "reference.weights.h5"
    times: dict = {}
    with common.timer(times, "train"):
        model = unet_like(size, 2)
        model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
        history = model.fit(
            x_in[split["train"]],
            y_in[split["train"]],
            batch_size=batch,
            epochs=10**6,  # the time budget stops it
            validation_data=(x_in[split["val"]], y_in[split["val"]]),
            callbacks=[
                TimeBudget(minutes),
                keras.callbacks.ModelCheckpoint(best, save_best_only=True, save_weights_only=True),
            ],
            verbose=0,
        )
        steps = int(model.optimizer.iterations.numpy())  # before the best epoch's weights reset it
        model.load_weights(best)
    probabilities = model.predict(x_in[split["test"]], batch_size=batch, verbose=0)
    full = (
        tf.image.resize(probabilities, y.shape[1:3]).numpy()
        if size != y.shape[1]
        else probabilities
    )
    return {
        "masks": full.argmax(axis=-1),
        "train_s": times["train"],
        "fit_s": times["train"],
        "epochs": len(history.history["loss"]),
        "steps": steps,
    }


def recipe(
    x: np.ndarray,
    y: np.ndarray,
    split: dict,
    size: int,
    params: dict,
    minutes: float,
    seed: int,
    work: Path,
) -> dict:
    """Fit ImageSegmenter on the fold within `minutes` of training; its masks of the held-out slices."""
    from dltoolkit import ImageSegmenter  # here, so --reference-only runs without the recipe

    segmenter = ImageSegmenter(
        **{"image_size": size, "train_minutes": minutes, "seed": seed, "test_split": 0.0, **params}
    )
    data = {part: (x[split[part]], y[split[part]]) for part in ("train", "val")}
    times = common.timed_fit(segmenter, data, work / "recipe")
    return {
        "masks": np.stack(segmenter.predict_masks(x[split["test"]])),
        "train_s": times["train"],
        "fit_s": times["fit"],
        "epochs": len(read_history(work / "recipe" / "history.csv")),
        "steps": "",
    }


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f}"


def summary(rows: list[dict], sides: list[str]) -> list[dict]:
    """Per side: each score's mean ± std over folds, the mean training seconds and epochs."""
    table = []
    for side in sides:
        mine = [r for r in rows if r["side"] == side]
        table.append(
            {
                "side": side,
                **{key: mean_std([r[key] for r in mine]) for key in SCORES},
                "train_s": statistics.mean(r["train_s"] for r in mine),
                "max train_s": max(r["train_s"] for r in mine),
                "epochs": statistics.mean(r["epochs"] for r in mine),
            }
        )
    return table


def verdict(rows: list[dict]) -> str:
    """The target: recipe's membrane IoU above plain's by more than the larger fold std, and under
    5 minutes of training per fold."""
    by_side = {s: [r["membrane_iou"] for r in rows if r["side"] == s] for s in ("recipe", "plain")}
    gain = statistics.mean(by_side["recipe"]) - statistics.mean(by_side["plain"])
    spread = max(statistics.pstdev(v) for v in by_side.values())
    paired = [
        a["membrane_iou"] - b["membrane_iou"]
        for a in rows
        if a["side"] == "recipe"
        for b in rows
        if b["side"] == "plain" and b["fold"] == a["fold"]
    ]
    slowest = max(r["train_s"] for r in rows if r["side"] == "recipe")
    met = gain > spread and slowest < 300
    return (
        f"membrane IoU recipe - plain: {gain:+.4f} (paired per fold {mean_std(paired)}; "
        f"larger fold std {spread:.4f}); slowest recipe training {slowest:.0f} s; "
        f"target {'met' if met else 'NOT met'}"
    )


def segment_membranes(args, params: dict, sides: list[str], work: Path) -> list[dict]:
    x, y = load_membrane(args.data)
    size = INPUTS[args.input]
    batch = params.get("batch_size", SegmenterConfig().batch_size)
    splits = fold_splits(args.seed)
    rows = []
    for k in args.folds:
        split = splits[k]
        order = sides if k % 2 == 0 else sides[::-1]  # alternate who runs first on a shared machine
        for side in order:
            out = work / f"fold_{k}" / side
            out.mkdir(parents=True)
            keras.backend.clear_session()
            if side == "plain":
                result = reference(x, y, split, size, batch, args.minutes, args.seed + k, out)
            else:
                result = recipe(x, y, split, size, params, args.minutes, args.seed + k, out)
            rows.append(
                {
                    "fold": k,
                    "side": side,
                    **scores(y[split["test"]], result.pop("masks")),
                    **result,
                    "test_slices": split["test"].tolist(),
                }
            )
            common.print_table(f"fold {k} so far", [r for r in rows if r["fold"] == k], COLUMNS)
    return rows


def segment_coco(folder: Path, params: dict, minutes: float, seed: int, work: Path) -> dict:
    """The recipe alone on coco128_seg_det: train2017 -> val2017 mIoU over the classes present."""
    from dltoolkit import ImageSegmenter  # here, so --reference-only runs without the recipe

    segmenter = ImageSegmenter(
        **{
            "train_minutes": minutes,
            "seed": seed,
            "test_split": 0.0,
            "masks": str(folder / "sem_masks" / "train2017"),
            "classes": str(folder / "sem_config.yaml"),
            **params,
        }
    )
    times = common.timed_fit(segmenter, str(folder / "images" / "train2017"), work / "coco")
    metrics = segmenter.evaluate(
        str(folder / "images" / "val2017"), masks=str(folder / "sem_masks" / "val2017")
    )
    present = {name: c for name, c in metrics["per_class"].items() if c["pixels"] > 0}
    return {
        "miou_present": statistics.mean(c["iou"] for c in present.values()),
        "classes_present": len(present),
        "recipe_mean_iou": metrics["mean_iou"],
        "train_s": times["train"],
        "fit_s": times["fit"],
        "epochs": len(read_history(work / "coco" / "history.csv")),
        "per_class": present,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("/work/shared/data/isbi_em_membrane"),
        help="the isbi_em_membrane folder (with data/membrane/train/{image,label})",
    )
    parser.add_argument(
        "--minutes", type=float, default=4.5, help="training wall time per fold and side"
    )
    parser.add_argument(
        "--input", choices=list(INPUTS), default="resize256", help="what both sides see"
    )
    parser.add_argument(
        "--folds",
        type=lambda s: [int(k) for k in s.split(",")],
        default=list(range(FOLDS)),
        help="comma-separated folds to run (default all: 0,1,2,3,4)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="folds' seed; fold k trains with seed+k"
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe parameter (repeatable)",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--reference-only", action="store_true", help="run the plain example alone")
    only.add_argument("--recipe-only", action="store_true", help="run the recipe alone")
    parser.add_argument(
        "--coco", type=Path, help="coco128_seg_det folder: also the recipe's multi-class figure"
    )
    parser.add_argument(
        "--coco-minutes", type=float, default=5.0, help="training wall time on coco128"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    if args.coco and args.reference_only:
        parser.error("--coco trains the recipe; it cannot go with --reference-only")
    if not set(args.folds) <= set(range(FOLDS)):
        parser.error(f"--folds takes fold numbers 0 to {FOLDS - 1}")
    params = {}
    for item in args.sets:
        key, _, raw = item.partition("=")
        params[key.strip()] = parse_value(raw.strip())
    sides = (
        ["plain"]
        if args.reference_only
        else ["recipe"]
        if args.recipe_only
        else ["recipe", "plain"]
    )

    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = common.load_average()
    machine = common.machine()
    header = f"{' '.join(sys.argv)}\n{started}; {machine}"
    print(header, flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench_segment_"))
    rows = segment_membranes(args, params, sides, work)
    coco = (
        segment_coco(args.coco, params, args.coco_minutes, args.seed, work) if args.coco else None
    )
    load_after = common.load_average()

    print(f"\n{header}\nbefore: {load_before}; after: {load_after}; runs in {work}")
    common.print_table(
        f"ISBI 2012 membranes, {args.input}, {args.minutes:g} min of training per fold, held-out folds "
        + ",".join(map(str, args.folds))
        + (f" (recipe: {', '.join(args.sets)})" if args.sets else ""),
        rows,
        COLUMNS,
    )
    common.print_table("Mean ± std over folds", summary(rows, sides))
    if len(sides) == 2:
        print(verdict(rows))
    if coco:
        print(
            f"\ncoco128_seg_det semantic masks, train2017 -> val2017, {args.coco_minutes:g} min: "
            f"mIoU over the {coco['classes_present']} classes present {coco['miou_present']:.4f} "
            f"(recipe's mean_iou {coco['recipe_mean_iou']:.4f}); training {coco['train_s']:.0f} s, "
            f"{coco['epochs']} epochs"
        )
        largest = sorted(coco["per_class"].items(), key=lambda kv: -kv[1]["pixels"])[:15]
        common.print_table(
            "coco128 val2017: the 15 classes with the most pixels",
            [{"class": name, **c} for name, c in largest],
            ["class", "iou", "dice", "pixels"],
        )
    if args.json:
        record = {
            "command": sys.argv,
            "date": started,
            "machine": machine,
            "load_before": load_before,
            "load_after": load_after,
            "input": args.input,
            "minutes": args.minutes,
            "params": params,
            "folds": rows,
            "summary": summary(rows, sides),
            "coco": coco,
        }
        args.json.write_text(json.dumps(record, indent=2, default=float))


if __name__ == "__main__":
    main()
