"""Small pieces the Trainer's modules share: stages bound through weak references (no reference cycle
with the trainer), the run's class names, batch adapters for a user's loader, and the stand-in optimizer
of a trainer with nothing to train."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError
from .runtime import Runtime


def bind_stage(owner: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Bind ``fn`` to ``owner`` when its first parameter is ``self`` (Kornia's ``my_evaluate(self)``),
    otherwise use it as given (``preprocess(x)``, an ``nn.Module`` of augmentations)."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return fn
    return WeakBound(fn, owner) if params and params[0] == "self" else fn


class WeakBound:
    """``fn`` bound to ``owner`` through a weak reference: stored on the owner, a bound method would put
    the owner in a reference cycle with itself (freed only by a full garbage collection)."""

    __slots__ = ("__wrapped__", "_owner")

    def __init__(self, fn: Callable[..., Any], owner: Any) -> None:
        self.__wrapped__ = fn
        self._owner = weakref.ref(owner)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(self._owner(), *args, **kwargs)


def weak_method(owner: Any, name: str) -> Callable[..., Any]:
    """``getattr(owner, name)`` called through a weak reference (for what ``owner`` itself holds: its
    recipes' step functions, the checkpoint's state function), looked up at each call so a stage
    assigned on the instance later is the one run."""
    ref = weakref.ref(owner)

    def call(*args: Any, **kwargs: Any) -> Any:
        owner = ref()
        if owner is None:
            raise ReferenceError(f"the Trainer whose {name} this is was deleted; keep a reference to it while "
                                 "its recipe runs")
        return getattr(owner, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def resolve_class_names(
    given: Sequence[str] | None, train_data: Any, valid_data: Any
) -> tuple[list[str] | None, str | None]:
    """The run's class names and where they came from: the ``class_names`` argument, else the ``classes``
    attribute of the training (or first validation) data set, of a DataLoader's data set or of a
    ``Subset``'s base data set."""
    if given is not None:
        if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
            raise ConfigError(f"class_names must be a list of strings, got {type(given).__name__} {given!r}")
        names = list(given)
        bad = [(i, n) for i, n in enumerate(names) if not isinstance(n, str)]
        if bad:
            raise ConfigError(f"class_names[{bad[0][0]}] is {bad[0][1]!r}; every class name must be a string")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"class_names repeats {repeated}; each class needs its own name")
        return names, "the class_names argument"
    first_valid = next(iter(valid_data.values()), None) if isinstance(valid_data, Mapping) else valid_data
    for data, which in ((train_data, "training"), (first_valid, "validation")):
        for _ in range(8):  # DataLoader -> Subset -> ... -> the data set
            if data is None:
                break
            classes = getattr(data, "classes", None)
            if isinstance(classes, (list, tuple)) and classes:
                return [str(c) for c in classes], f"the {which} data's classes attribute"
            data = getattr(data, "dataset", None)
    return None, None


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` (never writing through a link planted there); not fsynced: written every fit."""
    from .checkpoint import atomic_file

    with atomic_file(path, durable=False) as file:
        file.write(text.encode("utf-8"))


def batch_size_of(batch: dict[str, Any]) -> int:
    x = batch["input"]
    return x.shape[0] if isinstance(x, torch.Tensor) else len(x)


class ActiveStages:
    """The optional stages ``Trainer.forward`` and ``train_step`` call (see ``Trainer._resolve_stages``)."""

    __slots__ = ("augmentations", "compute_metrics", "on_before_model", "preprocess", "run_model")


class DictBatches:
    """A user's DataLoader whose batches are tuples: each becomes ``{"input", "target", "index"}``."""

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader = loader
        self._indices: dict[tuple[int, int], torch.Tensor] = {}  # positions repeat every epoch: reuse them

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        seen = 0
        for batch in self.loader:
            kind = type(batch)
            if kind is tuple or kind is list:
                batch = {"input": batch[0], "target": batch[1]} if len(batch) > 1 else {"input": batch[0]}
            elif isinstance(batch, Mapping):
                batch = dict(batch)
            else:
                batch = {"input": batch}
            size = batch_size_of(batch)
            if "index" not in batch:
                index = self._indices.get((seen, size))
                if index is None:
                    index = self._indices[(seen, size)] = torch.arange(seen, seen + size)
                batch["index"] = index
            seen += size
            yield batch


class OnDevice:
    """A loader whose batches, as the data set yields them, are moved to the trainer's device."""

    def __init__(self, loader: Iterable[Any], runtime: Runtime) -> None:
        self.loader = loader
        self.runtime = runtime

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        if self.runtime.device.type == "cpu":
            yield from self.loader
            return
        for batch in self.loader:
            yield self.runtime.to_device(batch)


class NoOptimizer:
    """Stands in when there is nothing to train (evaluate/predict only)."""

    param_groups: list[dict[str, Any]] = [{"lr": 0.0, "params": []}]  # noqa: RUF012

    def zero_grad(self, set_to_none: bool = True) -> None: ...
    def step(self) -> None: ...
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
