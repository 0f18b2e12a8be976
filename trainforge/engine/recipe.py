"""The loop: ``Recipe(step_fn, loader)`` runs a step function over batches and fires events."""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

from ..errors import ConfigError, EmptyLoaderError
from .callbacks import CallbackList
from .state import State

StepFn = Callable[[Any], "dict[str, Any] | None"]


def to_device(obj: Any, device: torch.device, non_blocking: bool = True) -> Any:
    """Move every tensor inside nested tuples, lists and dicts to ``device``.

    >>> to_device({"x": torch.zeros(1), "n": [torch.ones(1)]}, torch.device("cpu"))["n"][0]
    tensor([1.])
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device, non_blocking) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else type(obj)(moved)
    return obj


def batch_size(batch: Any) -> int:
    """Samples in a batch: the length of its input (``batch["input"]``, ``batch[0]`` or the batch
    tensor itself); 0 when unknown. Reads shapes only: no host sync.

    >>> batch_size({"input": torch.zeros(5, 3)}), batch_size((torch.zeros(4, 2), torch.zeros(4))), batch_size(7)
    (5, 4, 0)
    """
    if type(batch) is dict or isinstance(batch, Mapping):
        batch = batch.get("input")
    elif isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    try:
        return len(batch)
    except TypeError:
        return 0


class Recipe:
    """A training loop with events, a shared ``State``, registered objects and callbacks.

    The whole loop, with the events it fires::

        fit_start
        while epoch < epochs and not should_stop:
            epoch_start
            for batch in loader (resuming mid-epoch skips consumed batches at the sampler):
                batch_start      # state.batch is on the device, state.batch_size = batch_size_fn(batch)
                outputs = step_fn(batch)
                batch_end        # state.outputs set, counters (global_step, epoch_step, samples) advanced
                if should_stop: break
            epoch_end            # only for a finished epoch
        fit_end                  # always, from finally; ``exception`` fires first on error

    ``run(epochs)`` trains up to ``epochs`` in total: after a resume it continues to that total.
    ``batch_size_fn`` counts a batch's samples (``batch_size`` by default: the length of its input).

    >>> import torch
    >>> seen = []
    >>> recipe = Recipe(lambda batch: {"sum": batch.sum()}, [torch.ones(2), torch.ones(3)])
    >>> recipe.callbacks.add(type("Log", (), {"on_batch_end": lambda self, s: seen.append(s.global_step)})())
    >>> state = recipe.run(2)
    >>> seen, state.epoch
    ([1, 2, 3, 4], 2)
    """

    def __init__(
        self, step_fn: StepFn, loader: Iterable[Any], batch_size_fn: Callable[[Any], int] = batch_size
    ) -> None:
        if not callable(step_fn):
            raise ConfigError(f"Recipe step_fn must be a function of one batch, got {type(step_fn).__name__} "
                              f"{step_fn!r:.60}; the order is Recipe(step_fn, loader)")
        self.step_fn = step_fn
        self.loader = loader
        self.batch_size_fn = batch_size_fn
        self.callbacks = CallbackList()
        self.state = State(owner=self)
        self.device: torch.device | None = None
        self._registered: dict[str, Any] = {}
        self._warned_skip = False

    # -- registration ----------------------------------------------------------------------------
    def register(self, name: str, obj: Any) -> None:
        """Make ``obj`` part of ``state_dict()`` and of device moves; reachable as ``recipe.<name>``."""
        if not name.isidentifier() or hasattr(type(self), name) or name.startswith("_"):
            raise ValueError(f"cannot register {name!r}: use an identifier that is not a Recipe attribute")
        self._registered[name] = obj
        if self.device is not None:
            self._move(name, self.device)

    def __getattr__(self, name: str) -> Any:
        registered = self.__dict__.get("_registered", {})
        if name in registered:
            return registered[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or registered object {name!r}")

    def add_callbacks(self, callbacks: Iterable[Any], group: str | None = None) -> None:
        """Same as ``recipe.callbacks.add_callbacks(callbacks)``."""
        self.callbacks.extend(callbacks, group)

    def add_callback(self, callback: Any, group: str | None = None) -> None:
        """Same as ``recipe.callbacks.add_callback(callback)``."""
        self.callbacks.add(callback, group)

    # -- devices ---------------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> Recipe:
        """Move registered modules, tensors, optimizer states and nested recipes to ``device``."""
        self.device = torch.device(device)
        for name in self._registered:
            self._move(name, self.device)
        return self

    def cpu(self) -> Recipe:
        return self.to("cpu")

    def cuda(self) -> Recipe:
        return self.to("cuda")

    def _move(self, name: str, device: torch.device) -> None:
        obj = self._registered[name]
        if isinstance(obj, (torch.nn.Module, Recipe)):
            obj.to(device)
        elif isinstance(obj, torch.Tensor):
            self._registered[name] = obj.to(device)
        elif isinstance(obj, torch.optim.Optimizer):
            for param_state in obj.state.values():
                for key, value in param_state.items():
                    if isinstance(value, torch.Tensor) and key != "step":
                        param_state[key] = value.to(device)

    # -- the loop --------------------------------------------------------------------------------
    def run(self, epochs: int) -> State:
        """Train until ``epochs`` epochs are complete in total (or ``should_stop``); return the state."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ConfigError(f"Recipe.run(epochs={epochs!r}): expected a whole number of epochs >= 0 (the total "
                              "to reach, counting epochs already done)")
        if self.loader is None or not (hasattr(self.loader, "__iter__") or hasattr(self.loader, "iter_epoch")):
            raise ConfigError(f"Recipe loader must be an iterable of batches (a DataLoader, a list), got "
                              f"{type(self.loader).__name__}")
        state = self.state
        state.max_epochs = epochs
        state.should_stop = False
        state.exception = None
        fire = self.callbacks.fire
        dispatch = self.callbacks.dispatch
        batch_start, batch_end = dispatch["batch_start"], dispatch["batch_end"]
        step_fn, device, size_fn = self.step_fn, self.device, self.batch_size_fn
        try:
            fire("fit_start", state)
            while state.epoch < epochs and not state.should_stop:
                fire("epoch_start", state)
                first = state.epoch_step
                for batch in self._epoch_batches(state.epoch, first):
                    state.batch = batch if device is None else to_device(batch, device)
                    state.batch_size = size = size_fn(batch)
                    for hook in batch_start:
                        hook(state)
                    state.outputs = step_fn(state.batch) or {}
                    state.global_step += 1
                    state.epoch_step += 1
                    state.samples += size
                    for hook in batch_end:
                        hook(state)
                    if state.should_stop:
                        break
                else:
                    if first == 0 and state.epoch_step == 0:  # a resume at an epoch's last batch has none left
                        raise EmptyLoaderError(self._no_batches(state.epoch))
                    state.epoch_complete = True
                    fire("epoch_end", state)
                    state.epoch_complete = False
                    state.epoch += 1
                    state.epoch_step = 0
        except BaseException as error:
            state.exception = error
            fire("exception", state)
            raise
        finally:
            fire("fit_end", state)
        return state

    def _no_batches(self, epoch: int) -> str:
        loader = self.loader
        if epoch > 0 and hasattr(loader, "__iter__") and iter(loader) is loader:  # not for an iter_epoch-only loader
            return (f"the loader gave no batches in epoch {epoch + 1}: {type(loader).__name__} is an iterator, used "
                    "up by the first epoch; pass a list, a DataLoader or another re-iterable of batches")
        return (f"the loader ({type(loader).__name__}) gave no batches in epoch {epoch + 1}: an empty data set, or "
                "drop_last with fewer samples than one batch")

    def _epoch_batches(self, epoch: int, start: int) -> Iterator[Any]:
        """Batches of ``epoch`` from batch ``start`` on: skipped at the sampler when the loader can."""
        iter_epoch = getattr(self.loader, "iter_epoch", None)
        if iter_epoch is not None:
            return iter_epoch(epoch, start)
        if start == 0:
            return iter(self.loader)
        if not self._warned_skip:
            warnings.warn(
                f"{type(self.loader).__name__} cannot skip batches at the sampler; resuming mid-epoch "
                f"iterates and discards {start} batches. Use trainforge.data.ResumableLoader for "
                "exact, cheap mid-epoch resume.",
                stacklevel=3,
            )
            self._warned_skip = True
        return itertools.islice(iter(self.loader), start, None)

    def reset(self) -> None:
        """Start again from epoch 0 (used by nested evaluation recipes before each call)."""
        self.state.load_progress({"epoch": 0, "global_step": 0, "epoch_step": 0, "samples": 0})
        self.state.metrics = {}

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Progress, every registered object's state and every stateful callback's state."""
        registered: dict[str, Any] = {}
        for name, obj in self._registered.items():
            if hasattr(obj, "state_dict"):
                registered[name] = obj.state_dict()
            elif isinstance(obj, torch.Tensor):
                registered[name] = obj.detach().clone()
            else:
                registered[name] = copy.deepcopy(obj)
        return {
            "progress": self.state.progress(),
            "registered": registered,
            "callbacks": self.callbacks.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore what ``state_dict()`` saved; with ``strict`` missing or unexpected keys raise."""
        saved = state_dict.get("registered", {})
        missing = sorted(set(self._registered) - set(saved))
        unexpected = sorted(set(saved) - set(self._registered))
        if strict and (missing or unexpected):
            raise KeyError(
                f"recipe state does not match: missing registered {missing}, unexpected {unexpected}. "
                "Register the same names as the saved run, or pass strict=False."
            )
        for name, value in saved.items():
            if name not in self._registered:
                continue
            obj = self._registered[name]
            if hasattr(obj, "load_state_dict"):
                obj.load_state_dict(value)
            elif isinstance(obj, torch.Tensor):
                with torch.no_grad():
                    obj.copy_(value)
            else:
                self._registered[name] = copy.deepcopy(value)
        self.callbacks.load_state_dict(state_dict.get("callbacks", {}), strict=strict)
        self.state.load_progress(state_dict["progress"])
