"""The one event vocabulary of trainforge, and the check that a callback only names real events."""

from __future__ import annotations

import difflib
from typing import Any

#: Every event, in the order a plain run first fires them. ``eval_start``/``eval_end`` are fired by
#: nested evaluation (``CallRecipe``, ``Trainer.evaluate``) and ``checkpoint`` after a checkpoint is
#: committed; the ``Recipe`` loop itself fires the other seven.
EVENTS: tuple[str, ...] = (
    "fit_start",
    "epoch_start",
    "batch_start",
    "batch_end",
    "epoch_end",
    "eval_start",
    "eval_end",
    "checkpoint",
    "fit_end",
    "exception",
)

#: Attribute names starting with ``on_`` that are not hooks (they are allowed on callbacks).
_NOT_HOOKS = frozenset()


class CallbackError(TypeError):
    """A callback declares a hook that no event fires (usually a typo)."""


def hook_methods(callback: Any) -> dict[str, Any]:
    """Return ``{event: bound method}`` for every ``on_<event>`` of ``callback``.

    Raises ``CallbackError`` for any public callable named ``on_*`` that matches no event, listing the
    valid names, so a misspelled hook fails at registration instead of silently never running.

    >>> class Printer:
    ...     def on_epoch_end(self, state): ...
    >>> sorted(hook_methods(Printer()))
    ['epoch_end']
    """
    hooks: dict[str, Any] = {}
    for attr in dir(callback):
        if not attr.startswith("on_") or attr in _NOT_HOOKS:
            continue
        method = getattr(callback, attr)
        if not callable(method):
            continue
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
