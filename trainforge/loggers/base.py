"""The one ``Logger`` protocol every experiment logger follows, a base class with no-op optional methods,
and the small conversions loggers share (host floats, flat hyper-parameters, main-process check)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor

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
    """``Logger`` with the optional methods as no-ops; subclasses implement ``log_metrics`` at least."""

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
