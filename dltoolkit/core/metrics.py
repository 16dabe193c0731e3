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


def pixel_confusion(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix (true class, predicted class) over the labelled pixels of one mask
    (class indices >= num_classes, e.g. the ignore index, are not counted)."""
    labelled = truth < num_classes
    return skm.confusion_matrix(
        truth[labelled].ravel(), predicted[labelled].ravel(), labels=range(num_classes)
    )


def segmentation_metrics(matrix: np.ndarray, class_names: list[str]) -> dict:
    """From a pixel confusion matrix summed over a whole data set: mean IoU and mean Dice over
    the classes present (in truth or prediction), pixel accuracy, per-class IoU, Dice and
    pixel counts, and the same for the baseline that predicts the most frequent class."""
    matrix = np.asarray(matrix, np.int64)
    hits = np.diag(matrix).astype(np.float64)
    truth, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    union = truth + predicted - hits
    present = union > 0
    total = max(matrix.sum(), 1)
    iou = np.where(present, hits / np.maximum(union, 1), np.nan)
    dice = np.where(present, 2 * hits / np.maximum(truth + predicted, 1), np.nan)
    return {
        "mean_iou": _number(np.nanmean(iou)) if present.any() else None,
        "dice": _number(np.nanmean(dice)) if present.any() else None,
        "pixel_accuracy": float(hits.sum() / total),
        "classes_present": int(present.sum()),
        # the baseline: the most frequent true class predicted for every pixel
        "baseline_mean_iou": float(truth.max() / total / max((truth > 0).sum(), 1)),
        "baseline_pixel_accuracy": float(truth.max() / total),
        "pixels": int(matrix.sum()),
        "per_class": {  # None: the class is in neither truth nor prediction
            name: {"iou": _number(i), "dice": _number(d), "pixels": int(t)}
            for name, i, d, t in zip(class_names, iou, dice, truth, strict=True)
        },
        "confusion_matrix": matrix.tolist(),
    }


def _number(value) -> float | None:
    return None if np.isnan(value) else float(value)
