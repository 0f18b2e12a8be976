"""Losses: any ``torch.nn`` loss or a registered one by name, and ``JointLoss`` (weighted, mapped terms)."""

from __future__ import annotations

from .joint import DEFAULT_MAPPING, JointLoss
from .registry import build_loss, list_losses, loss_class, normalize_loss_name, register_loss, snake_name

__all__ = [
    "DEFAULT_MAPPING",
    "JointLoss",
    "build_loss",
    "list_losses",
    "loss_class",
    "normalize_loss_name",
    "register_loss",
    "snake_name",
]

from . import metric_learning as _metric_learning  # noqa: F401 — registers contrastive and triplet losses
from . import registered as _registered  # noqa: F401 — fills the registries
from . import segmentation as _segmentation  # noqa: F401 — registers Dice and CE + Dice
