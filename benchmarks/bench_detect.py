"""Raccoon detection: ObjectDetector beside Ultralytics YOLO trained from scratch, same images and wall time.

raccoon_det's standard split (DATA/data/train_labels.csv: 160 images, 173 boxes;
DATA/data/test_labels.csv: 40 images, 44 boxes; one class). From the 160 training images a
seeded 16 (`--seed`) are carved for validation, so both sides train on the same 144 images,
choose their best weights on the same 16 and are scored on the same 40 test images. The
images are linked (not copied) into a temporary YOLO layout (images/{train,val,test},
labels/*.txt, data.yaml) that both sides read. Both get the same input size (`--image-size`,
default 320) and the same wall-time budget for training (`--minutes`).

The peer is Ultralytics YOLO (`--peer-model`, default yolo11n.yaml) built from its model yaml
with no pretrained weights (`pretrained=False`), trained with Ultralytics' defaults otherwise
(mosaic and its other augmentation, SGD/AdamW chosen by `optimizer=auto`, EMA, best weights
on the validation mAP) at batch 16, `time=` the budget in hours (it re-plans the epochs and
the learning-rate schedule after each epoch and stops mid-epoch when the time is up),
`cache="ram"`, `amp=False`, `plots=False`, on the CPU. It runs in its own process (`--peer-python`,
the benchmark environment with torch; TensorFlow and torch never share a process), offline:
YOLO_OFFLINE, YOLO_AUTOINSTALL=false, a fresh YOLO_CONFIG_DIR with sync and the logging
integrations off, a local font standing in for the Arial.ttf it would download, and an audit
hook that refuses (and counts) every internet connection. Its test predictions use the best
weights at conf 0.001, NMS IoU 0.6 and at most 100 boxes per image (the usual mAP settings),
with boxes in original image pixels. The recipe is `ObjectDetector(image_size=...,
train_minutes=..., seed=..., **--set)` fitted on the same data.yaml and predicting the test
images. One scorer for both: dltoolkit.core.coco_eval.coco_scores (pycocotools' COCO
evaluation on ground truth built in memory from test_labels.csv): mAP@[.5:.95], mAP@.5,
AR@100. Wall time is the whole training call (the peer's `model.train`, the recipe's `_learn`);
images/s = training images seen per second of it. Targets (issue 22): the recipe at or above
the peer at equal wall time, and mAP@.5 >= 0.25 within 30 minutes of training on 2 CPU cores.

`--coco DIR` also trains the recipe alone on coco128_seg_det (train2017 -> val2017, the 80
classes of det_config.yaml) and reports its mAP figures (no target, no peer).

Measured with ultralytics 8.4.190, torch 2.13.0+cpu and torchvision 0.28.0 (PyPI's wheel is
built for CUDA torch, so its C++ ops do not load beside the CPU torch: the peer process
declares torchvision's two NMS operator schemas so that `import torchvision` succeeds and
gives `torchvision.ops.nms` Ultralytics' own exact NMS, `TorchNMS.nms`). Environment:
`/work/bench-venv/bin/pip install "torch==2.13.0" torchvision==0.28.0 opencv-python polars
ultralytics-thop ultralytics-platform "pycocotools>=2.0.7,<3"` then
`/work/bench-venv/bin/pip install --no-deps ultralytics==8.4.190` (its only other requirement,
nvidia-ml-py, serves GPU selection), with dltoolkit installed editable.

    python benchmarks/bench_detect.py --data ../shared/data/raccoon_det [--minutes 15 --image-size 320 --seed 0 --side recipe|peer|both --set key=value --json out.json --coco ../shared/data/coco128_seg_det]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np

VAL_IMAGES = 16
BATCH = 16
COLUMNS = ["side", "mAP@[.5:.95]", "mAP@.5", "AR@100", "train wall s", "epochs", "images/s"]
PREDICT = {"conf": 0.001, "iou": 0.6, "max_det": 100}
PEER_PYTHON = "/work/bench-venv/bin/python"
_KEPT: list = []  # objects that must live as long as the process


# ---------------------------------------------------------------- data (both processes)


def read_labels(csv_file: Path) -> dict[str, dict]:
    """Per image of a raccoon_det CSV: float32 (n, 4) xyxy pixel boxes, class names, (h, w)."""
    images: dict[str, dict] = {}
    with open(csv_file, newline="") as fh:
        for row in csv.DictReader(fh):
            image = images.setdefault(
                row["filename"],
                {"boxes": [], "names": [], "size": (int(row["height"]), int(row["width"]))},
            )
            image["boxes"].append([float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
            image["names"].append(row["class"])
    for image in images.values():
        image["boxes"] = np.asarray(image["boxes"], np.float32).reshape(-1, 4)
    return images


def raccoon_split(root: Path, seed: int) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """Image names of train (144), val (16, seeded from the 160) and test (40), and every image's labels."""
    train = read_labels(root / "data" / "train_labels.csv")
    test = read_labels(root / "data" / "test_labels.csv")
    names = sorted(train)
    shuffled = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    split = {
        "train": sorted(shuffled[VAL_IMAGES:]),
        "val": sorted(shuffled[:VAL_IMAGES]),
        "test": sorted(test),
    }
    return split, {**train, **test}


