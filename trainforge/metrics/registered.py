"""Fills ``registry("metrics")`` lazily with torchmetrics' classes (imported only when listed or fetched)."""

from __future__ import annotations

from ..registry import registry
from .build import find_metric_class, list_metrics

registry("metrics").add_source(list_metrics, find_metric_class)
