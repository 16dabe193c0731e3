"""AnomalyDetector beside PyOD's IForest and ECOD on ADBench tables (the ADBench protocol).

Per data set and seed (1, 2, 3): a stratified 70/30 split (`train_test_split(test_size=0.3,
stratify=y, random_state=seed)`); every detector fits on the training features without
labels and is scored by ROC-AUC (and average precision) on the test part. The recipe gets
the raw features (it scales them itself) and `test_split=0` (its validation part, for early
stopping and the threshold, is carved from the training rows, still without labels).

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


def run(data_dir: Path, names, seeds, params: dict) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            with np.load(data_dir / f"{name}.npz", allow_pickle=False) as npz:
                x, y = npz["X"].astype(np.float32), npz["y"].astype(int)
            for seed in seeds:
                x_train, x_test, _, y_test = train_test_split(
                    x, y, test_size=0.3, stratify=y, random_state=seed
                )
                for method, fit in detectors(seed, params, Path(tmp)).items():
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
                        }
                    )
                    print(
                        f"{name} seed {seed} {method}: ROC-AUC {rows[-1]['roc_auc']:.4f} "
                        f"({times['fit']:.1f} s)",
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
    args = parser.parse_args()
    params = cfg.apply_overrides({"task": "", "params": {}}, args.set)["params"]
    print(machine(), flush=True)
    rows = run(args.data, args.datasets.split(","), [int(s) for s in args.seeds.split(",")], params)
    methods = ["recipe", "IForest", "ECOD"]
    print_table(
        f"ROC-AUC on the test part, mean ± std over seeds {args.seeds}"
        + (f" (recipe: {', '.join(args.set)})" if args.set else ""),
        summary(rows, methods),
        ["data", *methods],
    )
    fit_seconds = [
        {
            "method": m,
            "median fit seconds": statistics.median(r["seconds"] for r in rows if r["method"] == m),
            "mean AP": statistics.mean(r["ap"] for r in rows if r["method"] == m),
        }
        for m in methods
    ]
    print_table("Fit time and average precision", fit_seconds)


if __name__ == "__main__":
    main()
