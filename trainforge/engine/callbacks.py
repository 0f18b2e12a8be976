"""Ordered callback groups and their dispatch lists, built once per change and never per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .events import EVENTS, CallbackError, hook_methods
from .state import State

GROUPS: tuple[str, ...] = ("prologue", "middle", "epilogue")


class CallbackList:
    """Callbacks in three ordered groups: ``prologue`` runs first, then ``middle``, then ``epilogue``.

    Within a group, callbacks run in the order they were added. ``dispatch[event]`` is a tuple of bound
    methods rebuilt only when callbacks are added or removed.

    >>> class Hello:
    ...     def on_fit_start(self, state): print("hello")
    >>> cbs = CallbackList()
    >>> cbs.add_callbacks([Hello()])
    >>> cbs.fire("fit_start", State())
    hello

    ``add`` (alias ``add_callback``) takes one callback, ``add_callbacks`` (alias ``extend``) a list.
    A list given to ``add``, and an object with no ``on_<event>`` method (a function, a string, an
    optimizer instead of ``Optimizer(opt)``), are errors: they would never run.
    """

    def __init__(self) -> None:
        self._groups: dict[str, list[Any]] = {g: [] for g in GROUPS}
        self.dispatch: dict[str, tuple[Callable[[State], Any], ...]] = {e: () for e in EVENTS}

    def add(self, callback: Any, group: str | None = None) -> None:
        """Add one callback; raises if it has a hook that names no event or the group is unknown.

        Without ``group``, a callback's own ``group`` attribute decides (checkpointing declares
        ``"epilogue"`` so it saves after every other callback's epoch-end work), else ``"middle"``.
        """
        if isinstance(callback, (list, tuple, set, frozenset, Iterator)):
            raise CallbackError(
                f"add() takes one callback, got a {type(callback).__name__} of {_count(callback)}; "
                "use add_callbacks([...]) for several"
            )
        group = group or getattr(callback, "group", "middle")
        if group not in self._groups:
            raise ValueError(f"unknown callback group {group!r}; expected one of {', '.join(GROUPS)}")
        if not hook_methods(callback):  # also validates every hook before anything changes
            raise CallbackError(
                f"{_describe(callback)} is not a callback: it has no on_<event>(state) method, so it would "
                f"never run. Valid hooks: {', '.join('on_' + e for e in EVENTS)}. Wrap it in the callback "
                "meant for it (an optimizer goes in trainforge.callbacks.Optimizer(opt))."
            )
        self._groups[group].append(callback)
        self._rebuild()

    add_callback = add

    def extend(self, callbacks: Iterable[Any], group: str | None = None) -> None:
        """Add several callbacks, in order; all are validated before any is added."""
        if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Iterable) or hook_methods(callbacks):
            raise CallbackError(
                f"add_callbacks() takes a list of callbacks, got {_describe(callbacks)}; "
                "use add_callback(cb) for one"
            )
        callbacks = list(callbacks)
        for callback in callbacks:
            if isinstance(callback, (list, tuple, set, frozenset)):
                raise CallbackError(f"add_callbacks() got a nested {type(callback).__name__}; pass one flat list")
            if not hook_methods(callback):
                raise CallbackError(
                    f"add_callbacks(): {_describe(callback)} is not a callback: it has no on_<event>(state) "
                    "method, so it would never run"
                )
        for callback in callbacks:
            self.add(callback, group)

    add_callbacks = extend

    def remove(self, callback: Any) -> None:
        """Remove a callback previously added (compared by identity)."""
        for members in self._groups.values():
            for i, member in enumerate(members):
                if member is callback:
                    del members[i]
                    self._rebuild()
                    return
        raise ValueError(f"{type(callback).__name__} is not among this recipe's callbacks")

    def __iter__(self):
        for group in GROUPS:
            yield from self._groups[group]

    def __len__(self) -> int:
        return sum(len(m) for m in self._groups.values())

    def fire(self, event: str, state: State) -> None:
        for hook in self.dispatch[event]:
            hook(state)

    def _rebuild(self) -> None:
        lists: dict[str, list[Callable[[State], Any]]] = {e: [] for e in EVENTS}
        for callback in self:
            for event, method in hook_methods(callback).items():
                lists[event].append(method)
        self.dispatch = {e: tuple(m) for e, m in lists.items()}

    # -- state of stateful callbacks -------------------------------------------------------------
    def _keyed(self) -> dict[str, Any]:
        """Stateful callbacks keyed by class name and occurrence, e.g. ``EpochMetricAvg[1]``."""
        seen: dict[str, int] = {}
        keyed: dict[str, Any] = {}
        for callback in self:
            if not hasattr(callback, "state_dict"):
                continue
            name = type(callback).__name__
            index = seen.get(name, 0)
            seen[name] = index + 1
            keyed[f"{name}[{index}]"] = callback
        return keyed

    def state_dict(self) -> dict[str, Any]:
        return {key: cb.state_dict() for key, cb in self._keyed().items()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        keyed = self._keyed()
        missing = sorted(set(keyed) - set(state))
        unexpected = sorted(set(state) - set(keyed))
        if strict and (missing or unexpected):
            raise KeyError(
                f"callback state does not match this recipe's callbacks: missing {missing}, "
                f"unexpected {unexpected}. Add the same callbacks as the saved run, or load with strict=False."
            )
        for key, callback in keyed.items():
            if key in state:
                callback.load_state_dict(state[key])


def _count(items: Any) -> str:
    try:
        return f"{len(items)} items"
    except TypeError:
        return "items"


def _describe(obj: Any) -> str:
    """``str 'loss'``, ``function <lambda>``; a long or multi-line repr is left out."""
    name = type(obj).__name__
    text = getattr(obj, "__qualname__", None) or repr(obj)
    return name if len(text) > 60 or "\n" in text else f"{name} {text}"
