"""COCO-style detection scores by pycocotools, on ground truth built in memory.

Whatever format the boxes came in, they are scored the same way: the true boxes become a COCO
ground-truth index and the detections COCO results, and pycocotools' `COCOeval` computes
mAP@[.5:.95], mAP@.5, mAP@.75, AP by object size (small < 32², medium < 96², large, by box
area in pixels of the original image), average recall at 100 detections, per-class AP and the
precision-recall curve of each class at IoU 0.5.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval's recall thresholds
_STATS = (
    "map",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "ar1",
    "ar10",
    "ar100",
    "ar_small",
    "ar_medium",
    "ar_large",
)


def coco_scores(truth: list[dict], predictions: list[dict], class_names: list[str]) -> dict:
    """Score `predictions` against `truth`, one dict per image in the same order.

    truth[i]: {"boxes": (n, 4) xyxy pixels, "labels": (n,) class indices, "size": (h, w)};
    predictions[i]: {"boxes": (k, 4) xyxy pixels, "scores": (k,), "labels": (k,) indices}.
    Returns the COCO summary (`map`, `map50`, `map75`, `map_small|medium|large`, `ar1|10|100`,
    `ar_small|medium|large`; None where no true box of that size exists), `per_class`
    ({name: {"ap", "ap50", "boxes"}}) and `pr_curves` ({name: precision at RECALL_POINTS, IoU .5}).
    """
    if len(truth) != len(predictions):
        raise ValueError(f"{len(truth)} images of truth but {len(predictions)} of predictions")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ground = COCO()
    ground.dataset = _ground_truth(truth, class_names)
    with contextlib.redirect_stdout(io.StringIO()):
        ground.createIndex()
    results = _results(predictions)
    counts = np.bincount(
        np.concatenate([np.asarray(t["labels"], int).reshape(-1) for t in truth] + [[]]).astype(
            int
        ),
        minlength=len(class_names),
    )
    if not results:
        return _empty(class_names, counts)
    with contextlib.redirect_stdout(io.StringIO()):
        detected = ground.loadRes(results)
        scorer = COCOeval(ground, detected, "bbox")
        scorer.evaluate()
        scorer.accumulate()
        scorer.summarize()
    scores = {name: _number(value) for name, value in zip(_STATS, scorer.stats, strict=True)}
    precision = scorer.eval["precision"]  # [IoU 10, recall 101, class K, area 4, maxDets 3]
    scores["per_class"] = {
        name: {
            "ap": _mean_valid(precision[:, :, k, 0, -1]),
            "ap50": _mean_valid(precision[0, :, k, 0, -1]),
            "boxes": int(counts[k]),
        }
        for k, name in enumerate(class_names)
    }
    scores["pr_curves"] = {
        name: np.maximum(precision[0, :, k, 0, -1], 0.0).tolist()
        for k, name in enumerate(class_names)
        if counts[k]
    }
    return scores


def _ground_truth(truth: list[dict], class_names: list[str]) -> dict:
    annotations = []
    for image_id, image in enumerate(truth, start=1):
        for box, label in zip(_xywh(image["boxes"]), np.asarray(image["labels"]), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    return {
        "images": [
            {"id": i, "height": int(t["size"][0]), "width": int(t["size"][1])}
            for i, t in enumerate(truth, start=1)
        ],
        "annotations": annotations,
        "categories": [{"id": k, "name": name} for k, name in enumerate(class_names)],
    }


def _results(predictions: list[dict]) -> list[dict]:
    return [
        {"image_id": image_id, "category_id": int(label), "bbox": box, "score": float(score)}
        for image_id, found in enumerate(predictions, start=1)
        for box, score, label in zip(
            _xywh(found["boxes"]),
            np.asarray(found["scores"]).reshape(-1),
            np.asarray(found["labels"]).reshape(-1),
            strict=True,
        )
    ]


def _xywh(boxes) -> list[list[float]]:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes.tolist()]


def _mean_valid(values: np.ndarray) -> float | None:
    """Mean over COCOeval's entries that exist (-1 marks a class without true boxes)."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def _number(value: float) -> float | None:
    return None if value < 0 else float(value)


def _empty(class_names: list[str], counts: np.ndarray) -> dict:
    """The scores of no detections at all (pycocotools refuses an empty result list)."""
    present = counts.sum() > 0
    scores = {name: (0.0 if present else None) for name in _STATS}
    scores["per_class"] = {
        name: {
            "ap": 0.0 if counts[k] else None,
            "ap50": 0.0 if counts[k] else None,
            "boxes": int(counts[k]),
        }
        for k, name in enumerate(class_names)
    }
    scores["pr_curves"] = {
        name: [0.0] * len(RECALL_POINTS) for k, name in enumerate(class_names) if counts[k]
    }
    return scores
