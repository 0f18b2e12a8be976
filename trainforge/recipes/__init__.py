"""Prebuilt recipes (Torchélie's): ``TrainAndTest``, ``TrainAndCall``, ``Classification``,
``CrossEntropyClassification`` — each a composition of the engine's ``Recipe`` and the callbacks."""

from __future__ import annotations

from .classification import Classification, CrossEntropyClassification
from .train_and_test import TrainAndCall, TrainAndTest

__all__ = ["Classification", "CrossEntropyClassification", "TrainAndCall", "TrainAndTest"]
