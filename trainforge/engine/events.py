"""The one event vocabulary of trainforge, and the check that a callback only names real events."""

from __future__ import annotations

import difflib
import inspect
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
    """A callback declares a hook that no event fires (usually a typo), has no hook at all, takes other
    arguments than ``(state)``, or a list was passed where one callback is expected."""


#: Hook names of other libraries (Towhee, Keras, Lightning) and trainforge's spelling of each: a callback
#: written for them fails at registration with the name to use instead of never running.
FOREIGN_HOOKS: dict[str, str] = {
    "on_train_begin": "on_fit_start",
    "on_train_start": "on_fit_start",
    "on_train_end": "on_fit_end",
    "on_epoch_begin": "on_epoch_start",
    "on_train_epoch_start": "on_epoch_start",
    "on_train_epoch_end": "on_epoch_end",
    "on_batch_begin": "on_batch_start",
    "on_train_batch_begin": "on_batch_start",
    "on_train_batch_start": "on_batch_start",
    "on_train_batch_end": "on_batch_end",
    "on_eval_begin": "on_eval_start",
    "on_validation_start": "on_eval_start",
    "on_validation_end": "on_eval_end",
    "on_eval_batch_begin": "on_eval_batch_start",
    "on_test_batch_begin": "on_eval_batch_start",
    "on_test_batch_end": "on_eval_batch_end",
    "on_validation_batch_start": "on_eval_batch_start",
    "on_validation_batch_end": "on_eval_batch_end",
    "on_save_checkpoint": "on_checkpoint",
}


def _check_takes_state(callback: Any, attr: str, method: Any) -> None:
    """A hook is called as ``hook(state)``: one that needs other arguments fails here, not mid-run."""
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to inspect
    try:
        signature.bind(None)
    except TypeError:
        raise CallbackError(
            f"{type(callback).__name__}.{attr}{signature} cannot be called as {attr}(state): trainforge "
            "calls every hook with one argument, the recipe's State (state.batch, state.outputs, "
            "state.metrics, state.epoch...). Change it to 'def "
            f"{attr}(self, state)'."
        ) from None


def hook_methods(callback: Any) -> dict[str, Any]:
    """Return ``{event: bound method}`` for every ``on_<event>`` of ``callback``.

    Raises ``CallbackError`` for any public callable named ``on_*`` that matches no event, listing the
    valid names, so a misspelled hook fails at registration instead of silently never running. A hook
    set to ``None`` on the instance is left out: a callback that does not need an event in this run
    (a check due only on accelerators, say) opts out of it at no cost per batch. Another library's
    hook name (``on_batch_begin``, ``on_train_end``: see ``FOREIGN_HOOKS``) and a hook that cannot be
    called as ``hook(state)`` are errors naming the fix.

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
        if attr in FOREIGN_HOOKS:
            raise CallbackError(
                f"{type(callback).__name__}.{attr} is another library's hook name (Towhee, Keras or "
                f"Lightning); trainforge calls it '{FOREIGN_HOOKS[attr]}(self, state)'. Rename the method. "
                f"Valid hooks: {', '.join('on_' + e for e in EVENTS)}."
            )
        if event not in EVENTS:
            close = difflib.get_close_matches(attr, [f"on_{e}" for e in EVENTS], n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise CallbackError(
                f"{type(callback).__name__}.{attr} matches no event.{hint} "
                f"Valid hooks: {', '.join('on_' + e for e in EVENTS)}. "
                "Rename the method, or drop the 'on_' prefix if it is not a hook."
            )
        _check_takes_state(callback, attr, method)
        hooks[event] = method
    return hooks
