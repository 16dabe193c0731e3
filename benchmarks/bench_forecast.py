"""ETTh1, the standard long-horizon protocol: last-value repeat, the linear baseline and the
patch Transformer side by side, several seeds, wall time each.

Protocol (Informer/DLinear/PatchTST loaders): the 7 variables in and out (setting M),
train/val/test rows [0, 8640) / [8640, 11520) / [11520, 14400) (12/4/4 months), validation
and test windows starting `lookback` rows before their border, z-scored with training
statistics, MSE and MAE on that scale over every test window. The published PatchTST figures
come from a test loader that dropped the last incomplete batch of 128 windows
(yuqinie98/PatchTST issue #7), so the table also gives the MSE over those first windows
("MSE, PatchTST windows") for a like-for-like reference.

    python benchmarks/bench_forecast.py --data ../shared/data/ETT-small/ETTh1.csv
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dltoolkit import Forecaster  # noqa: E402
from dltoolkit.core.callbacks import read_history  # noqa: E402
from dltoolkit.core.config import parse_value  # noqa: E402

PROTOCOL = {
    "all_columns": True,
    "time_col": "date",
    "lookback": 336,
    "split_rows": "8640,2880,2880",
    "batch_size": 128,
}
MODELS = {
    "linear": {"model": "linear", "epochs": 10, "learning_rate": 0.005},
    "dlinear": {"model": "dlinear", "epochs": 10, "learning_rate": 0.005},
    "patch-transformer": {
        "model": "patch-transformer",
        "epochs": 12,
        "learning_rate": 0.002,
        "dropout": 0.2,
        "loss": "mae",
        "weight_decay": 0.5,
    },
}
# model auto with the patch Transformer's settings: all three candidates trained, kept on
# validation loss (the choice is printed per seed)
MODELS["auto"] = {**MODELS["patch-transformer"], "model": "auto"}
# Published MSE at horizon 96 / 192 (Zeng et al. 2023, Table 2; Nie et al. 2023, Table 3).
REFERENCES = {
    "repeat": {96: 1.295, 192: 1.325},
    "linear": {96: 0.374, 192: 0.408},
    "dlinear": {96: 0.375, 192: 0.405},
    "patch-transformer": {96: 0.370, 192: 0.413},
}
REFERENCE_NAMES = {
    "repeat": "Repeat",
    "linear": "NLinear",
    "dlinear": "DLinear",
    "patch-transformer": "PatchTST/64",
}
PATCHTST_TEST_BATCH = 128  # the published PatchTST test loader's batch, last one dropped


def first_windows_mse(model: Forecaster, frame: pd.DataFrame) -> tuple[float, float, int]:
    """MSE of the model and of the last-value repeat over the test windows that PatchTST's
    drop-last test loader kept (normalised scale), and how many those are."""
    c = model.config
    train_rows, val_rows, _ = (int(rows) for rows in c.split_rows.split(","))
    test_start = train_rows + val_rows - c.lookback
    windows = model.metrics_["windows"]
    kept = windows - windows % PATCHTST_TEST_BATCH
    first = model.evaluate(frame.iloc[test_start : test_start + c.lookback + c.horizon + kept - 1])
    return first["mse"], first["naive_mse"], kept


def run(frame: pd.DataFrame, horizon: int, name: str, seed: int, overrides: dict) -> dict:
    params = {**PROTOCOL, **MODELS[name], "horizon": horizon, "seed": seed, **overrides}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = Forecaster(**params).fit(frame, out=Path(tmp) / "run", progress=False)
        seconds = time.perf_counter() - start
        val = min(row["val_loss"] for row in read_history(Path(tmp) / "run" / "history.csv"))
    m = model.metrics_
    first_mse, first_repeat, kept = first_windows_mse(model, frame)
    print(
        f"  h{horizon} {name} seed {seed}: val loss {val:.4f}, test mse {m['mse']:.4f} "
        f"mae {m['mae']:.4f}, first {kept} windows mse {first_mse:.4f} ({seconds:.0f}s)"
        + (f", kept {m['model_choice']['model']}" if "model_choice" in m else ""),
        flush=True,
    )
    return {
        "mse": m["mse"],
        "mae": m["mae"],
        "loss": model.config.loss,
        "val_loss": val,
        "seconds": seconds,
        "repeat_mse": m["naive_mse"],
        "repeat_mae": m["naive_mae"],
        "windows": m["windows"],
        "first_mse": first_mse,
        "first_repeat_mse": first_repeat,
        "first_windows": kept,
    }


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def reference(name: str, horizon: int) -> str:
    """The published MSE for a row, with the paper's model name."""
    if name not in REFERENCES:
        return "–"
    mse = REFERENCES[name].get(horizon)
    return f"{'–' if mse is None else f'{mse:.3f}'} ({REFERENCE_NAMES[name]})"


def table(horizon: int, results: dict[str, list[dict]]) -> str:
    first = results[next(iter(results))][0]
    lines = [
        f"horizon {horizon}, {first['windows']} test windows (PatchTST windows: the first "
        f"{first['first_windows']})",
        "",
        "| forecast | loss | val loss | MSE | MAE | MSE, PatchTST windows | fit wall s (each seed) | reference MSE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines.append(
        f"| repeat (last value) | – | – | {first['repeat_mse']:.3f} | {first['repeat_mae']:.3f} "
        f"| {first['first_repeat_mse']:.3f} | – | {reference('repeat', horizon)} |"
    )
    for name, runs in results.items():
        seconds = ", ".join(f"{r['seconds']:.0f}" for r in runs)
        lines.append(
            f"| {name} | {runs[0]['loss']} | {spread([r['val_loss'] for r in runs])} | {spread([r['mse'] for r in runs])} | {spread([r['mae'] for r in runs])}"
            f" | {spread([r['first_mse'] for r in runs])} | {seconds} | {reference(name, horizon)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/ETT-small/ETTh1.csv"),
    )
    parser.add_argument("--horizons", default="96,192")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default="linear,dlinear,patch-transformer")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a parameter of every model run (e.g. ema_momentum=0.99).",
    )
    args = parser.parse_args()
    overrides = {k: parse_value(v) for k, _, v in (s.partition("=") for s in args.set)}
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}; python {platform.python_version()}",
        flush=True,
    )
    frame = pd.read_csv(args.data)
    tables = []
    for horizon in (int(h) for h in args.horizons.split(",")):
        results = {
            name: [run(frame, horizon, name, seed, overrides) for seed in seeds]
            for name in args.models.split(",")
        }
        tables.append(table(horizon, results))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
