"""Built-in sample data sets that ship inside dependencies, so they work offline.

`SAMPLES` is a registry: each entry has a `kind` and a loader. An "images" loader returns
`(images uint8 (N, H, W, C), labels int (N,), class_names)`; a "segmentation" loader returns
`(images uint8 (N, H, W, C), masks uint8 (N, H, W) of class indices, class_names)`; a "detection"
loader returns `(images uint8 (N, H, W, C), boxes: list of float32 (n_i, 4) x1 y1 x2 y2 in
pixels, labels: list of int32 (n_i,) class indices, class_names)`; a "series"
loader returns a DataFrame with a time column and numeric columns; a "table" loader returns
`(DataFrame, label column)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dltoolkit.core.errors import DataError


@dataclass(frozen=True)
class Sample:
    description: str
    loader: Callable[[], tuple]
    kind: str = "images"


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, bunch.target.astype(np.int32), [str(d) for d in range(10)]


def _digit_scenes() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The seeded digit scenes (`_digit_layout`). Mask: the digit + 1 where its ink is above
    40% of its maximum, 0 ("background") elsewhere."""
    images, placed = _digit_layout()
    masks = np.zeros(images.shape[:3], np.uint8)
    for mask, digits in zip(masks, placed, strict=True):
        for digit, top, left, ink in digits:
            mask[top : top + ink.shape[0], left : left + ink.shape[1]][ink] = digit + 1
    return images, masks, ["background"] + [str(d) for d in range(10)]


def _digit_boxes() -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[str]]:
    """The seeded digit scenes (`_digit_layout`). Box: x1, y1, x2, y2 in pixels, the tight box of
    the pixels where the digit's ink is above 40% of its maximum."""
    images, placed = _digit_layout()
    boxes, labels = [], []
    for digits in placed:
        boxes.append(
            np.array([_ink_box(top, left, ink) for _, top, left, ink in digits], np.float32)
        )
        labels.append(np.array([digit for digit, *_ in digits], np.int32))
    return images, boxes, labels, [str(d) for d in range(10)]


def _ink_box(top: int, left: int, ink: np.ndarray) -> list[int]:
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return [left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1]


def _digit_layout() -> tuple[np.ndarray, list[list[tuple[int, int, int, np.ndarray]]]]:
    """1,200 seeded 64x64 scenes of 1-3 digits (scikit-learn's, upscaled x3 bilinear), one per
    32x32 quarter so they never overlap, on a lightly noisy background: the images uint8
    (N, 64, 64, 1) and per scene its digits as (digit, top, left, ink mask (24, 24) bool),
    the mask true where the ink is above 40% of its maximum."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    up = _bilinear_matrix(8, 3)
    digits = np.einsum("ij,njk,lk->nil", up, bunch.images / 16.0, up)  # (1797, 24, 24) in [0, 1]
    rng = np.random.default_rng(0)
    canvas = rng.normal(20.0, 6.0, (1200, 64, 64))
    placed = []
    for scene in canvas:
        placed.append([])
        for quarter in rng.permutation(4)[: rng.integers(1, 4)]:
            pick = rng.integers(len(digits))
            top, left = 32 * (quarter // 2) + rng.integers(9), 32 * (quarter % 2) + rng.integers(9)
            box = np.s_[top : top + 24, left : left + 24]
            ink = digits[pick]
            scene[box] = np.maximum(scene[box], 255.0 * ink)
            placed[-1].append((int(bunch.target[pick]), int(top), int(left), ink > 0.4 * ink.max()))
    images = np.clip(np.round(canvas), 0, 255).astype(np.uint8)[..., None]
    return images, placed


def _bilinear_matrix(size: int, factor: int) -> np.ndarray:
    """(size * factor, size) weights of bilinear upscaling (half-pixel centres, clamped edges)."""
    source = np.clip((np.arange(size * factor) + 0.5) / factor - 0.5, 0, size - 1)
    low = np.minimum(np.floor(source).astype(int), size - 2)
    weight = source - low
    matrix = np.zeros((size * factor, size))
    rows = np.arange(size * factor)
    matrix[rows, low] = 1 - weight
    matrix[rows, low + 1] = weight
    return matrix


def _co2():
    """Weekly CO2 at Mauna Loa (statsmodels); its 59 gaps are interpolated in time."""
    from statsmodels.datasets import co2

    frame = co2.load_pandas().data.interpolate(method="time")
    return frame.rename_axis("week").reset_index()


def _sunspots():
    from statsmodels.datasets import sunspots

    frame = sunspots.load_pandas().data
    year = pd.to_datetime(frame["YEAR"].astype(int).astype(str), format="%Y")
    return pd.DataFrame({"year": year, "sunspots": frame["SUNACTIVITY"]})


def _karate():
    """Zachary's karate club (networkx): 34 members, 78 ties, labelled by the faction ("club")
    each joined after the split."""
    import networkx as nx

    graph = nx.karate_club_graph()
    for _, attrs in graph.nodes(data=True):
        attrs["label"] = attrs.pop("club")
    return graph


def _breast_cancer():
    """scikit-learn's breast cancer table: all 357 benign rows and 40 seeded malignant ones (10%)."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["malignant"] = (frame.pop("target") == 0).astype(int)
    rare = frame[frame["malignant"] == 1].sample(n=40, random_state=0)
    return pd.concat([frame[frame["malignant"] == 0], rare]).sort_index().reset_index(
        drop=True
    ), "malignant"


SAMPLES: dict[str, Sample] = {
    "digits": Sample("1,797 handwritten digits, 8x8 grayscale, 10 classes (scikit-learn)", _digits),
    "digit-scenes": Sample(
        "1,200 scenes of 1-3 handwritten digits with class masks, 64x64 grayscale, "
        "background + 10 digit classes (scikit-learn)",
        _digit_scenes,
        kind="segmentation",
    ),
    "digit-boxes": Sample(
        "the 1,200 digit scenes with a box around each digit (2,343 boxes), 64x64 grayscale, "
        "10 digit classes (scikit-learn)",
        _digit_boxes,
        kind="detection",
    ),
    "breast-cancer": Sample(
        "breast cancer cell measurements, 30 columns, 357 benign + 40 malignant "
        "(rare class, label 'malignant') (scikit-learn)",
        _breast_cancer,
        kind="table",
    ),
    "co2": Sample(
        "weekly CO2 (ppm) at Mauna Loa 1958-2001, 2,284 rows, gaps interpolated (statsmodels)",
        _co2,
        kind="series",
    ),
    "sunspots": Sample(
        "yearly sunspot numbers 1700-2008, 309 rows (statsmodels)", _sunspots, kind="series"
    ),
    "karate": Sample(
        "Zachary's karate club graph, 34 nodes, 2 factions (networkx)", _karate, kind="graph"
    ),
}


def list_samples() -> list[tuple[str, str]]:
    """(name, one-line description) of every built-in sample, sorted by name."""
    return [(name, SAMPLES[name].description) for name in sorted(SAMPLES)]


def load_sample(name: str) -> tuple:
    """Load a built-in sample by name; an "images" sample gives (images, labels, class_names)."""
    if name not in SAMPLES:
        raise DataError(f"unknown sample {name!r}; available samples: {', '.join(sorted(SAMPLES))}")
    return SAMPLES[name].loader()
