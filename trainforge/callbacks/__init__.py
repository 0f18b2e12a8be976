"""Callbacks: objects with ``on_<event>(state)`` methods that observe and steer a Recipe or Trainer."""

from .call_recipe import CallRecipe
from .checkpoint import ModelCheckpoint
from .counter import Counter
from .early_stopping import EarlyStopping
from .ema import EMA
from .freezing import FreezeBatchNorm, FreezeUnfreeze, LayerFreezer, freeze_batchnorm, set_batchnorm_eval
from .metrics import EpochMetricAvg
from .onnx_checkpoint import ModelCheckpointWithOnnx
from .optimizer import Optimizer
from .stdout import StdoutLogger

__all__ = [
    "EMA",
    "CallRecipe",
    "Counter",
    "EarlyStopping",
    "EpochMetricAvg",
    "FreezeBatchNorm",
    "FreezeUnfreeze",
    "LayerFreezer",
    "ModelCheckpoint",
    "ModelCheckpointWithOnnx",
    "Optimizer",
    "StdoutLogger",
    "freeze_batchnorm",
    "set_batchnorm_eval",
]

from . import registered as _registered  # noqa: F401 — fills the registries
