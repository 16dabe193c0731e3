"""The user-facing recipe classes, one module each."""

from dltoolkit.tasks.anomaly_detector import AnomalyDetector
from dltoolkit.tasks.forecaster import Forecaster
from dltoolkit.tasks.image_classifier import ImageClassifier
from dltoolkit.tasks.node_classifier import NodeClassifier

__all__ = ["AnomalyDetector", "Forecaster", "ImageClassifier", "NodeClassifier"]
