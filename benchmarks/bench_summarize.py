"""DialogSum: the from-scratch Transformer under a wall-time budget beside the Lead baseline,
and the fine-tuning path end to end on a small random KerasHub BART saved as a local preset.

Protocol (DialogSum README): train on dialogsum.train.jsonl (a small slice held out for
early stopping), report ROUGE-1/2/L F-measure with stemming (rouge-score) on all 500
dialogues of dialogsum.dev.jsonl, against their `summary`. Lead = the first
`lead_sentences` turns of the dialogue. The budget run keeps the weights it reached at
`--snapshot` minutes, so one run reports both budgets (the cosine decays to the end of
`--minutes`, so a snapshot is taken before the decay ends). The settings below were chosen
on the held-out training pairs (`--validation-only`) for the 15-minute budget.

    python benchmarks/bench_summarize.py ../shared/data/DialogSum               # 15 minutes
    python benchmarks/bench_summarize.py ../shared/data/DialogSum --minutes 60 --snapshot 15
    python benchmarks/bench_summarize.py ../shared/data/DialogSum --validation-only \
        --set max_source_length=192     # choosing a setting: dev unseen
    python benchmarks/bench_summarize.py ../shared/data/DialogSum --tiny-bart
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from common import timer  # also puts the repository on sys.path and quiets TensorFlow

from dltoolkit import Summarizer
from dltoolkit.data.text import read_pairs
from dltoolkit.models.pretrained_seq2seq import random_bart_preset

TRANSFORMER = {
    "d_model": 128,
    "layers": 2,
    "heads": 4,
    "ff_dim": 512,
    "dropout": 0.0,  # 15 minutes is 5-6 epochs: the model underfits
    "vocabulary_size": 4000,
    "max_source_length": 256,
    "max_target_length": 64,
    "batch_size": 32,
    "learning_rate": 3e-3,
    "warmup_epochs": 0.5,
    "schedule": "cosine",  # timed to end with the budget
    "label_smoothing": 0.1,
    "no_repeat_ngram": 3,
    "lead_sentences": 3,
    "val_split": 0.02,
    "eval_samples": 100,
    "early_stopping_patience": 0,
    "epochs": 100,
}
COLUMNS = ("rouge1", "rouge2", "rougeL")


def budget_run(
    folder: Path,
    out: Path,
    minutes: float,
    snapshot: float | None,
    overrides: dict,
    validation_only: bool = False,
) -> list[dict]:
    params = {**TRANSFORMER, "train_minutes": minutes, "snapshot_minutes": snapshot, **overrides}
    if validation_only:  # the fit scores every held-out training pair; dev stays unseen
        params["eval_samples"] = 0
    model = Summarizer(text_field="dialogue", summary_field="summary", **params)
    times: dict = {}
    with timer(times, "fit"):
        model.fit(str(folder / "dialogsum.train.jsonl"), out=out, overwrite=True, progress=True)
    if validation_only:
        name = f"Transformer, {minutes:g} min, validation pairs"
        return _with_lead(name, model.metrics_, params["lead_sentences"])
    dev = read_pairs(folder / "dialogsum.dev.jsonl", "dialogue", "summary")
    rows = []
    with timer(times, "dev"):
        final = model.evaluate(dev)
    epochs = len(_history(out))
    if snapshot:
        model.load_snapshot(snapshot)
        rows.append(_row(f"Transformer, {snapshot:g} min", model.evaluate(dev)))
    name = f"Transformer, {minutes:g} min budget ({epochs} epochs)"
    rows += _with_lead(name, final, params["lead_sentences"])
    print(
        f"fit: wall {times['fit']:.0f}s, CPU {times['fit_cpu']:.0f}s; dev decoding+scoring: "
        f"wall {times['dev']:.0f}s, CPU {times['dev_cpu']:.0f}s"
    )
    return rows


def tiny_bart_run(folder: Path, out: Path, pairs: int, epochs: int) -> list[dict]:
    train = read_pairs(folder / "dialogsum.train.jsonl", "dialogue", "summary").take(range(pairs))
    dev = read_pairs(folder / "dialogsum.dev.jsonl", "dialogue", "summary").take(range(50))
    times: dict = {}
    with timer(times, "preset"):
        preset = random_bart_preset(
            out / "tiny_bart",
            train.texts + train.summaries,
            vocabulary_size=2000,
            hidden_dim=64,
            layers=2,
            heads=2,
            max_length=256,
        )
    model = Summarizer(
        preset=str(preset),
        epochs=epochs,
        batch_size=16,
        learning_rate=1e-3,
        max_source_length=256,
        max_target_length=48,
        eval_samples=50,
        no_repeat_ngram=3,
        val_split=0.1,
        early_stopping_patience=0,
    )
    with timer(times, "fit"):
        model.fit(train, out=out / "run", overwrite=True, progress=True)
    with timer(times, "dev"):
        metrics = model.evaluate(dev)
    with timer(times, "export"):
        exported = model.export()
    print(
        f"tiny BART preset {preset}: built in {times['preset']:.0f}s; fine-tuned {epochs} epochs on "
        f"{pairs} pairs in {times['fit']:.0f}s (CPU {times['fit_cpu']:.0f}s); 50 dev dialogues scored "
        f"in {times['dev']:.0f}s; exported to {exported} in {times['export']:.0f}s"
    )
    print("example:", model.predict(text=dev.texts[0])[0]["summary"][:200])
    return [
        _row(f"random tiny BART, fine-tuned {epochs} epochs (not a target)", metrics),
        {"model": "Lead-3", **{k: metrics[f"lead_{k}"] for k in COLUMNS}},
    ]


def _history(out: Path) -> list[dict]:
    from dltoolkit.core.callbacks import read_history

    return read_history(out / "history.csv")


def _with_lead(name: str, metrics: dict, lead_sentences: int) -> list[dict]:
    """The model's row, then Lead's and the references' on the same pairs."""
    return [
        _row(name, metrics),
        {
            "model": f"Lead-{lead_sentences}",
            **{k: metrics[f"lead_{k}"] for k in COLUMNS},
            "mean words": metrics["lead_mean_words"],
        },
        {"model": "reference", "mean words": metrics["reference_mean_words"]},
    ]


