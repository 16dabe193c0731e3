"""Writing SavedModels for TF Serving and TFLite flatbuffers, from a recipe's Keras model.

The model maps raw input to output (its preprocessing is layers inside it); a recipe
declares each serving signature as a `Signature`: its named inputs, what turns them into
the model's input (e.g. decoding image bytes) and what turns the model's output into named
outputs (e.g. looking up label names). Everything is traced into the graph, so serving
needs TensorFlow only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from dltoolkit.core import files

EXPORT_FORMATS = ("saved_model", "tflite")


def _as_is(*inputs):
    return inputs[0] if len(inputs) == 1 else list(inputs)


def _named_output(output):
    return output if isinstance(output, dict) else {"output": output}


@dataclass(frozen=True)
class Signature:
    """One serving signature over the recipe's Keras model.

    `inputs` are its named tensor specs, in order; `prepare` maps them (as positional
    tensors) to the model's input, `outputs` maps the model's output to the named outputs.
    `call`, when given, replaces the single model call (a recipe whose serving runs a loop
    over the model, e.g. decoding or sampling).
    """

    inputs: list[tf.TensorSpec]
    prepare: Callable[..., Any] = _as_is
    outputs: Callable[[Any], dict] = _named_output
    call: Callable[..., Any] | None = None

    def function(self, model: keras.Model) -> Callable:
        """The traced function: inputs -> prepare -> model (inference mode) -> outputs."""

        def serve(*inputs):
            if self.call is not None:
                return self.call(*inputs)
            return self.outputs(model(self.prepare(*inputs), training=False))

        return serve


def write_saved_model(path: Path, model: keras.Model, signatures: dict[str, Signature]) -> Path:
    """Write a SavedModel with `signatures` (the first is `serving_default`)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, signature in signatures.items():
        archive.add_endpoint(name, signature.function(model), input_signature=signature.inputs)
    with files.atomic_path(path) as tmp:
        archive.write_out(str(tmp), verbose=False)
    return Path(path)


def write_tflite(path: Path, model: keras.Model, signature: Signature) -> Path:
    """Convert one numeric signature (TFLite has no string or image-decoding ops) to .tflite."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = write_saved_model(Path(tmp) / "saved", model, {"serving_default": signature})
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        flatbuffer = converter.convert()
    files.write_bytes(path, flatbuffer)
    return Path(path)
