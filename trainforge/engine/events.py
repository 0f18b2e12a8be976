"""The one event vocabulary of trainforge, and the check that a callback only names real events."""

from __future__ import annotations

import difflib
from typing import Any

#: Every event, in the order a plain run first fires them. ``eval_start``/``eval_end`` are fired around
#: nested evaluation (``CallRecipe``, ``Trainer.evaluate``), ``eval_batch_start``/``eval_batch_end``
#: around each evaluation batch by the Trainer, and ``checkpoint`` after a checkpoint is committed; the
#: ``Recipe`` loop itself fires the other seven.
EVENTS: tuple[str, ...] = (
    "fit_start",
    "epoch_start",
    "batch_start",
    "batch_end",
    "epoch_end",
    "eval_start",
    "eval_batch_start",
    "eval_batch_end",
    "eval_end",
    "checkpoint",
    "fit_end",
    "exception",
)


class Callback:
    """Optional base class: every hook exists as a no-op, so subclasses override only what they need.

    Inherited no-op hooks are not dispatched, so subclassing costs nothing per batch. ``state`` is the
    recipe's ``State`` (see its docstring for what it holds at each event).

    >>> class StopAfter(Callback):
    ...     def __init__(self, steps): self.steps = steps
    ...     def on_batch_end(self, state):
    ...         state.should_stop = state.global_step >= self.steps
    >>> sorted(hook_methods(StopAfter(3)))
    ['batch_end']
    """

    def on_fit_start(self, state: Any) -> None: ...
    def on_epoch_start(self, state: Any) -> None: ...
    def on_batch_start(self, state: Any) -> None: ...
    def on_batch_end(self, state: Any) -> None: ...
    def on_epoch_end(self, state: Any) -> None: ...
    def on_eval_start(self, state: Any) -> None: ...
    def on_eval_batch_start(self, state: Any) -> None: ...
    def on_eval_batch_end(self, state: Any) -> None: ...
    def on_eval_end(self, state: Any) -> None: ...
    def on_checkpoint(self, state: Any) -> None: ...
    def on_fit_end(self, state: Any) -> None: ...
    def on_exception(self, state: Any) -> None: ...


class CallbackError(TypeError):
    """A callback declares a hook that no event fires (usually a typo)."""


def hook_methods(callback: Any) -> dict[str, Any]:
    """Return ``{event: bound method}`` for every ``on_<event>`` of ``callback``.

    Raises ``CallbackError`` for any public callable named ``on_*`` that matches no event, listing the
    valid names, so a misspelled hook fails at registration instead of silently never running. A hook
    set to ``None`` on the instance is left out: a callback that does not need an event in this run
    (a check due only on accelerators, say) opts out of it at no cost per batch.

    >>> class Printer:
    ...     def on_epoch_end(self, state): ...
    >>> sorted(hook_methods(Printer()))
    ['epoch_end']
    """
    hooks: dict[str, Any] = {}
    for attr in dir(callback):
        if not attr.startswith("on_"):
            continue
        method = getattr(callback, attr)
        if not callable(method) or getattr(type(callback), attr, None) is getattr(Callback, attr, 0):
            continue  # not a method, or Callback's inherited no-op
        event = attr[3:]
        if event not in EVENTS:
            close = difflib.get_close_matches(attr, [f"on_{e}" for e in EVENTS], n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise CallbackError(
                f"{type(callback).__name__}.{attr} matches no event.{hint} "
                f"Valid hooks: {', '.join('on_' + e for e in EVENTS)}. "
                "Rename the method, or drop the 'on_' prefix if it is not a hook."
            )
        hooks[event] = method
    return hooks
