"""AnomalyDetector beside PyOD's IForest and ECOD on ADBench tables (the ADBench protocol).

Per data set and seed (1, 2, 3): a stratified 70/30 split (`train_test_split(test_size=0.3,
stratify=y, random_state=seed)`); every detector fits on the training features without
labels and is scored by ROC-AUC (and average precision) on the test part. The recipe gets
the raw features (it scales them itself) and `test_split=0` (its validation part, for early
stopping and the threshold, is carved from the training rows, still without labels).
Fit times are wall and CPU seconds (CPU time is less disturbed by other jobs on the machine).

`--validation` leaves the test part alone, for choosing settings: every detector fits on a
stratified 75% of the training part and is scored on the other 25% (labels used only there).

Needs pyod beside dltoolkit in one environment (see benchmarks/README.md):
`python benchmarks/bench_anomaly.py --data /work/shared/data/ADBench_Classical`
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import common  # noqa: F401  (sets up the environment and sys.path before TensorFlow)
import numpy as np
from common import machine, print_table, timer
from pyod.models.ecod import ECOD
from pyod.models.iforest import IForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from dltoolkit import AnomalyDetector
from dltoolkit.core import config as cfg

DATASETS = (
    "6_cardio",
    "38_thyroid",
    "28_pendigits",
    "30_satellite",
    "23_mammography",
    "32_shuttle",
)


def detectors(seed: int, params: dict, workdir: Path) -> dict:
    """name -> fit(X_train) returning score(X_test)."""

    def recipe(x):
        out = workdir / f"recipe-{seed}"
        model = AnomalyDetector(**{"test_split": 0, "seed": seed, **params})
        model.fit((x, None), out=out, overwrite=True, progress=False)
        return lambda test: model.score((test, None))["score"]

    def pyod(make):
        def fit(x):
            model = make().fit(x)
            return model.decision_function

        return fit

    return {
        "recipe": recipe,
        "IForest": pyod(lambda: IForest(random_state=seed)),
        "ECOD": pyod(ECOD),
    }


def split(x, y, seed: int, validation: bool):
    """The ADBench split's (training features, scored features, their labels); with
    `validation`, the training part's 75% and 25% instead."""
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=seed
    )
    if not validation:
        return x_train, x_test, y_test
    x_fit, x_val, _, y_val = train_test_split(
        x_train, y_train, test_size=0.25, stratify=y_train, random_state=seed
    )
    return x_fit, x_val, y_val


def run(data_dir: Path, names, seeds, params: dict, methods, validation=False) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            with np.load(data_dir / f"{name}.npz", allow_pickle=False) as npz:
                x, y = npz["X"].astype(np.float32), npz["y"].astype(int)
            for seed in seeds:
                x_train, x_test, y_test = split(x, y, seed, validation)
                for method, fit in detectors(seed, params, Path(tmp)).items():
                    if method not in methods:
                        continue
                    times: dict = {}
                    with timer(times, "fit"):
                        score = fit(x_train)
                    scores = score(x_test)
                    rows.append(
                        {
                            "data": name,
                            "seed": seed,
                            "method": method,
                            "roc_auc": roc_auc_score(y_test, scores),
                            "ap": average_precision_score(y_test, scores),
                            "seconds": times["fit"],
                            "cpu_seconds": times["fit_cpu"],
                        }
                    )
                    print(
                        f"{name} seed {seed} {method}: ROC-AUC {rows[-1]['roc_auc']:.4f} "
                        f"({times['fit']:.1f} s, CPU {times['fit_cpu']:.1f} s)",
                        flush=True,
                    )
    return rows


def summary(rows: list[dict], methods: list[str]) -> list[dict]:
    """Mean ± std over seeds per data set and method, and the mean over data sets."""
    table = []
    for name in dict.fromkeys(r["data"] for r in rows):
        row = {"data": name}
        for method in methods:
            aucs = [r["roc_auc"] for r in rows if r["data"] == name and r["method"] == method]
            row[method] = f"{statistics.mean(aucs):.4f} ± {statistics.pstdev(aucs):.4f}"
            row[f"_{method}"] = statistics.mean(aucs)
        table.append(row)
    mean = {"data": "**mean**"}
    for method in methods:
        mean[method] = f"**{statistics.mean(r[f'_{method}'] for r in table):.4f}**"
    return [*table, mean]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("/work/shared/data/ADBench_Classical"),
        help="folder with the ADBench Classical .npz files",
    )
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--set", action="append", default=[], help="recipe parameter key=value")
    parser.add_argument("--methods", default="recipe,IForest,ECOD")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="fit on 75%% of the training part, score the other 25%% (the test part unused)",
    )
    args = parser.parse_args()
    params = cfg.apply_overrides({"task": "", "params": {}}, args.set)["params"]
    print(machine(), flush=True)
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = run(args.data, args.datasets.split(","), seeds, params, methods, args.validation)
    print_table(
        f"ROC-AUC on the {'validation' if args.validation else 'test'} part, "
        f"mean ± std over seeds {args.seeds}"
        + (f" (recipe: {', '.join(args.set)})" if args.set else ""),
        summary(rows, methods),
        ["data", *methods],
    )
    fit_seconds = [
        {
            "method": m,
            "median fit seconds": statistics.median(r["seconds"] for r in rows if r["method"] == m),
            "median fit CPU seconds": statistics.median(
                r["cpu_seconds"] for r in rows if r["method"] == m
            ),
            "mean AP": statistics.mean(r["ap"] for r in rows if r["method"] == m),
        }
        for m in methods
    ]
    print_table("Fit time and average precision", fit_seconds)


if __name__ == "__main__":
    main()
