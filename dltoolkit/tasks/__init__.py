"""The user-facing recipe classes, one module each."""

from dltoolkit.tasks.forecaster import Forecaster
from dltoolkit.tasks.image_classifier import ImageClassifier

__all__ = ["Forecaster", "ImageClassifier"]
