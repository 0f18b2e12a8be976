"""Fills ``registry("callbacks")`` with the callbacks a config may name (``callbacks: [{name, params}]``)."""

from __future__ import annotations

from ..registry import registry
from .checkpoint import ModelCheckpoint
from .early_stopping import EarlyStopping
from .ema import EMA
from .freezing import FreezeBatchNorm, FreezeUnfreeze, LayerFreezer
from .onnx_checkpoint import ModelCheckpointWithOnnx

for _cls in (ModelCheckpoint, EarlyStopping, EMA, FreezeBatchNorm, FreezeUnfreeze, LayerFreezer,
             ModelCheckpointWithOnnx):
    registry("callbacks").register(_cls)
