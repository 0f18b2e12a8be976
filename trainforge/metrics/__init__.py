"""Metrics: torchmetrics classes built by name and managed per phase and per evaluation loader."""

from __future__ import annotations

from .build import build_metric, find_metric_class, list_metrics, snake_name
from .manager import PHASES, MetricsManager, MetricSpec, Phase, non_scalars, phase_prefix, scalars, to_host

__all__ = [
    "PHASES",
    "MetricSpec",
    "MetricsManager",
    "Phase",
    "build_metric",
    "find_metric_class",
    "list_metrics",
    "non_scalars",
    "phase_prefix",
    "scalars",
    "snake_name",
    "to_host",
]

from . import registered as _registered  # noqa: F401 — fills the registries
