"""Loggers: one small ``Logger`` protocol (metrics, hyper-parameters, figures, images) with JSONL,
TensorBoard, MLflow and visdom back-ends, plus terminal callbacks (``ConsoleLogger``, ``Throughput``).
Back-end packages are imported only when a logger that needs them is built."""

from __future__ import annotations

from .base import BaseLogger, Logger, flatten_params, float_metrics, is_main_process, to_float
from .build import build_logger, list_loggers
from .console import ConsoleLogger, RateWindow, Throughput, format_metrics
from .figures import image_grid, log_confusion_matrix
from .jsonl import JsonlLogger, read_metrics_jsonl
from .mlflow_logger import MLflowLogger
from .tensorboard import TensorBoardLogger
from .visdom_logger import VisdomLogger

__all__ = [
    "BaseLogger",
    "ConsoleLogger",
    "JsonlLogger",
    "Logger",
    "MLflowLogger",
    "RateWindow",
    "TensorBoardLogger",
    "Throughput",
    "VisdomLogger",
    "build_logger",
    "flatten_params",
    "float_metrics",
    "format_metrics",
    "image_grid",
    "is_main_process",
    "list_loggers",
    "log_confusion_matrix",
    "read_metrics_jsonl",
    "to_float",
]

from . import registered as _registered  # noqa: F401 — fills the registries
