"""Task trainers: Trainer subclasses for classification, segmentation, metric learning and detection,
registered under TorchOk's names (``ClassificationTask``...) and usable under Kornia's
(``ImageClassifierTrainer``...)."""

from __future__ import annotations

from .base import Task
from .classification import ClassificationTask, ImageClassifierTrainer
from .segmentation import SegmentationTask, SemanticSegmentationTrainer

__all__ = [
    "ClassificationTask",
    "ImageClassifierTrainer",
    "SegmentationTask",
    "SemanticSegmentationTrainer",
    "Task",
]
