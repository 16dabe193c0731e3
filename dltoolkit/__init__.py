"""dltoolkit: Keras 3 task recipes that train, report and export for TF Serving.

The recipe classes are imported on first use, so `import dltoolkit` stays cheap; the Keras
classes a run's model.keras holds are registered as soon as Keras is imported.
"""

import importlib
import os
import sys

import wrapt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.2.0"


def _register_layers(_keras) -> None:
    """Import dltoolkit.layers, which registers the Keras classes of a run's model.keras.
    Not while KerasHub is what is importing Keras: the layers build on KerasHub, which is
    half imported then; any recipe (and `dltoolkit.load`) imports them when it needs them."""
    hub = sys.modules.get("keras_hub")
    if hub is None or not getattr(hub.__spec__, "_initializing", False):
        importlib.import_module("dltoolkit.layers")


wrapt.register_post_import_hook(_register_layers, "keras")

_LAZY = {
    "ImageClassifier": "dltoolkit.tasks",
    "Forecaster": "dltoolkit.tasks",
    "AnomalyDetector": "dltoolkit.tasks",
    "NodeClassifier": "dltoolkit.tasks",
    "ImageGenerator": "dltoolkit.tasks",
    "Summarizer": "dltoolkit.tasks",
    "Agent": "dltoolkit.tasks",
    "ImageSegmenter": "dltoolkit.tasks",
    "ObjectDetector": "dltoolkit.tasks",
    "SpeechRecognizer": "dltoolkit.tasks",
    "TextClassifier": "dltoolkit.tasks",
    "TextGenerator": "dltoolkit.tasks",
    "load": "dltoolkit.core.recipe",
    "tune": "dltoolkit.core.tuning",
    "DLToolkitError": "dltoolkit.core.errors",
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dltoolkit' has no attribute {name!r}")
