"""HH-RLHF harmless: pretraining, supervised fine-tuning, then DPO (issue 25, part 2).

Data: ../shared/data/hh_rlhf_harmless_test (2,312 pairs of whole dialogues that share their
prefix up to the last Assistant turn), split by line order: the first 2,000 pairs train, the
last 312 are held out and scored once, at the end of each seed. Per seed, three runs of
`dltoolkit.TextGenerator`: pretraining and fine-tuning with `train_minutes` of training each,
DPO with the recipe's own step count (two passes over the pairs, so that the same steps are
taken whatever the machine's load) unless `--minutes-dpo` gives it a time budget instead:

1. pretraining from scratch, byte-level BPE learned on the data, on the 2,000 training
   dialogues (chosen and rejected, each a document);
2. supervised fine-tuning of that run on the chosen (prompt, response) pairs of the 2,000,
   the prompt being the dialogue up to the last shared "\\n\\nAssistant:";
3. DPO of the fine-tuned run (`align`) on the 2,000 training preference pairs.

Every choice a run makes (best weights, early stopping) is validated on the recipe's own
`val_split` of its training data, never on the 312. The held-out scores are the DPO run's
`evaluate` on the 312 pairs: the DPO model's accuracy by implicit reward (chosen > rejected)
and the SFT model's (its reference) by length-normalised log-likelihood, each with the Wilson
95 % interval over the pairs. Target: DPO above SFT on every seed, its interval above 0.5.

`python benchmarks/bench_generate_text_dpo.py --data ../shared/data/hh_rlhf_harmless_test
[--seeds 0,1,2 --minutes-pretrain 20 --minutes-sft 8 --json out.json]`
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import common  # noqa: I001  (sets the TensorFlow log level and sys.path first)

from dltoolkit import TextGenerator
from dltoolkit.core.config import parse_value
from dltoolkit.data.corpus import split_dialogues
from dltoolkit.models.preference import binomial_interval

TRAIN_PAIRS = 2000
HELD_OUT_PAIRS = 312
STAGES = ("pretrain", "sft", "dpo")
# Per-stage settings on top of the shared ones (--set overrides both).
STAGE_PARAMS = {
    "pretrain": {"eval_every": 200},
    "sft": {"eval_every": 50, "learning_rate": 3e-4, "warmup_epochs": 0.5},
    "dpo": {
        "eval_every": 25,
        "learning_rate": 2e-4,
        "warmup_epochs": 0.5,
        "beta": 0.1,
        "ema_momentum": 0.95,  # a moving average of the policy: chosen on validation pairs
    },
}
COLUMNS = [
    "seed",
    "SFT accuracy",
    "SFT 95% interval",
    "DPO accuracy",
    "DPO 95% interval",
    "DPO - SFT",
    "reward margin",
    "pretrain val loss",
    "SFT val loss",
    "DPO val accuracy",
    "pretrain min",
    "SFT min",
    "DPO min",
]


def read_pairs(data: Path) -> list[dict]:
    """The HH-RLHF rows ({"chosen", "rejected"} dialogues) in file order; `data` is the
    dataset folder or its test.jsonl.gz."""
    path = data / "test.jsonl.gz" if data.is_dir() else data
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_splits(pairs: list[dict], folder: Path, limit: int | None) -> dict:
    """The benchmark's data files in `folder`: `documents` (both dialogues of each training
    pair), `sft` (chosen prompt/response pairs), `train` (training preference pairs) and
    `held_out` (the last 312 pairs); `limit` keeps only the first training pairs."""
    if len(pairs) < TRAIN_PAIRS + HELD_OUT_PAIRS:
        raise SystemExit(f"expected {TRAIN_PAIRS + HELD_OUT_PAIRS} pairs, found {len(pairs)}")
    train, held_out = pairs[:TRAIN_PAIRS][:limit], pairs[-HELD_OUT_PAIRS:]
    split = [split_dialogues(row["chosen"], row["rejected"]) for row in train]
    folder.mkdir(parents=True, exist_ok=True)
    documents = [{"text": row[side]} for row in train for side in ("chosen", "rejected")]
    chosen = [{"prompt": s[0], "response": s[1]} for s in split if s is not None]
    return {
        "documents": write_jsonl(folder / "documents.jsonl", documents),
        "sft": write_jsonl(folder / "sft.jsonl", chosen),
        "train": write_jsonl(folder / "train_pairs.jsonl", train),
        "held_out": write_jsonl(folder / "held_out_pairs.jsonl", held_out),
        "counts": {"train pairs": len(train), "sft pairs": len(chosen), "held out": len(held_out)},
    }


def stage_sets(items: list[str]) -> dict[str, dict]:
    """--set items (`key=value` for every stage, `stage.key=value` for one) by stage."""
    sets: dict[str, dict] = {stage: {} for stage in STAGES}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set '{item}' is not key=value")
        key, value = key.strip(), parse_value(raw)
        stage, dot, name = key.partition(".")
        if dot and stage in STAGES:
            sets[stage][name] = value
        else:
            for stage_params in sets.values():
                stage_params[key] = value
    return sets


def run_seed(seed: int, files: dict, args, sets: dict[str, dict]) -> dict:
    """Pretraining, fine-tuning and DPO for one seed, then the held-out scores."""
    work = args.work / f"seed{seed}"
    shared = {"tokens": "bytes-bpe", "context": args.context, "seed": seed}
    params = {
        stage: {**shared, **STAGE_PARAMS[stage], **sets[stage], "train_minutes": minutes}
        for stage, minutes in zip(
            STAGES, (args.minutes_pretrain, args.minutes_sft, args.minutes_dpo), strict=True
        )
    }
    times: dict = {}
    with common.timer(times, "pretrain"):
        pretrained = TextGenerator(**params["pretrain"]).fit(
            str(files["documents"]), out=work / "pretrain", overwrite=True, progress=False
        )
    with common.timer(times, "sft"):
        sft = TextGenerator(
            **params["sft"],
            preset=str(work / "pretrain"),
            prompt_field="prompt",
            response_field="response",
        ).fit(str(files["sft"]), out=work / "sft", overwrite=True, progress=False)
    with common.timer(times, "dpo"):
        aligned = sft.align(
            str(files["train"]), work / "dpo", overwrite=True, progress=False, **params["dpo"]
        )
    with common.timer(times, "score"):
        held = aligned.evaluate(str(files["held_out"]))  # the 312, once
    n = held["pairs"]
    sft_interval = binomial_interval(round(held["reference_accuracy"] * n), n)
    dpo_interval = (held["accuracy_low"], held["accuracy_high"])
    minutes = {stage: times[stage] / 60 for stage in STAGES}
    return {
        "seed": seed,
        "SFT accuracy": held["reference_accuracy"],
        "SFT 95% interval": "[{:.3f}, {:.3f}]".format(*sft_interval),
        "DPO accuracy": held["preference_accuracy"],
        "DPO 95% interval": "[{:.3f}, {:.3f}]".format(*dpo_interval),
        "DPO - SFT": held["preference_accuracy"] - held["reference_accuracy"],
        "reward margin": held["reward_margin"],
        "pretrain val loss": pretrained.metrics_["loss"],
        "SFT val loss": sft.metrics_["loss"],
        "DPO val accuracy": aligned.metrics_["preference_accuracy"],
        "pretrain min": minutes["pretrain"],
        "SFT min": minutes["sft"],
        "DPO min": minutes["dpo"],
        "score s": times["score"],
        "intervals": {"sft": sft_interval, "dpo": dpo_interval},
        "rules": {
            "sft": "log-likelihood per token, chosen > rejected (the DPO run's reference)",
            "dpo": held["preference_rule"],
        },
        "held out": held,
        "params": params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the hh_rlhf_harmless_test folder")
    parser.add_argument(
        "--seeds", default="0,1,2", help="seeds, one run each (comma- or space-separated)"
    )
    parser.add_argument("--minutes-pretrain", type=float, default=20.0)
    parser.add_argument("--minutes-sft", type=float, default=8.0)
    parser.add_argument(
        "--minutes-dpo",
        type=float,
        help="a time budget for DPO (default: the recipe's step count, load-independent)",
    )
    parser.add_argument("--context", type=int, default=256, help="tokens the model sees")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe parameter for every stage, or STAGE.KEY=VALUE for one of "
        "pretrain, sft, dpo (repeatable), e.g. --set d_model=192 --set dpo.beta=0.2",
    )
    parser.add_argument(
        "--limit", type=int, help="use only the first LIMIT training pairs (smoke tests)"
    )
    parser.add_argument("--work", type=Path, default=Path("bench_runs/generate_text_dpo"))
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    sets = stage_sets(args.set)
    header = f"{' '.join(sys.argv)}\n{common.machine()}"
    print(header, flush=True)
    started = time.perf_counter()
    files = write_splits(read_pairs(args.data), args.work / "data", args.limit)
    print(f"data: {files['counts']}", flush=True)
    rows = []
    for seed in (int(s) for s in args.seeds.replace(",", " ").split()):
        rows.append(run_seed(seed, files, args, sets))
        common.print_table(f"seed {seed} done", rows[-1:], COLUMNS)
    met = all(r["DPO - SFT"] > 0 and r["intervals"]["dpo"][0] > 0.5 for r in rows)
    print(f"\n{header}\nload after: {common.load_average()}")
    common.print_table(
        f"HH-RLHF harmless, {files['counts']['held out']} held-out pairs: SFT by log-likelihood "
        f"per token, DPO by implicit reward ({time.perf_counter() - started:.0f} s in all; "
        f"target {'met' if met else 'NOT met'}: DPO above SFT on every seed, interval above 0.5)",
        rows,
        COLUMNS,
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"command": sys.argv, "machine": header, "data": files["counts"], "rows": rows},
                indent=1,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
