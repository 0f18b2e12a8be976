"""Task trainers: Trainer subclasses for classification, segmentation, metric learning and detection,
registered under TorchOk's names (``ClassificationTask``...) and usable under Kornia's
(``ImageClassifierTrainer``...)."""

from __future__ import annotations

from .base import Task
from .classification import ClassificationTask, ImageClassifierTrainer
from .detection import ObjectDetectionTask, ObjectDetectionTrainer
from .metric_learning import MarginLearnTask, MetricLearningTask, PairwiseLearnTask, TripletLearnTask
from .onnx import ONNXTask
from .segmentation import SegmentationTask, SemanticSegmentationTrainer

__all__ = [
    "ClassificationTask",
    "ImageClassifierTrainer",
    "MarginLearnTask",
    "MetricLearningTask",
    "ONNXTask",
    "ObjectDetectionTask",
    "ObjectDetectionTrainer",
    "PairwiseLearnTask",
    "SegmentationTask",
    "SemanticSegmentationTrainer",
    "Task",
    "TripletLearnTask",
]