def write_yolo_layout(
    images_dir: Path,
    split: dict[str, list[str]],
    labels: dict[str, dict],
    class_names: list[str],
    folder: Path,
) -> Path:
    """Link the images into folder/images/<part>/, write folder/labels/<part>/*.txt (class cx cy w h,
    normalised) and folder/data.yaml; return data.yaml."""
    for part, names in split.items():
        (folder / "images" / part).mkdir(parents=True)
        (folder / "labels" / part).mkdir(parents=True)
        for name in names:
            (folder / "images" / part / name).symlink_to((images_dir / name).resolve())
            image = labels[name]
            height, width = image["size"]
            x1, y1, x2, y2 = image["boxes"].T
            rows = np.stack(
                [
                    (x1 + x2) / 2 / width,
                    (y1 + y2) / 2 / height,
                    (x2 - x1) / width,
                    (y2 - y1) / height,
                ],
                axis=1,
            )
            lines = [
                f"{class_names.index(c)} " + " ".join(f"{v:.6f}" for v in row)
                for c, row in zip(image["names"], rows, strict=True)
            ]
            (folder / "labels" / part / f"{Path(name).stem}.txt").write_text(
                "\n".join(lines) + "\n"
            )
    data_yaml = folder / "data.yaml"
    data_yaml.write_text(
        json.dumps(  # JSON is YAML
            {
                "path": str(folder),
                "train": "images/train",
                "val": "images/val",
                "test": "images/test",
                "names": dict(enumerate(class_names)),
            },
            indent=2,
        )
    )
    return data_yaml


# ---------------------------------------------------------------- the peer (its own process)


def forbid_network() -> list[str]:
    """From now on this process refuses internet name lookups and connections (OSError, as when
    offline); the returned list collects what was refused."""
    import socket

    refused: list[str] = []
    local = {None, "", "localhost", "127.0.0.1", "::1"}

    def hook(event: str, args: tuple) -> None:
        if event == "socket.getaddrinfo" and args[0] not in local:
            target = str(args[0])
        elif event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
            if str(args[1][0]) in local:
                return
            target = str(args[1])
        else:
            return
        refused.append(target)
        raise OSError(f"bench_detect: network disabled ({target})")

    sys.addaudithook(hook)
    return refused


