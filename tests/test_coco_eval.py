"""The COCO scorer on hand-made boxes: perfect, shifted, missing and wrong-class detections."""

import numpy as np
import pytest

from dltoolkit.core.coco_eval import RECALL_POINTS, coco_scores

CLASSES = ["cat", "dog", "bird"]
TRUTH = [
    {
        "boxes": np.array([[10, 10, 60, 50], [70, 20, 120, 90]]),
        "labels": [0, 1],
        "size": (128, 128),
    },
    {"boxes": np.zeros((0, 4)), "labels": [], "size": (100, 80)},  # a negative image
    {"boxes": np.array([[5, 5, 105, 105]]), "labels": [0], "size": (128, 128)},
]


def _found(boxes, scores, labels):
    return {"boxes": np.array(boxes, float).reshape(-1, 4), "scores": scores, "labels": labels}


def test_perfect_detections_score_one_and_absent_classes_are_none():
    predictions = [_found(t["boxes"], [0.9] * len(t["labels"]), t["labels"]) for t in TRUTH]
    scores = coco_scores(TRUTH, predictions, CLASSES)
    assert scores["map"] == pytest.approx(1.0) and scores["map50"] == pytest.approx(1.0)
    assert scores["ar100"] == pytest.approx(1.0)
    assert scores["map_small"] is None  # no true box under 32x32 pixels
    assert scores["per_class"]["bird"] == {"ap": None, "ap50": None, "boxes": 0}
    assert scores["per_class"]["cat"]["boxes"] == 2
    assert set(scores["pr_curves"]) == {"cat", "dog"}
    assert len(scores["pr_curves"]["cat"]) == len(RECALL_POINTS)


def test_shifted_wrong_class_and_false_positive_lower_the_scores():
    predictions = [
        _found([[14, 12, 64, 52], [70, 20, 120, 90]], [0.9, 0.8], [0, 0]),  # shifted; wrong class
        _found([[0, 0, 40, 40]], [0.95], [0]),  # a confident false positive on the negative
        _found([[5, 5, 105, 105]], [0.7], [0]),
    ]
    scores = coco_scores(TRUTH, predictions, CLASSES)
    assert 0 < scores["map"] < scores["map50"] < 1
    assert scores["per_class"]["dog"]["ap"] == 0.0


def test_no_detections_at_all_score_zero():
    empty = [_found([], [], []) for _ in TRUTH]
    scores = coco_scores(TRUTH, empty, CLASSES)
    assert scores["map"] == 0.0 and scores["per_class"]["cat"]["ap"] == 0.0
    with pytest.raises(ValueError, match="3 images of truth but 2"):
        coco_scores(TRUTH, empty[:2], CLASSES)
