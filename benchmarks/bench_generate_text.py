"""Tiny Shakespeare, character level: the generate-text recipe beside nanoGPT (issue 25, part 1).

Protocol (../shared/data/tinyshakespeare/README.md, nanoGPT's shakespeare_char prepare.py):
the vocabulary is the sorted characters of the whole file (65), the first 90 % of the
characters train and the last 10 % validate. Every side is scored by the one evaluator,
`lm_eval.validation_loss`: mean cross-entropy (nats per character) over the whole
validation split in non-overlapping windows of 64 characters, and bits per character.
Train seconds are the wall time of training only (model construction and the optimisation
loop; no evaluation, saving or reports).

Peer side "nanogpt": `nanogpt_reference.py`, nanoGPT reimplemented in PyTorch at its CPU
configuration (4 layers, 4 heads, 128 wide, block 64, batch 12, 2,000 iterations, dropout 0),
with torch threads = min(2, the cores this process may use). Recipe side "recipe":
`dltoolkit.TextGenerator`, trained for the same wall time as nanoGPT's run of the same
seed (or `--recipe-minutes`). Target: the recipe's validation loss at or below nanoGPT's.
Needs the benchmark environment (torch==2.13.0 beside dltoolkit), e.g. /work/bench-venv.

`python benchmarks/bench_generate_text.py --data ../shared/data/tinyshakespeare
[--seeds 1337 --sides nanogpt,recipe --json out.json]`
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import common  # noqa: I001  (sets the TensorFlow log level and sys.path first)
import lm_eval
import numpy as np

SCORE_BLOCK = 64
COLUMNS = [
    "side",
    "seed",
    "val loss",
    "bits/char",
    "train s",
    "iterations",
    "s/iter",
    "train loss (last 100)",
    "train loss (last epoch)",
]


def read_corpus(data: Path) -> str:
    """The Tiny Shakespeare text: `data` is input.txt or the folder holding it."""
    path = data / "input.txt" if data.is_dir() else data
    return path.read_text(encoding="utf-8")


def nanogpt_side(train_text, val_text, vocabulary, seed, args) -> dict:
    """nanoGPT trained on the training characters; see nanogpt_reference.py."""
    import nanogpt_reference  # torch only for this side

    model, seconds, losses = nanogpt_reference.train_nanogpt(
        lm_eval.encode(train_text, vocabulary),
        len(vocabulary),
        seed=seed,
        max_iters=args.iters,
        threads=args.threads,
    )
    return {
        "logits_fn": nanogpt_reference.logits_fn(model),
        "val_ids": lm_eval.encode(val_text, vocabulary),
        "seconds": seconds,
        "iterations": len(losses),
        "train loss (last 100)": float(np.mean(losses[-100:])),
    }


# ---------------------------------------------------------------------------------------
# The recipe side (filled in by the recipe's author).


def recipe_side(
    train_text: str, val_text: str, minutes: float, work_dir: Path, seed: int = 0, params=None
):
    """`dltoolkit.TextGenerator` trained on `train_text` for `minutes` of wall time (its
    `train_minutes`; the cosine decay is timed to end then). It holds out the last 2 % of
    the training text as its own validation split (best weights, early stopping), never the
    benchmark's validation text. "seconds" is the whole fit's wall time: vocabulary, training
    with the recipe's per-epoch validation, final evaluation, saving and report."""
    import tensorflow as tf

    from dltoolkit import TextGenerator
    from dltoolkit.core.callbacks import read_history
    from dltoolkit.core.config import apply_overrides

    work_dir.mkdir(parents=True, exist_ok=True)
    data = work_dir / "train.txt"
    data.write_text(train_text, encoding="utf-8")
    chosen = apply_overrides({"params": {}}, list(params or []))["params"]
    recipe = TextGenerator(**{"val_split": 0.02, "seed": seed, "train_minutes": minutes, **chosen})
    started = time.perf_counter()
    recipe.fit(str(data), out=work_dir / "run", overwrite=True, progress=False)
    seconds = time.perf_counter() - started
    model = recipe.model_
    ids = model.tokenizer(tf.constant([val_text])).flat_values.numpy().astype(np.int64)

    def logits_fn(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model(tf.constant(batch, tf.int32), training=False))

    history = read_history(work_dir / "run" / "history.csv")
    return {
        "logits_fn": logits_fn,
        "val_ids": ids,
        "seconds": seconds,
        "iterations": int(model.optimizer.iterations.numpy()),
        "train loss (last epoch)": history[-1]["loss"],
    }


