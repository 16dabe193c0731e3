"""Metrics shared by the recipes: classification (images, graph nodes) and binary detection."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], top_k: int = 5
) -> dict:
    """Accuracy, top-k accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    n = len(class_names)
    predicted = probabilities.argmax(axis=1)
    k = min(top_k, n)
    top = np.argsort(-probabilities, axis=1)[:, :k]
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=range(n), zero_division=0
    )
    return {
        "accuracy": float(np.mean(predicted == labels)),
        f"top_{k}_accuracy": float(np.mean((top == labels[:, None]).any(axis=1))),
        "macro_f1": float(f1.mean()),
        "samples": len(labels),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=range(n)).tolist(),
    }


def headline(metrics: dict) -> dict:
    """The scalar metrics only (what a summary table shows)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


def detection_metrics(labels: np.ndarray, scores: np.ndarray, flags: np.ndarray) -> dict:
    """Binary detection (1 = positive, higher score = more positive): ROC-AUC and average
    precision over the scores; precision, recall and F1 of the 0/1 `flags`."""
    both = len(np.unique(labels)) == 2
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, flags, average="binary", zero_division=0
    )
    return {
        "roc_auc": float(skm.roc_auc_score(labels, scores)) if both else float("nan"),
        "average_precision": float(skm.average_precision_score(labels, scores))
        if both
        else float("nan"),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "samples": len(labels),
        "positives": int(labels.sum()),
        "flagged": int(flags.sum()),
    }


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (flag when score >= it) that maximises F1 on `labels`."""
    precision, recall, thresholds = skm.precision_recall_curve(labels, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])
