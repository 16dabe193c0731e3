"""dltoolkit: Keras 3 task recipes that train, report and export for TF Serving.

The recipe classes are imported on first use, so `import dltoolkit` stays cheap; the Keras
classes a run's model.keras holds are registered as soon as Keras is imported.
"""

import importlib
import os

import wrapt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.2.0"

wrapt.register_post_import_hook(lambda _: importlib.import_module("dltoolkit.layers"), "keras")

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
