"""Built-in sample data sets that ship inside dependencies, so they work offline.

`SAMPLES` is a registry: each entry has a `kind` (only "images" so far; recipes for
tables or series can register their own kinds) and a loader. An "images" loader returns
`(images uint8 (N, H, W, C), labels int (N,), class_names)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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


SAMPLES: dict[str, Sample] = {
    "digits": Sample("1,797 handwritten digits, 8x8 grayscale, 10 classes (scikit-learn)", _digits),
}


def list_samples() -> list[tuple[str, str]]:
    """(name, one-line description) of every built-in sample, sorted by name."""
    return [(name, SAMPLES[name].description) for name in sorted(SAMPLES)]


def load_sample(name: str) -> tuple:
    """Load a built-in sample by name; an "images" sample gives (images, labels, class_names)."""
    if name not in SAMPLES:
        raise DataError(f"unknown sample {name!r}; available samples: {', '.join(sorted(SAMPLES))}")
    return SAMPLES[name].loader()
