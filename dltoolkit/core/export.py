"""Writing SavedModels for TF Serving and TFLite flatbuffers.

Endpoints are plain functions of tensors that call the Keras model; everything they do
(decoding, scaling, label lookup) is traced into the graph, so serving needs TensorFlow only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from dltoolkit.core import files

EXPORT_FORMATS = ("saved_model", "tflite")

Endpoint = tuple[Callable, list[tf.TensorSpec]]


def write_saved_model(path: Path, model: keras.Model, endpoints: dict[str, Endpoint]) -> Path:
    """Write a SavedModel whose signatures are `endpoints` (the first is `serving_default`)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=signature)
    with files.atomic_path(path) as tmp:
        archive.write_out(str(tmp), verbose=False)
    return Path(path)


def write_tflite(path: Path, model: keras.Model, endpoint: Endpoint) -> Path:
    """Convert one numeric endpoint (TFLite has no string or image-decoding ops) to .tflite."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = write_saved_model(Path(tmp) / "saved", model, {"serving_default": endpoint})
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        flatbuffer = converter.convert()
    files.write_bytes(path, flatbuffer)
    return Path(path)
