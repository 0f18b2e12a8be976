"""trainforge: train and fine-tune PyTorch vision models.

Import stays light: only torch and the engine load here; heavy back-ends (torchmetrics, timm, kornia,
albumentations, tensorboard, onnx) load when a feature that needs them is used.

>>> import trainforge
>>> trainforge.Recipe.__name__
'Recipe'
"""

from __future__ import annotations

from ._version import __version__
from .callbacks import CallRecipe, Counter, EpochMetricAvg, Optimizer, StdoutLogger
from .engine import EVENTS, Callback, CallbackError, Recipe, State
from .trainer import Trainer
from .training_config import TrainingConfig

__all__ = [
    "EVENTS",
    "CallRecipe",
    "Callback",
    "CallbackError",
    "Counter",
    "EpochMetricAvg",
    "Optimizer",
    "Recipe",
    "State",
    "StdoutLogger",
    "Trainer",
    "TrainingConfig",
    "__version__",
]
