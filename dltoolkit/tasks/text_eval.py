"""Scoring a text classifier: multi-label metrics, per-label thresholds tuned on validation,
the most confident mistakes, and the words that move each class most (occlusion)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

from dltoolkit.core.metrics import best_f1_threshold

WORD = re.compile(r"\w+", re.UNICODE)
ATTRIBUTION_TEXTS = 300  # held-out texts the occlusion pass reads
MIN_TEXTS_PER_WORD = 3  # a word must occur in this many of them to be listed


def multi_hot(label_sets: list[list[str]], classes: list[str]) -> np.ndarray:
    """Label sets -> a (N, classes) 0/1 float32 matrix; labels outside `classes` are ignored."""
    index = {name: i for i, name in enumerate(classes)}
    out = np.zeros((len(label_sets), len(classes)), np.float32)
    for row, labels in enumerate(label_sets):
        out[row, [index[lab] for lab in labels if lab in index]] = 1.0
    return out


def tuned_thresholds(truth: np.ndarray, probabilities: np.ndarray) -> list[float]:
    """Per label, the probability threshold with the best F1 on validation (0.5 for a label
    that validation never shows, or shows on every text)."""
    thresholds = []
    for label in range(truth.shape[1]):
        column = truth[:, label]
        if 0 < column.sum() < len(column):
            thresholds.append(best_f1_threshold(column, probabilities[:, label]))
        else:
            thresholds.append(0.5)
    return thresholds


def multi_label_metrics(
    truth: np.ndarray, probabilities: np.ndarray, thresholds, classes: list[str]
) -> dict:
    """Micro and macro F1, subset accuracy (every label right) and per-label precision,
    recall and F1 of the probabilities thresholded per label."""
    predicted = (probabilities >= np.asarray(thresholds)[None, :]).astype(int)
    truth = truth.astype(int)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        truth, predicted, zero_division=0
    )
    return {
        "micro_f1": float(skm.f1_score(truth, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1.mean()),
        "subset_accuracy": float(np.mean((predicted == truth).all(axis=1))),
        "samples": len(truth),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
    }


def confident_mistakes(
    texts: list[str], truth: list[str], predicted: list[str], scores: np.ndarray, count: int
) -> list[dict]:
    """The `count` wrong predictions made with the highest score, most confident first."""
    wrong = [i for i, (t, p) in enumerate(zip(truth, predicted, strict=True)) if t != p]
    wrong.sort(key=lambda i: -float(scores[i]))
    return [
        {
            "text": _shortened(texts[i]),
            "true": truth[i],
            "predicted": predicted[i],
            "score": round(float(scores[i]), 4),
        }
        for i in wrong[:count]
    ]


def occlusion_words(
    probabilities: Callable[[list[str]], np.ndarray],
    texts: list[str],
    classes: list[str],
    count: int,
) -> dict[str, list[dict]]:
    """Per class, the `count` words whose removal lowers that class's probability most, on
    average over the texts they occur in (occlusion: each word of each text is deleted in
    turn and the text scored again). `probabilities` maps strings to (N, classes)."""
    texts = texts[:ATTRIBUTION_TEXTS]
    variants, owners, words = [], [], []
    for i, text in enumerate(texts):
        for word in sorted({w.lower() for w in WORD.findall(text)}):
            pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
            variants.append(pattern.sub(" ", text))
            owners.append(i)
            words.append(word)
    if not variants:
        return {}
    base = probabilities(texts)
    drops = base[owners] - probabilities(variants)  # (variants, classes)
    by_word: dict[str, list[int]] = defaultdict(list)
    for row, word in enumerate(words):
        by_word[word].append(row)
    common = {w: rows for w, rows in by_word.items() if len(rows) >= MIN_TEXTS_PER_WORD}
    out = {}
    for c, name in enumerate(classes):
        means = sorted(
            ((float(drops[rows, c].mean()), w) for w, rows in common.items()), reverse=True
        )
        out[name] = [
            {"word": w, "mean_drop": round(m, 4), "texts": len(common[w])}
            for m, w in means[:count]
            if m > 0
        ]
    return out


def _shortened(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
