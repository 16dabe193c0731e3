"""Drawing detections and true boxes on images (predict --output, the report's examples)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from dltoolkit.data.masks import distinct_colors

TRUTH_COLOR = (0, 220, 0)


def class_colors(count: int) -> list[tuple[int, int, int]]:
    """A distinct colour per class (the VOC colour map without its black)."""
    return distinct_colors(count + 1)[1:]


def draw_boxes(
    image: np.ndarray,
    boxes,
    captions: list[str],
    colors: list[tuple[int, int, int]],
    truth=None,
) -> np.ndarray:
    """`image` (H, W[, C]) as uint8 RGB with each box (xyxy pixels) outlined in its colour and
    captioned; `truth` boxes, when given, are drawn first, thin and green."""
    pixels = np.asarray(image)
    pixels = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")
    pen = ImageDraw.Draw(picture)
    width = max(1, round(max(picture.size) / 200))
    for box in np.asarray(truth if truth is not None else [], float).reshape(-1, 4):
        pen.rectangle(box.tolist(), outline=TRUTH_COLOR, width=1)
    for box, caption, color in zip(
        np.asarray(boxes, float).reshape(-1, 4), captions, colors, strict=True
    ):
        pen.rectangle(box.tolist(), outline=color, width=width)
        left, top = box[0], max(0.0, box[1] - 11)
        text_box = pen.textbbox((left, top), caption)
        pen.rectangle(text_box, fill=color)
        pen.text((left, top), caption, fill=(255, 255, 255) if sum(color) < 400 else (0, 0, 0))
    return np.asarray(picture)
