"""The user-facing recipe classes, one module each."""

from dltoolkit.tasks.image_classifier import ImageClassifier

__all__ = ["ImageClassifier"]
