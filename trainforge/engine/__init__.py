"""The engine: a loop that knows nothing of models, devices or data formats (Torchélie's Recipe)."""

from .callbacks import GROUPS, CallbackList
from .events import EVENTS, Callback, CallbackError, hook_methods
from .recipe import Recipe, batch_size, to_device
from .state import State

__all__ = [
    "EVENTS",
    "GROUPS",
    "Callback",
    "CallbackError",
    "CallbackList",
    "Recipe",
    "State",
    "batch_size",
    "hook_methods",
    "to_device",
]
