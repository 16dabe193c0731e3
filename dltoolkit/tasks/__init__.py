"""The user-facing recipe classes, one module each."""

from dltoolkit.tasks.agent import Agent
from dltoolkit.tasks.anomaly_detector import AnomalyDetector
from dltoolkit.tasks.forecaster import Forecaster
from dltoolkit.tasks.image_classifier import ImageClassifier
from dltoolkit.tasks.image_generator import ImageGenerator
from dltoolkit.tasks.image_segmenter import ImageSegmenter
from dltoolkit.tasks.node_classifier import NodeClassifier
from dltoolkit.tasks.object_detector import ObjectDetector
from dltoolkit.tasks.speech_recognizer import SpeechRecognizer
from dltoolkit.tasks.summarizer import Summarizer
from dltoolkit.tasks.text_classifier import TextClassifier
from dltoolkit.tasks.text_generator import TextGenerator

__all__ = [
    "Agent",
    "AnomalyDetector",
    "Forecaster",
    "ImageClassifier",
    "ImageGenerator",
    "ImageSegmenter",
    "NodeClassifier",
    "ObjectDetector",
    "SpeechRecognizer",
    "Summarizer",
    "TextClassifier",
    "TextGenerator",
]
