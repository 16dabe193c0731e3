"""Metrics shared by the classification-style recipes (images, graph nodes)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str],
                           top_k: int = 5) -> dict:
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
