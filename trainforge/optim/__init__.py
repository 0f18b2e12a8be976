"""Optimizers and learning-rate schedulers built by name (torch and timm), with checked arguments."""

from __future__ import annotations

from .optimizers import build_optimizer, list_optimizers, trainable_parameters
from .schedulers import (
    NAMED_SCHEDULES,
    Schedule,
    build_scheduler,
    count_optimizer_steps,
    has_learning_rate,
    list_schedulers,
    scheduler_needs_metric,
)

__all__ = [
    "NAMED_SCHEDULES",
    "Schedule",
    "build_optimizer",
    "build_scheduler",
    "count_optimizer_steps",
    "has_learning_rate",
    "list_optimizers",
    "list_schedulers",
    "scheduler_needs_metric",
    "trainable_parameters",
]

from . import registered as _registered  # noqa: F401 — fills the registries
