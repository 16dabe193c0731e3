"""SST-2: the text-classification recipe beside TF-IDF + logistic regression.

Protocol (../shared/data/sst2_glue/README.md): train on train.tsv (67,349 phrases), choose
every setting on dev.tsv (872 sentences), score test.tsv (1,821 sentences) once, with the
chosen setting only. Files are read by position (label, text): the train header says
`sentence`, dev and test say `content`. Every side reports accuracy on dev and test and the
wall and CPU time of the fit that made its final model.

Reference side, scikit-learn: the union of two TfidfVectorizers with sublinear tf, word
1-2- or 1-3-grams (tokens split on whitespace, as the text is PTB-tokenised: "n't", "!"
and "?" stay tokens) and character 2-5-grams (across word boundaries, seen in at least two
training texts), into LogisticRegression (liblinear, L2). Grid, chosen on dev accuracy:
word n-grams (1, 2) or (1, 3) x C in {0.5, 1, 2, 4, 8}; its dev accuracies are printed too.

Recipe sides, `TextClassifier` with its defaults except the budget: each trains for
`--minutes` of wall time on train.tsv (its own seeded 5% of the training phrases for
validation and best weights, no test split carved), then scores dev.tsv and test.tsv through
`evaluate` (files read by the training columns' positions). "recipe" is the default
(`model="auto"`: the BERT-style Transformer, no pretraining); "fasttext" the bag-of-n-grams
baseline; "mlm" the same Transformer with `--pretrain-epochs` of masked-LM pretraining on the
training texts inside the same total wall time (pretraining + fine-tuning). "recipe" versus
"mlm" is the masked-LM gain. "preset" fine-tunes a tiny randomly initialised BERT preset
(saved to `--work`, vocabulary learned on 5,000 training phrases) for `--preset-minutes`:
the pretrained path end to end, a smoke test whose accuracy means nothing.

`python benchmarks/bench_classify_text.py --data ../shared/data/sst2_glue [--minutes 20
--sides tfidf,recipe,fasttext,mlm,preset --json out.json]`
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import common  # noqa: I001  (sets the TensorFlow log level and sys.path first)
import numpy as np

SPLITS = ("train", "dev", "test")
WORD_NGRAMS = ((1, 2), (1, 3))
C_GRID = (0.5, 1.0, 2.0, 4.0, 8.0)
COLUMNS = ["side", "dev accuracy", "test accuracy", "fit wall s", "fit CPU s", "chosen"]
GRID_COLUMNS = ["word n-grams", "C", "dev accuracy", "fit wall s"]


def read_split(path: Path) -> tuple[list[str], np.ndarray]:
    """One SST-2 TSV file: its texts and 0/1 labels, by column position after the header."""
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as table:
        rows = csv.reader(table, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        for line, row in enumerate(rows, start=2):
            if len(row) != 2 or row[0] not in ("0", "1"):
                raise SystemExit(f"{path}:{line}: expected `label<TAB>text`, got {row!r}")
            labels.append(int(row[0]))
            texts.append(row[1])
    return texts, np.array(labels)


def run_tfidf(data: dict, args) -> dict:
    """The TF-IDF + logistic regression side: grid on dev, then the chosen model on test."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_union

    (train_x, train_y), (dev_x, dev_y) = data["train"], data["dev"]
    grid, best = [], None
    for word_ngrams in WORD_NGRAMS:
        vectorizer = make_union(
            TfidfVectorizer(ngram_range=word_ngrams, token_pattern=r"\S+", sublinear_tf=True),
            TfidfVectorizer(analyzer="char", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
        )
        vectorize: dict = {}
        with common.timer(vectorize, "fit"):
            train_features = vectorizer.fit_transform(train_x)
        dev_features = vectorizer.transform(dev_x)
        for c in C_GRID:
            times = dict(vectorize)
            model = LogisticRegression(C=c, solver="liblinear", random_state=args.seed)
            with common.timer(times, "fit"):
                model.fit(train_features, train_y)
            dev_accuracy = float(np.mean(model.predict(dev_features) == dev_y))
            grid.append(
                {
                    "word n-grams": f"{word_ngrams[0]}-{word_ngrams[1]}",
                    "C": c,
                    "dev accuracy": dev_accuracy,
                    "fit wall s": times["fit"],
                }
            )
            if best is None or dev_accuracy > best[0]:
                best = (dev_accuracy, vectorizer, model, times, grid[-1])
        print(f"word n-grams {word_ngrams} done: {common.load_average()}", flush=True)
    common.print_table("TF-IDF + logistic regression: the grid on dev", grid, GRID_COLUMNS)
    dev_accuracy, vectorizer, model, times, chosen = best
    test_x, test_y = data["test"]
    test_accuracy = float(np.mean(model.predict(vectorizer.transform(test_x)) == test_y))
    return {
        "dev accuracy": dev_accuracy,
        "test accuracy": test_accuracy,
        "fit wall s": times["fit"],
        "fit CPU s": times["fit_cpu"],
        "chosen": f"word {chosen['word n-grams']}-grams, C={chosen['C']:g}",
        "grid": grid,
    }


def recipe_side(minutes="minutes", **params):
    """A side that trains TextClassifier(**params) for the `minutes` argument's wall time and
    scores dev and test."""

    def run(data, args) -> dict:
        from dltoolkit import TextClassifier

        texts, labels = data["train"]
        recipe = TextClassifier(
            train_minutes=getattr(args, minutes),
            val_split=0.05,
            test_split=0.0,
            seed=args.seed,
            **params,
        )
        times: dict = {}
        with common.timer(times, "fit"):
            recipe.fit(
                (texts, [str(y) for y in labels]),
                args.work / ("_".join(params) or "default"),
                overwrite=True,
            )
        scores = {
            split: recipe.evaluate(str(args.data / f"{split}.tsv"))["accuracy"]
            for split in ("dev", "test")
        }
        return {
            "dev accuracy": scores["dev"],
            "test accuracy": scores["test"],
            "fit wall s": times["fit"],
            "fit CPU s": times["fit_cpu"],
            "chosen": ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults",
        }

    return run


def random_preset(data, args) -> Path:
    """A tiny randomly initialised BERT preset with a vocabulary learned on training texts: the
    pretrained path end to end offline (its accuracy means nothing)."""
    from dltoolkit.models.hub_text import random_text_classifier_preset

    texts = data["train"][0][:5000]
    return random_text_classifier_preset(args.work / "random_bert", texts, max_length=128)


# The sides, run in this order. Each is (name in the table, run(data, args) -> dict with the
# COLUMNS' figures), `data` mapping "train"/"dev"/"test" to (texts, labels).
SIDES = {
    "tfidf": ("TF-IDF + logistic regression (scikit-learn)", run_tfidf),
    "recipe": ("TextClassifier, defaults (Transformer from scratch)", recipe_side()),
    "fasttext": ("TextClassifier, model=fasttext", recipe_side(model="fasttext")),
    "mlm": ("TextClassifier, Transformer with masked-LM pretraining", None),
    "preset": ("TextClassifier, random tiny BERT preset (smoke test only)", None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the sst2_glue folder")
    parser.add_argument(
        "--sides", default=",".join(SIDES), help="comma-separated: " + ", ".join(SIDES)
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=20.0, help="recipe training wall time")
    parser.add_argument(
        "--pretrain-epochs", type=int, default=1, help="mlm side: epochs of masked-LM pretraining"
    )
    parser.add_argument(
        "--preset-minutes", type=float, default=2.0, help="preset side: training wall time"
    )
    parser.add_argument("--work", type=Path, default=Path("bench_runs/classify_text"))
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    sides = args.sides.split(",")
    if set(sides) - set(SIDES):
        raise SystemExit(
            f"unknown sides {sorted(set(sides) - set(SIDES))}; choose from {list(SIDES)}"
        )
    header = f"{' '.join(sys.argv)}\n{common.machine()}"
    print(header, flush=True)
    started = time.perf_counter()
    data = {split: read_split(args.data / f"{split}.tsv") for split in SPLITS}
    print(", ".join(f"{split} {len(data[split][1])} texts" for split in SPLITS), flush=True)
    rows = []
    for side in sides:
        name, run = SIDES[side]
        if side == "mlm":
            run = recipe_side(pretrain_epochs=args.pretrain_epochs)
        if side == "preset":
            run = recipe_side("preset_minutes", preset=str(random_preset(data, args)))
        rows.append({"side": name, **run(data, args)})
        common.print_table(f"{name} done", rows[-1:], COLUMNS)
    print(f"\n{header}\nload after: {common.load_average()}")
    common.print_table(
        f"SST-2: train on train.tsv, choose on dev.tsv, test.tsv once "
        f"({time.perf_counter() - started:.0f} s in all)",
        rows,
        COLUMNS,
    )
    if args.json:
        args.json.write_text(json.dumps({"command": sys.argv, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
