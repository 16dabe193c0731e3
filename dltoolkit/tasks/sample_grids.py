"""Sample grids of generated images: tiling, PNG files, the per-epoch callback, report figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from dltoolkit.core import files


def tile_images(images: np.ndarray, columns: int) -> np.ndarray:
    """uint8 images (N, H, W, C) -> one uint8 grid image with a 1-pixel gap between cells."""
    n, h, w, c = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    grid = np.zeros((rows * (h + 1) + 1, columns * (w + 1) + 1, c), np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = (
            image
        )
    return grid


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write a uint8 (H, W, C) image as PNG, atomically."""
    files.write_bytes(path, tf.io.encode_png(image).numpy())
    return Path(path)


class SampleGrids(keras.callbacks.Callback):
    """After every `every` epochs, write `sample()`'s fixed-seed grid to `directory/epoch_NNN.png`."""

    def __init__(
        self, sample: Callable[[], np.ndarray], directory: Path, columns: int, every: int = 1
    ):
        super().__init__()
        self.sample, self.directory, self.columns, self.every = (
            sample,
            Path(directory),
            columns,
            every,
        )

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            write_png(
                self.directory / f"epoch_{epoch + 1:03d}.png",
                tile_images(self.sample(), self.columns),
            )


def grids_over_time(directory: Path, most: int = 6) -> Figure | None:
    """Up to `most` of the per-epoch grids, evenly spread from first to last, side by side."""
    paths = sorted(Path(directory).glob("epoch_*.png"))
    if not paths:
        return None
    picks = [
        paths[i]
        for i in np.unique(np.linspace(0, len(paths) - 1, min(most, len(paths))).astype(int))
    ]
    fig = Figure(figsize=(3.2 * len(picks), 3.6))
    for ax, path in zip(fig.subplots(1, len(picks), squeeze=False)[0], picks, strict=True):
        _show(ax, tf.io.decode_png(path.read_bytes()).numpy())
        ax.set_title(f"epoch {int(path.stem.split('_')[1])}")
    return fig


def image_rows(rows: np.ndarray, row_titles: list[str], column_titles: list[str]) -> Figure:
    """uint8 images (R, K, H, W, C) as R rows of K images (e.g. a denoising trajectory)."""
    count, length = rows.shape[:2]
    fig = Figure(figsize=(1.1 * length + 1, 1.2 * count + 0.4))
    axes = fig.subplots(count, length, squeeze=False)
    for r in range(count):
        for k in range(length):
            _show(axes[r, k], rows[r, k])
            if r == 0:
                axes[r, k].set_title(column_titles[k], fontsize=8)
        axes[r, 0].set_ylabel(row_titles[r], fontsize=8)
    return fig


def single_image(image: np.ndarray, title: str) -> Figure:
    fig = Figure(figsize=(6, 6 * image.shape[0] / image.shape[1]))
    ax = fig.subplots()
    _show(ax, image)
    ax.set_title(title)
    return fig


def _show(ax, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
