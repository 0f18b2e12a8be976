"""trainforge: train and fine-tune PyTorch vision models.

Import stays light: only torch and the engine load here; heavy back-ends (torchmetrics, timm, kornia,
albumentations, tensorboard, onnx) load when a feature that needs them is used.

>>> import trainforge
>>> trainforge.Recipe.__name__
'Recipe'
"""

from __future__ import annotations

from ._version import __version__
from .callbacks import (
    EMA,
    CallRecipe,
    Counter,
    EarlyStopping,
    EpochMetricAvg,
    FreezeBatchNorm,
    FreezeUnfreeze,
    LayerFreezer,
    ModelCheckpoint,
    Optimizer,
    StdoutLogger,
)
from .engine import EVENTS, Callback, CallbackError, Recipe, State
from .losses import JointLoss, build_loss
from .optim import build_optimizer, build_scheduler
from .pretrained import load_pretrained
from .trainer import Trainer
from .training_config import TrainingConfig

__all__ = [
    "EMA",
    "EVENTS",
    "CallRecipe",
    "Callback",
    "CallbackError",
    "Counter",
    "EarlyStopping",
    "EpochMetricAvg",
    "FreezeBatchNorm",
    "FreezeUnfreeze",
    "JointLoss",
    "LayerFreezer",
    "ModelCheckpoint",
    "Optimizer",
    "Recipe",
    "State",
    "StdoutLogger",
    "Trainer",
    "TrainingConfig",
    "__version__",
    "build_loss",
    "build_optimizer",
    "build_scheduler",
    "load_pretrained",
]
