"""trainforge: train and fine-tune PyTorch vision models.

Import stays light: only torch and the engine load here; heavy back-ends (torchmetrics, timm, kornia,
albumentations, tensorboard, onnx) load when a feature that needs them is used.

>>> import trainforge
>>> trainforge.Recipe.__name__
'Recipe'
"""

from __future__ import annotations

from .callbacks import CallRecipe, Counter, EpochMetricAvg, Optimizer, StdoutLogger
from .engine import EVENTS, CallbackError, Recipe, State

__version__ = "0.1.0"

__all__ = [
    "EVENTS",
    "CallRecipe",
    "CallbackError",
    "Counter",
    "EpochMetricAvg",
    "Optimizer",
    "Recipe",
    "State",
    "StdoutLogger",
    "__version__",
]
