"""The data parameters that the image recipes (classify, segment, detect-objects) share."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import TrainConfig
from dltoolkit.core.params import param


@dataclass
class ImageDataConfig(TrainConfig):
    """Held-out splits carved from the images, and where tensorflow-datasets data lives."""

    val_split: float = param(
        0.1,
        "Share of the images split off for validation (unless the data has a val split).",
        ge=0,
        lt=1,
    )
    test_split: float = param(
        0.1,
        "Share of the images split off for the test (unless the data has a test split).",
        ge=0,
        lt=1,
    )
    tfds_data_dir: str | None = param(
        None, "tensorflow-datasets data_dir (default TFDS_DATA_DIR).", cli=True
    )
