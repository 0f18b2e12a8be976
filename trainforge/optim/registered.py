"""Fills ``registry("optimizers")`` and ``registry("schedulers")`` lazily: torch.optim and timm optimizers,
our named schedules and torch's scheduler classes. timm is imported only when its names are asked for."""

from __future__ import annotations

from typing import Any

from ..errors import RegistryError
from ..registry import _first_line, registry
from .optimizers import _torch_optimizers, list_optimizers
from .schedulers import NAMED_SCHEDULES, _torch_schedulers, list_schedulers

_SCHEDULE_HELP = {
    "constant": "constant learning rate after an optional linear warmup",
    "linear": "linear decay to min_lr_ratio after an optional linear warmup",
    "cosine": "cosine decay to min_lr_ratio after an optional linear warmup",
    "polynomial": "polynomial decay (power) to min_lr_ratio after an optional linear warmup",
}


def _optimizer(name: str) -> Any:
    key = name.lower()
    torch_classes = _torch_optimizers()
    if key in torch_classes:
        return torch_classes[key]
    if key not in list_optimizers():
        raise RegistryError(name)
    import timm.optim

    return timm.optim.get_optimizer_class(key, bind_defaults=False)


def _optimizer_names() -> list[str]:
    spelled = {cls.__name__.lower(): cls.__name__ for cls in _torch_optimizers().values()}
    return [spelled.get(name, name) for name in list_optimizers()]


def _scheduler(name: str) -> Any:
    key = name.lower()
    if key in NAMED_SCHEDULES:
        return key  # built by build_scheduler, which sizes it with the run's step count
    return _torch_schedulers()[key]


def _scheduler_help(name: str) -> str:
    found = _scheduler(name)
    return _SCHEDULE_HELP[found] if isinstance(found, str) else _first_line(found)


registry("optimizers").add_source(_optimizer_names, _optimizer)
registry("schedulers").add_source(list_schedulers, _scheduler, _scheduler_help)
