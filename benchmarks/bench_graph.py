"""Cora (Planetoid public split): the classify-nodes recipe's GCN and GAT beside PyTorch Geometric's.

Both sides train on the same arrays (our Planetoid loader's features, edges, labels and
masks) with the same hyperparameters: the papers' (GCN: 16 hidden, dropout 0.5, lr 0.01;
GAT: 8 heads x 8 hidden, dropout and attention dropout 0.6, lr 0.005; both Adam with
weight decay 5e-4, row-normalised features, early stopping on validation loss with patience
100, at most 200 epochs for GCN (Kipf & Welling) and 1000 for GAT (Veličković et al. train
until the patience runs out), best-on-validation weights for the test). An epoch is one training
step plus the validation loss, timed on each side. Needs torch (CPU) and torch_geometric,
installed only in the benchmark's own environment (see benchmarks/README.md).

    python benchmarks/bench_graph.py --planetoid /work/shared/data/planetoid [--seeds 10]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from dltoolkit import NodeClassifier  # noqa: E402
from dltoolkit.core.callbacks import read_history  # noqa: E402
from dltoolkit.data.graphs import load_planetoid  # noqa: E402

SETTINGS = {
    "gcn": {
        "hidden": 16,
        "dropout": 0.5,
        "attention_dropout": 0.0,
        "learning_rate": 0.01,
        "epochs": 200,
    },
    "gat": {
        "hidden": 8,
        "heads": 8,
        "dropout": 0.6,
        "attention_dropout": 0.6,
        "learning_rate": 0.005,
        "epochs": 1000,
    },
}
COMMON = {"early_stopping_patience": 100, "weight_decay": 5e-4}
REFERENCE = {"gcn": "81.5 (Kipf & Welling 2017)", "gat": "83.0 ± 0.7 (Veličković et al. 2018)"}


def run_ours(kind: str, seed: int, data: str) -> dict:
    params = {**COMMON, **SETTINGS[kind], "model": kind, "seed": seed, "feature_norm": "row"}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        clf = NodeClassifier(**params).fit(data, out=Path(tmp) / "run", progress=False)
        seconds = time.perf_counter() - start
        history = read_history(Path(tmp) / "run" / "history.csv")
    return {
        "accuracy": clf.metrics_["accuracy"],
        "ms_per_epoch": 1000 * statistics.median(r["seconds"] for r in history[1:]),
        "epochs": len(history),
        "fit_seconds": seconds,
    }


def run_pyg(kind: str, seed: int, graph) -> dict:
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn import GATConv, GCNConv

    torch.manual_seed(seed)
    s = SETTINGS[kind]
    x = torch.tensor(graph.features)
    x = x / x.sum(1, keepdim=True).clamp(min=1)  # NormalizeFeatures
    edge_index = torch.tensor(graph.edges.T, dtype=torch.long)
    y = torch.tensor(np.maximum(graph.labels, 0), dtype=torch.long)
    masks = {k: torch.tensor(v) for k, v in graph.masks.items()}
    classes = len(graph.class_names)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            if kind == "gcn":
                self.conv1 = GCNConv(x.shape[1], s["hidden"])
                self.conv2 = GCNConv(s["hidden"], classes)
            else:
                self.conv1 = GATConv(
                    x.shape[1], s["hidden"], heads=s["heads"], dropout=s["attention_dropout"]
                )
                self.conv2 = GATConv(
                    s["hidden"] * s["heads"],
                    classes,
                    heads=1,
                    concat=False,
                    dropout=s["attention_dropout"],
                )

        def forward(self, x, edge_index):
            x = F.dropout(x, p=s["dropout"], training=self.training)
            x = self.conv1(x, edge_index)
            x = F.elu(x) if kind == "gat" else F.relu(x)
            x = F.dropout(x, p=s["dropout"], training=self.training)
            return self.conv2(x, edge_index)

    model = Net()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=s["learning_rate"], weight_decay=COMMON["weight_decay"]
    )
    best, best_state, waited, times = float("inf"), None, 0, []
    for _ in range(s["epochs"]):
        start = time.perf_counter()
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x, edge_index)[masks["train"]], y[masks["train"]])
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = F.cross_entropy(model(x, edge_index)[masks["val"]], y[masks["val"]]).item()
        times.append(time.perf_counter() - start)
        if val_loss < best:
            best, best_state, waited = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= COMMON["early_stopping_patience"]:
                break
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        predicted = model(x, edge_index).argmax(1)
    accuracy = (predicted[masks["test"]] == y[masks["test"]]).float().mean().item()
    return {
        "accuracy": accuracy,
        "ms_per_epoch": 1000 * statistics.median(times[1:]),
        "epochs": len(times),
    }


def summarise(runs: list[dict]) -> dict:
    acc = [100 * r["accuracy"] for r in runs]
    return {
        "acc": f"{statistics.mean(acc):.1f} ± {statistics.pstdev(acc):.1f}",
        "ms": statistics.median(r["ms_per_epoch"] for r in runs),
        "epochs": statistics.mean(r["epochs"] for r in runs),
        "fit": statistics.mean(r["fit_seconds"] for r in runs)
        if "fit_seconds" in runs[0]
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planetoid", default="/work/shared/data/planetoid")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds run from here (to split a run)"
    )
    parser.add_argument("--models", default="gcn,gat")
    parser.add_argument("--no-pyg", action="store_true", help="skip the PyTorch Geometric side")
    args = parser.parse_args()
    data = f"planetoid:{args.planetoid}"
    graph = load_planetoid(args.planetoid)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load average at start {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = []
    for kind in args.models.split(","):
        ours, pyg = [], []
        for seed in range(
            args.first_seed, args.first_seed + args.seeds
        ):  # alternate sides so machine load hits both alike
            ours.append(run_ours(kind, seed, data))
            if not args.no_pyg:
                pyg.append(run_pyg(kind, seed, graph))
            print(
                f"{kind} seed {seed}: ours {ours[-1]['accuracy']:.3f} "
                f"{ours[-1]['ms_per_epoch']:.1f} ms/epoch"
                + (
                    f"; PyG {pyg[-1]['accuracy']:.3f} {pyg[-1]['ms_per_epoch']:.1f} ms/epoch"
                    if pyg
                    else ""
                ),
                flush=True,
            )
        a = summarise(ours)
        row = {
            "model": kind,
            "ours_acc": a["acc"],
            "ours_ms": a["ms"],
            "ours_epochs": a["epochs"],
            "ours_fit": a["fit"],
        }
        if pyg:
            b = summarise(pyg)
            row.update(pyg_acc=b["acc"], pyg_ms=b["ms"], pyg_epochs=b["epochs"])
        rows.append(row)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}\n")
    print(
        "| model | dltoolkit test acc % | PyG test acc % | published | dltoolkit ms/epoch | PyG ms/epoch "
        "| ratio | dltoolkit epochs run | PyG epochs run | dltoolkit fit s (whole run) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ours_ms'] / r['pyg_ms']:.2f}" if "pyg_ms" in r else "-"
        print(
            f"| {r['model'].upper()} | {r['ours_acc']} | {r.get('pyg_acc', '-')} | {REFERENCE[r['model']]} "
            f"| {r['ours_ms']:.1f} | {r.get('pyg_ms', float('nan')):.1f} | {ratio} | {r['ours_epochs']:.0f} "
            f"| {r.get('pyg_epochs', float('nan')):.0f} | {r['ours_fit']:.1f} |"
        )


if __name__ == "__main__":
    main()