def _row(name: str, metrics: dict) -> dict:
    return {
        "model": name,
        **{k: metrics[k] for k in COLUMNS},
        "mean words": metrics["summary_mean_words"],
    }


def print_table(rows: list[dict]) -> None:
    print("| model | ROUGE-1 | ROUGE-2 | ROUGE-L | mean words |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k]:.2f}" if k in r else "" for k in (*COLUMNS, "mean words")]
        print(f"| {r['model']} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="the DialogSum folder (dialogsum.train/dev.jsonl)")
    parser.add_argument("--minutes", type=float, default=15, help="training wall-time budget")
    parser.add_argument(
        "--snapshot", type=float, default=0, help="also report the weights at this minute"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-summarize"))
    parser.add_argument(
        "--set", nargs="*", default=[], help="Transformer overrides key=value (JSON values)"
    )
    parser.add_argument(
        "--validation-only",
        action="store_true",
        help="for choosing settings: score every held-out training pair, never the dev set",
    )
    parser.add_argument("--tiny-bart", action="store_true", help="run the fine-tuning path instead")
    parser.add_argument("--bart-pairs", type=int, default=400)
    parser.add_argument("--bart-epochs", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{platform.node()}: {os.cpu_count()} CPU cores, load average {os.getloadavg()} at start "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        flush=True,
    )
    if args.tiny_bart:
        rows = tiny_bart_run(args.data, args.out, args.bart_pairs, args.bart_epochs)
    else:
        overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
        rows = budget_run(
            args.data,
            args.out,
            args.minutes,
            args.snapshot or None,
            overrides,
            args.validation_only,
        )
    print(f"load average at end {os.getloadavg()}")
    print_table(rows)


if __name__ == "__main__":
    sys.exit(main())
