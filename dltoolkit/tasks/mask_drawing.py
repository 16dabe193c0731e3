"""Drawing class-index masks: colours, overlays on the image, palette PNGs."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def colorize(mask: np.ndarray, colors) -> np.ndarray:
    """Class-index mask (H, W) -> RGB uint8 (H, W, 3); indices without a colour are black."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(colors)] = np.asarray(colors, np.uint8).reshape(-1, 3)
    return table[np.asarray(mask, np.uint8)]


def overlay(image: np.ndarray, colored: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The colour mask blended over the image (grey or RGB, [0, 255]) -> RGB uint8."""
    image = np.asarray(image, np.float32)
    image = image[..., None] if image.ndim == 2 else image[..., :3]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.clip((1 - alpha) * image + alpha * colored, 0, 255).astype(np.uint8)


def palette_png(mask: np.ndarray, colors) -> bytes:
    """A PNG whose pixel values are the class indices and whose palette shows their colours."""
    picture = Image.fromarray(np.asarray(mask, np.uint8), mode="P")
    picture.putpalette(colorize(np.arange(256, dtype=np.uint8)[None], colors).ravel().tolist())
    return _encoded(picture)


def rgb_png(pixels: np.ndarray) -> bytes:
    """RGB uint8 pixels as PNG bytes."""
    return _encoded(Image.fromarray(np.asarray(pixels, np.uint8)))


def _encoded(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
