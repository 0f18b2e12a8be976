"""``build_logger``: every logger by name, for configs (``logger: {name, params}``)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from ..errors import RegistryError
from .console import ConsoleLogger
from .jsonl import JsonlLogger
from .mlflow_logger import MLflowLogger
from .tensorboard import TensorBoardLogger
from .visdom_logger import VisdomLogger

#: Name to class. ``console`` builds a callback (add it to the trainer's callbacks), the others are
#: ``Logger``s the trainer calls at its logging cadence.
LOGGERS: dict[str, Callable[..., Any]] = {
    "console": ConsoleLogger,
    "jsonl": JsonlLogger,
    "mlflow": MLflowLogger,
    "tensorboard": TensorBoardLogger,
    "visdom": VisdomLogger,
}


def list_loggers() -> list[str]:
    """Names ``build_logger`` accepts.

    >>> list_loggers()
    ['console', 'jsonl', 'mlflow', 'tensorboard', 'visdom']
    """
    return sorted(LOGGERS)


def build_logger(name: str, **params: Any) -> Any:
    """Build the logger called ``name`` with ``params``; an unknown name lists close matches.

    >>> build_logger("console", print_steps=10).print_steps
    10
    >>> build_logger("tensorbord")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.RegistryError: unknown logger 'tensorbord'. Did you mean: tensorboard? Known loggers: ...
    """
    factory = LOGGERS.get(name)
    if factory is None:
        close = difflib.get_close_matches(name.lower(), list(LOGGERS), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise RegistryError(f"unknown logger {name!r}.{hint} Known loggers: {', '.join(list_loggers())}")
    return factory(**params)