# ---------------------------------------------------------------------------------------


def score(side: str, seed: int, result: dict) -> dict:
    """A table row: `result` scored by the shared evaluator."""
    loss = lm_eval.validation_loss(result["logits_fn"], result["val_ids"], SCORE_BLOCK)
    return {
        "side": side,
        "seed": seed,
        "val loss": loss,
        "bits/char": lm_eval.bits_per_character(loss),
        "train s": result["seconds"],
        "iterations": result["iterations"],
        "s/iter": result["seconds"] / max(result["iterations"], 1),
        "train loss (last 100)": result.get("train loss (last 100)", ""),
        "train loss (last epoch)": result.get("train loss (last epoch)", ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="the tinyshakespeare folder (or its input.txt)"
    )
    parser.add_argument("--seeds", default="1337", help="comma-separated seeds, one run each")
    parser.add_argument(
        "--sides", default="nanogpt,recipe", help="comma-separated: nanogpt, recipe"
    )
    parser.add_argument("--iters", type=int, default=2000, help="nanoGPT iterations")
    parser.add_argument(
        "--threads",
        type=int,
        default=min(2, len(os.sched_getaffinity(0))),
        help="torch threads of the nanoGPT side (default: up to 2, the cores allowed)",
    )
    parser.add_argument(
        "--recipe-minutes",
        type=float,
        help="recipe training wall time (default: nanoGPT's train time for the same seed)",
    )
    parser.add_argument("--work", type=Path, default=Path("bench_runs/generate_text"))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="a recipe parameter as key=value, as the CLI's --set (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    sides = args.sides.split(",")
    if set(sides) - {"nanogpt", "recipe"}:
        raise SystemExit(f"unknown sides {sorted(set(sides) - {'nanogpt', 'recipe'})}")
    if "recipe" in sides and "nanogpt" not in sides and args.recipe_minutes is None:
        raise SystemExit("--recipe-minutes is needed when the nanogpt side does not run")
    header = f"{' '.join(sys.argv)}\n{common.machine()}; nanoGPT torch threads {args.threads}"
    print(header, flush=True)
    started = time.perf_counter()
    text = read_corpus(args.data)
    vocabulary = lm_eval.char_vocabulary(text)
    train_text, val_text = lm_eval.split_text(text, 0.9)
    print(
        f"{len(text):,} characters, vocabulary {len(vocabulary)}: "
        f"train {len(train_text):,}, validation {len(val_text):,}",
        flush=True,
    )
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        if "nanogpt" in sides:
            result = nanogpt_side(train_text, val_text, vocabulary, seed, args)
            rows.append(score("nanoGPT (PyTorch reimplementation)", seed, result))
            common.print_table("nanoGPT done", rows[-1:], COLUMNS)
        if "recipe" in sides:
            minutes = args.recipe_minutes or result["seconds"] / 60
            work_dir = args.work / f"seed{seed}"
            result = recipe_side(
                train_text, val_text, minutes, work_dir, seed=seed, params=args.set
            )
            rows.append(score("TextGenerator (recipe)", seed, result))
            common.print_table("recipe done", rows[-1:], COLUMNS)
    print(f"\n{header}\nload after: {common.load_average()}")
    common.print_table(
        f"Tiny Shakespeare, characters: validation loss over the whole last 10 %, windows of "
        f"{SCORE_BLOCK} ({time.perf_counter() - started:.0f} s in all)",
        rows,
        COLUMNS,
    )
    if args.json:
        args.json.write_text(
            json.dumps({"command": sys.argv, "machine": header, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
