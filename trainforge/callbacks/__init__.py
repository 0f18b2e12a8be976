"""Callbacks: objects with ``on_<event>(state)`` methods that observe and steer a Recipe or Trainer."""

from .call_recipe import CallRecipe
from .counter import Counter
from .metrics import EpochMetricAvg
from .optimizer import Optimizer
from .stdout import StdoutLogger

__all__ = ["CallRecipe", "Counter", "EpochMetricAvg", "Optimizer", "StdoutLogger"]