def offline_ultralytics(config_dir: Path) -> None:
    """Environment for an offline Ultralytics: no online checks, no pip installs, a private config
    directory, and a local font under the name it would otherwise download. Call before importing it."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    import matplotlib

    fonts = config_dir / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    (fonts / "Arial.ttf").symlink_to(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf")


def import_torchvision() -> bool:
    """Import torchvision; when its C++ ops cannot load (PyPI's CUDA build beside the CPU torch),
    declare the two operator schemas it registers unconditionally and give `torchvision.ops.nms`
    Ultralytics' exact NMS. Returns whether torchvision's own ops are in use."""
    import importlib.util

    import torch

    package = Path(importlib.util.find_spec("torchvision").origin).parent
    try:
        torch.ops.load_library(next(package.glob("_C*.so")))
        native = True
    except OSError:
        native = False
        schemas = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            schemas.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _KEPT.append(schemas)  # a Library unregisters its operators when it is collected
    import torchvision

    if not native:
        from ultralytics.utils.nms import TorchNMS

        torchvision.ops.nms = TorchNMS.nms
    return native


def train_peer(layout: Path, args) -> dict:
    """Train Ultralytics YOLO from its yaml on layout/data.yaml for `args.minutes`; predict the
    test images with the best weights. Runs in the benchmark environment's Python."""
    refused = forbid_network()
    offline_ultralytics(layout / "ultralytics_config")
    native_ops = import_torchvision()
    import torch
    import torchvision
    import ultralytics
    from ultralytics import YOLO, settings

    settings.update(
        sync=False,
        clearml=False,
        comet=False,
        dvc=False,
        mlflow=False,
        raytune=False,
        tensorboard=False,
        wandb=False,
        runs_dir=str(layout / "runs"),
        weights_dir=str(layout / "weights"),
        datasets_dir=str(layout),
    )
    model = YOLO(args.peer_model)
    seen = {"batches": 0, "epochs": 0}

    def count_batch(trainer) -> None:
        seen["batches"] += 1

    def count_epoch(trainer) -> None:
        seen["epochs"] += 1
        seen["threads"] = torch.get_num_threads()

    if args.peer_threads:  # Ultralytics' own choice on the CPU: one thread fewer than the cores

        def set_threads(trainer) -> None:
            torch.set_num_threads(args.peer_threads)

        model.add_callback("on_pretrain_routine_start", set_threads)
    model.add_callback("on_train_batch_end", count_batch)
    model.add_callback("on_train_epoch_end", count_epoch)
    times: dict = {}
    with common.timer(times, "train"):
        model.train(
            data=str(layout / "data.yaml"),
            epochs=1000,  # `time` overrides it
            time=args.minutes / 60,
            imgsz=args.image_size,
            batch=BATCH,
            device="cpu",
            workers=args.peer_workers,
            cache="ram",
            pretrained=False,
            amp=False,
            plots=False,
            seed=args.seed,
            project=str(layout / "runs"),
            name="peer",
            exist_ok=True,
            verbose=False,
        )
    best = YOLO(str(Path(model.trainer.save_dir) / "weights" / "best.pt"))
    test_images = sorted((layout / "images" / "test").iterdir())
    predictions = {}
    for result in best.predict(
        [str(p) for p in test_images],
        imgsz=args.image_size,
        device="cpu",
        verbose=False,
        stream=True,
        **PREDICT,
    ):
        predictions[Path(result.path).name] = {
            "boxes": result.boxes.xyxy.numpy().tolist(),
            "scores": result.boxes.conf.numpy().tolist(),
            "labels": result.boxes.cls.numpy().astype(int).tolist(),
        }
    return {
        "predictions": predictions,
        "train_s": times["train"],
        "train_cpu_s": times["train_cpu"],
        "epochs": seen["epochs"],
        "images_seen": seen["batches"] * BATCH,
        "versions": {
            "ultralytics": ultralytics.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "torchvision native ops": native_ops,
            "torch threads in training": seen["threads"],
        },
        "network_refused": refused,
    }


def run_peer(layout: Path, args) -> dict:
    """The peer in its own process (`--peer-python`); its result read back from layout/peer.json."""
    command = [
        args.peer_python,
        str(Path(__file__).resolve()),
        "--peer-worker",
        str(layout),
        "--minutes",
        str(args.minutes),
        "--image-size",
        str(args.image_size),
        "--seed",
        str(args.seed),
        "--peer-model",
        args.peer_model,
        "--peer-workers",
        str(args.peer_workers),
        "--peer-threads",
        str(args.peer_threads),
    ]
    subprocess.run(command, check=True)
    return json.loads((layout / "peer.json").read_text())


# ---------------------------------------------------------------- the recipe (this process)


def run_recipe(
    data_yaml: Path, test_images: list[Path], args, params: dict, work: Path, class_names: list[str]
) -> dict:
    """The recipe side: fit on the same data.yaml (train, val; its test part is the recipe's own
    end-of-fit evaluation) within `args.minutes` of training, then predict the test images at
    the mAP settings (boxes in original pixels)."""
    import math

    from dltoolkit import ObjectDetector
    from dltoolkit.core.callbacks import read_history
    from dltoolkit.tasks.object_detector import EPOCH_STEPS

    detector = ObjectDetector(
        **{
            "image_size": args.image_size,
            "train_minutes": args.minutes,
            "seed": args.seed,
            **params,
        }
    )
    times = common.timed_fit(detector, str(data_yaml), work / "recipe")
    epochs = len(read_history(work / "recipe" / "history.csv"))
    predicted = detector.predict(
        [str(p) for p in test_images],
        score_threshold=PREDICT["conf"],
        nms_iou=PREDICT["iou"],
        max_detections=PREDICT["max_det"],
    )
    train_images = len(read_yolo_list(data_yaml, "train"))
    batch = detector.config.batch_size
    # An epoch of the recipe passes the images often enough for EPOCH_STEPS batches.
    per_epoch = math.ceil(EPOCH_STEPS * batch / train_images) * train_images
    return {
        "predictions": by_file(test_images, predicted, class_names),
        "train_s": times["train"],
        "train_cpu_s": times["train_cpu"],
        "epochs": epochs,
        "images_seen": epochs * per_epoch,  # the last epoch in full even if the budget cut it
    }


def by_file(paths: list[Path], predicted: list[dict], class_names: list[str]) -> dict[str, dict]:
    """The recipe's predictions keyed by file name, with class indices as labels."""
    return {
        path.name: {**found, "labels": [class_names.index(n) for n in found["labels"]]}
        for path, found in zip(paths, predicted, strict=True)
    }


def read_yolo_list(data_yaml: Path, part: str) -> list[Path]:
    """The images of one part of a data.yaml written by write_yolo_layout."""
    record = json.loads(data_yaml.read_text())
    return sorted((Path(record["path"]) / record[part]).iterdir())


# ---------------------------------------------------------------- scoring


def score(predictions: dict[str, dict], truth: dict[str, dict], class_names: list[str]) -> dict:
    """coco_scores on the images of `truth` (in its order); an image without predictions has none."""
    from dltoolkit.core.coco_eval import coco_scores

    names = list(truth)
    empty = {"boxes": [], "scores": [], "labels": []}
    found = [predictions.get(name, empty) for name in names]
    return coco_scores(
        [
            {
                "boxes": truth[n]["boxes"],
                "labels": np.asarray([class_names.index(c) for c in truth[n]["names"]], np.int64),
                "size": truth[n]["size"],
            }
            for n in names
        ],
        [
            {
                "boxes": np.asarray(f["boxes"], np.float32).reshape(-1, 4),
                "scores": np.asarray(f["scores"], np.float32),
                "labels": np.asarray(f["labels"], np.int64),
            }
            for f in found
        ],
        class_names,
    )


def whole_image_boxes(truth: dict[str, dict]) -> dict[str, dict]:
    """The floor: one box covering each whole image, score 1, class 0 (raccoons are large)."""
    return {
        name: {"boxes": [[0, 0, width, height]], "scores": [1.0], "labels": [0]}
        for name, image in truth.items()
        for height, width in [image["size"]]
    }


def table_row(side: str, scores: dict, result: dict | None = None) -> dict:
    row = {
        "side": side,
        "mAP@[.5:.95]": scores["map"],
        "mAP@.5": scores["map50"],
        "AR@100": scores["ar100"],
    }
    if result:
        row["train wall s"] = result["train_s"]
        row["epochs"] = result["epochs"]
        row["images/s"] = result["images_seen"] / result["train_s"]
    return row


def verdict(rows: list[dict], floor: dict, minutes: float) -> str:
    """Issue 22's targets: the recipe at or above the peer (mAP@[.5:.95]), mAP@.5 >= 0.25, within
    30 minutes; beside the whole-image floor, which alone exceeds 0.25 on raccoon_det."""
    by_side = {r["side"]: r for r in rows}
    recipe, peer = by_side["recipe"], by_side["peer"]
    met = (
        recipe["mAP@[.5:.95]"] >= peer["mAP@[.5:.95]"]
        and recipe["mAP@.5"] >= 0.25
        and minutes <= 30
    )
    return (
        f"recipe - peer: mAP@[.5:.95] {recipe['mAP@[.5:.95]'] - peer['mAP@[.5:.95]']:+.4f}, "
        f"mAP@.5 {recipe['mAP@.5'] - peer['mAP@.5']:+.4f}; recipe mAP@.5 {recipe['mAP@.5']:.4f} "
        f"(target >= 0.25; the whole-image floor {floor['mAP@.5']:.4f}); "
        f"target {'met' if met else 'NOT met'}"
    )


# ---------------------------------------------------------------- coco128


def detect_coco(folder: Path, params: dict, args, work: Path) -> dict:
    """The recipe alone on coco128_seg_det: fitted on train2017 (its validation images carved
    from them) with det_config.yaml's 80 classes, scored once on val2017 by `evaluate`
    (the same coco_scores)."""
    import yaml

    from dltoolkit import ObjectDetector
    from dltoolkit.core.callbacks import read_history

    folder = folder.resolve()  # the data YAMLs are written elsewhere
    config = yaml.safe_load((folder / "det_config.yaml").read_text())
    # The box loader finds det_labels/ beside images/ for a YAML whose name starts with "det".
    parts = {}
    for part, images in (("train", "train2017"), ("test", "val2017")):
        parts[part] = work / f"det_{part}.yaml"
        parts[part].write_text(
            json.dumps({"path": str(folder), "train": f"images/{images}", "names": config["names"]})
        )
    detector = ObjectDetector(
        **{
            "image_size": args.image_size,
            "train_minutes": args.coco_minutes,
            "seed": args.seed,
            "test_split": 0.0,
            **params,
        }
    )
    times = common.timed_fit(detector, str(parts["train"]), work / "coco")
    scores = detector.evaluate(str(parts["test"]))
    return {
        "map": scores["map"],
        "map50": scores["map50"],
        "map75": scores["map75"],
        "ar100": scores["ar100"],
        "baseline_map50": scores["baseline_map50"],
        "train_s": times["train"],
        "epochs": len(read_history(work / "coco" / "history.csv")),
        "per_class": scores["per_class"],
    }


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("/work/shared/data/raccoon_det"),
        help="the raccoon_det folder (images/, data/train_labels.csv, data/test_labels.csv)",
    )
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall time per side")
    parser.add_argument("--image-size", type=int, default=320, help="input size of both sides")
    parser.add_argument(
        "--seed", type=int, default=0, help="validation carve-out and training seed"
    )
    parser.add_argument(
        "--side",
        choices=["recipe", "peer", "both", "none"],
        default="both",
        help="raccoon sides to run (none: only the --coco figure)",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe parameter (repeatable)",
    )
    parser.add_argument(
        "--peer-model", default="yolo11n.yaml", help="Ultralytics model yaml (from scratch)"
    )
    parser.add_argument(
        "--peer-workers", type=int, default=2, help="the peer's data-loading worker processes"
    )
    parser.add_argument(
        "--peer-threads",
        type=int,
        default=0,
        help="the peer's torch threads (0: Ultralytics' choice, one fewer than the cores)",
    )
    parser.add_argument(
        "--peer-python",
        default=PEER_PYTHON,
        help="Python of the environment with ultralytics and torch (runs the peer)",
    )
    parser.add_argument(
        "--coco", type=Path, help="coco128_seg_det folder: also the recipe's 80-class figure"
    )
    parser.add_argument(
        "--coco-minutes", type=float, default=15.0, help="training wall time on coco128"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--peer-worker", type=Path, help=argparse.SUPPRESS)  # the peer's process
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.peer_worker:
        result = train_peer(args.peer_worker, args)
        (args.peer_worker / "peer.json").write_text(json.dumps(result))
        return
    from dltoolkit.core.config import parse_value

    params = {}
    for item in args.sets:
        key, _, raw = item.partition("=")
        params[key.strip()] = parse_value(raw.strip())
    sides = {"both": ["recipe", "peer"], "none": []}.get(args.side, [args.side])

    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = common.load_average()
    machine = common.machine()
    header = f"{' '.join(sys.argv)}\n{started}; {machine}"
    print(header, flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench_detect_"))
    split, labels = raccoon_split(args.data, args.seed)
    class_names = sorted({c for image in labels.values() for c in image["names"]})
    data_yaml = write_yolo_layout(args.data / "images", split, labels, class_names, work / "yolo")
    test_images = read_yolo_list(data_yaml, "test")
    truth = {name: labels[name] for name in split["test"]}

    rows, results = [], {}
    for side in sides:
        began = time.perf_counter()
        results[side] = (
            run_peer(work / "yolo", args)
            if side == "peer"
            else run_recipe(data_yaml, test_images, args, params, work, class_names)
        )
        results[side]["process_s"] = time.perf_counter() - began
        results[side]["scores"] = score(results[side]["predictions"], truth, class_names)
        rows.append(table_row(side, results[side]["scores"], results[side]))
        common.print_table(f"{side} done", rows[-1:], COLUMNS)
    floor = table_row("whole-image box", score(whole_image_boxes(truth), truth, class_names))
    coco = detect_coco(args.coco, params, args, work) if args.coco else None
    load_after = common.load_average()

    print(f"\n{header}\nbefore: {load_before}; after: {load_after}; runs in {work}")
    if "peer" in results:
        peer = results["peer"]
        print(
            f"peer: {args.peer_model}, {peer['versions']}; whole process {peer['process_s']:.0f} s; "
            f"network connections refused: {len(peer['network_refused'])}"
        )
    common.print_table(
        f"raccoon_det, 144 train / 16 val / 40 test images, {args.image_size} px, "
        f"{args.minutes:g} min of training per side"
        + (f" (recipe: {', '.join(args.sets)})" if args.sets else ""),
        [*rows, floor],
        COLUMNS,
    )
    if len(sides) == 2:
        print(verdict(rows, floor, args.minutes))
    if coco:
        print(
            f"\ncoco128_seg_det, train2017 -> val2017, 80 classes, {args.coco_minutes:g} min: "
            f"mAP@[.5:.95] {coco['map']:.4f}, mAP@.5 {coco['map50']:.4f}, mAP@.75 "
            f"{coco['map75']:.4f}, AR@100 {coco['ar100']:.4f} (prior-box baseline mAP@.5 "
            f"{coco['baseline_map50']:.4f}); training {coco['train_s']:.0f} s, "
            f"{coco['epochs']} epochs"
        )
    if args.json:
        for result in results.values():
            result.pop("predictions")
        record = {
            "command": sys.argv,
            "date": started,
            "machine": machine,
            "load_before": load_before,
            "load_after": load_after,
            "minutes": args.minutes,
            "image_size": args.image_size,
            "seed": args.seed,
            "split": split,
            "params": params,
            "peer_model": args.peer_model,
            "rows": [*rows, floor],
            "sides": results,
            "coco": coco,
        }
        args.json.write_text(json.dumps(record, indent=2, default=float))


if __name__ == "__main__":
    main()
