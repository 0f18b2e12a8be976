"""The one ``Logger`` protocol every experiment logger follows, a base class with no-op optional methods,
and the small conversions loggers share (host floats, flat hyper-parameters, main-process check)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Progress counters that loggers and reports do not treat as metrics.
COUNTERS: frozenset[str] = frozenset({"epoch", "global_step", "epoch_step"})


@runtime_checkable
class Logger(Protocol):
    """What the trainer calls on every logger. Metric names already carry their phase (``train/loss``,
    ``valid/accuracy``, ``lr``); ``phase`` and ``epoch`` are context for loggers that record it."""

    def log_metrics(
        self, metrics: Mapping[str, float], step: int, phase: str | None = None, *, epoch: int | None = None
    ) -> None: ...

    def log_hyperparams(self, params: Mapping[str, Any], final_metrics: Mapping[str, float] | None = None) -> None: ...

    def log_figure(self, tag: str, figure: Figure, step: int) -> None: ...

    def log_images(self, tag: str, images: Tensor, step: int) -> None: ...

    def close(self) -> None: ...


class BaseLogger:
    """``Logger`` with the optional methods as no-ops; subclasses implement ``log_metrics`` at least.

    A logger is also a recipe callback (Torchélie's way): added to a ``Recipe``, it writes what the
    recipe posts to ``state.metrics`` every ``log_every`` steps (``-1``: at epoch ends only), at each
    epoch end and after each nested evaluation (``eval_end``), under ``prefix/`` when a prefix is set.
    Numbers go to ``log_metrics``; image tensors (``C, H, W`` or ``N, C, H, W``, e.g. a grid a
    ``TrainAndCall`` function returns) to ``log_images``.
    The loop's counters are the step, not metrics. A value still the same object as when last logged
    (a test metric copied by ``CallRecipe``, an image grid) is not logged again: curves get a point per
    new value, not a flat copy at each cadence. In a recipe run by ``CallRecipe`` the step is the
    calling recipe's, so test curves line up with training ones. ``fit_end`` flushes. Inside a
    ``Trainer`` these hooks are not used: the trainer calls the logger itself.

    >>> class Printer(BaseLogger):
    ...     def log_metrics(self, metrics, step, phase=None, *, epoch=None): print(step, metrics)
    >>> import torch
    >>> from trainforge.engine import Recipe
    >>> recipe = Recipe(lambda x: None, [1, 2, 3])
    >>> post = type("Post", (), {"on_batch_end": lambda self, s: s.metrics.update(loss=s.global_step / 4)})
    >>> recipe.callbacks.add(post())
    >>> recipe.callbacks.add(Printer().every(2, prefix="train"))
    >>> _ = recipe.run(1)
    2 {'train/loss': 0.5}
    3 {'train/loss': 0.75}
    """

    log_every: int = 10  # recipe-callback cadence; see ``every``
    prefix: str = ""
    group = "epilogue"  # after every callback that posts metrics at the same event

    def every(self, log_every: int = 10, prefix: str = "") -> BaseLogger:
        """Set the recipe-callback cadence (``-1``: epoch ends only) and name prefix; returns ``self``."""
        if log_every == 0 or log_every < -1:
            raise ValueError(f"log_every must be a positive number of steps or -1 (epoch ends only), got {log_every}")
        self.log_every = int(log_every)
        self.prefix = prefix
        return self

    def on_batch_end(self, state: Any) -> None:
        if self.log_every > 0 and state.global_step % self.log_every == 0:
            self._log_state(state)

    def on_epoch_end(self, state: Any) -> None:
        self._log_state(state)

    def on_eval_end(self, state: Any) -> None:
        self._log_state(state)  # a nested test run (CallRecipe) just posted its results

    def on_fit_end(self, state: Any) -> None:
        self.flush()

    def _log_state(self, state: Any) -> None:
        caller = state.extra.get("caller")  # set by CallRecipe on a nested recipe's state
        step = (caller if caller is not None else state).global_step
        prefix = f"{self.prefix}/" if self.prefix else ""
        numbers: dict[str, float] = {}
        last = self.__dict__.setdefault("_last_logged", {})
        for name, value in state.metrics.items():
            if name in COUNTERS:
                continue
            if isinstance(value, (float, Tensor)):  # a view (RunningMean) changes in place: always logged
                if last.get(name) is value:
                    continue
                last[name] = value
            if _is_image(value):
                self.log_images(prefix + name, value if value.dim() == 4 else value.unsqueeze(0), step)
                continue
            number = to_float(value)  # a device tensor: host sync, at this cadence only
            if number is not None:
                numbers[prefix + name] = number
        if numbers:
            self.log_metrics(numbers, step=step, phase=self.prefix or None, epoch=state.epoch)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int, phase: str | None = None, *, epoch: int | None = None
    ) -> None:
        raise NotImplementedError

    def log_hyperparams(self, params: Mapping[str, Any], final_metrics: Mapping[str, float] | None = None) -> None:
        """Record the run's hyper-parameters and, at the end, its final metrics (no-op here)."""

    def log_figure(self, tag: str, figure: Figure, step: int) -> None:
        """Record a matplotlib figure (no-op here)."""

    def log_images(self, tag: str, images: Tensor, step: int) -> None:
        """Record a batch of images ``(N, C, H, W)`` in [0, 1] (no-op here)."""

    def flush(self) -> None:
        """Hand buffered records to the OS; the trainer calls it before every checkpoint (no-op here)."""

    def close(self) -> None:
        """Flush and release files and connections (no-op here)."""

    def __enter__(self) -> BaseLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_main_process() -> bool:
    """True unless a launcher (torchrun, accelerate) says this process is not rank 0."""
    return int(os.environ.get("RANK", "0")) == 0


def to_float(value: Any) -> float | None:
    """A host float for a number, a one-element tensor or an object with ``item()``; else ``None``.

    Converting a device tensor is a host sync: call this at the logging cadence only.

    >>> import torch
    >>> to_float(torch.tensor(0.25)), to_float(3), to_float(torch.zeros(2)), to_float("x")
    (0.25, 3.0, None, None)
    """
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    numel = getattr(value, "numel", None)
    if numel is not None and numel() != 1:
        return None
    item = getattr(value, "item", None)
    if item is None:
        return None
    result = item()
    return float(result) if isinstance(result, (int, float)) else None


def float_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``metrics`` that convert to host floats (see ``to_float``), in order."""
    floats = {}
    for name, value in metrics.items():
        number = to_float(value)
        if number is not None:
            floats[name] = number
    return floats


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested hyper-parameters as ``{"a.b": value}`` with values a logger accepts (others as ``str``).

    >>> flatten_params({"optimizer": {"name": "SGD", "lr": 0.1}, "layers": [2, 3], "seed": None})
    {'optimizer.name': 'SGD', 'optimizer.lr': 0.1, 'layers': '[2, 3]', 'seed': 'None'}
    """
    flat: dict[str, bool | int | float | str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def infer_phase(names: Any) -> str:
    """The phase prefix all ``names`` share (``train`` for ``train/loss``, ``train/accuracy``), else ``""``.

    >>> infer_phase(["valid/loss", "valid/accuracy"]), infer_phase(["train/loss", "lr"])
    ('valid', '')
    """
    prefixes = {name.split("/", 1)[0] if "/" in name else "" for name in names}
    return prefixes.pop() if len(prefixes) == 1 else ""


def _is_image(value: Any) -> bool:
    """A float tensor shaped ``(C, H, W)`` or ``(N, C, H, W)`` with 1 or 3 channels."""
    dim = getattr(value, "dim", None)
    if dim is None or not hasattr(value, "is_floating_point") or not value.is_floating_point():
        return False
    d = dim()
    return (d == 3 and value.shape[0] in (1, 3)) or (d == 4 and value.shape[1] in (1, 3))
