"""Learning-rate schedules: warmup + constant/linear/cosine/polynomial as resumable ``LambdaLR``s, any
``torch.optim.lr_scheduler`` class by name, and ``count_optimizer_steps`` to size them."""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Any

import torch
from torch.optim import lr_scheduler

from ..errors import ConfigError, RegistryError

#: Our named schedules and the extra parameters each takes.
NAMED_SCHEDULES: dict[str, tuple[str, ...]] = {
    "constant": ("warmup_start_ratio",),
    "linear": ("warmup_start_ratio", "min_lr_ratio"),
    "cosine": ("warmup_start_ratio", "min_lr_ratio"),
    "polynomial": ("warmup_start_ratio", "min_lr_ratio", "power"),
}


class Schedule:
    """The factor applied to each group's initial lr after ``step`` scheduler steps.

    Linear warmup from ``warmup_start_ratio`` to 1 over ``warmup_steps``, then ``kind``: "constant"
    (1), "linear"/"polynomial" (``(1 - progress) ** power`` down to ``min_lr_ratio`` at
    ``total_steps``) or "cosine" (half a cosine down to ``min_lr_ratio``); it stays at the end value
    after ``total_steps``. A callable object rather than a lambda so ``LambdaLR.state_dict()`` saves
    its fields and a resumed run uses exactly the saved schedule.

    >>> s = Schedule("cosine", total_steps=10, warmup_steps=2)
    >>> [round(s(n), 3) for n in (0, 1, 2, 6, 10, 12)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """

    def __init__(
        self,
        kind: str,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_start_ratio: float = 0.0,
        min_lr_ratio: float = 0.0,
        power: float = 1.0,
    ) -> None:
        self.kind = kind
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.warmup_start_ratio = warmup_start_ratio
        self.min_lr_ratio = min_lr_ratio
        self.power = power

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_start_ratio + (1.0 - self.warmup_start_ratio) * step / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.kind == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            shape = (1.0 - progress) ** self.power
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape


def _torch_schedulers() -> dict[str, type]:
    """``{lowercase name: class}`` for the scheduler classes ``torch.optim.lr_scheduler`` exports."""
    found = {}
    for name in dir(lr_scheduler):
        obj = getattr(lr_scheduler, name)
        if name.startswith("_") or not isinstance(obj, type) or obj is lr_scheduler.LRScheduler:
            continue
        if issubclass(obj, (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau)):
            found[name.lower()] = obj
    return found


def list_schedulers() -> list[str]:
    """Our named schedules, then torch's scheduler classes (names are matched case-insensitively).

    >>> list_schedulers()[:4]
    ['constant', 'linear', 'cosine', 'polynomial']
    >>> "OneCycleLR" in list_schedulers()
    True
    """
    return [*NAMED_SCHEDULES, *sorted(cls.__name__ for cls in _torch_schedulers().values())]


def scheduler_needs_metric(scheduler: Any) -> bool:
    """True when ``scheduler.step`` needs the monitored metric (``ReduceLROnPlateau``), so the caller must
    step it after evaluation with ``scheduler.step(value)`` instead of after each optimizer step.

    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> scheduler_needs_metric(build_scheduler("ReduceLROnPlateau", opt, patience=2))
    True
    """
    return isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)


def has_learning_rate(optimizer: Any) -> bool:
    """True when every param group of ``optimizer`` has an ``lr`` a schedule can change (a custom
    optimizer built with ``defaults={}`` has none).

    >>> params = [torch.nn.Parameter(torch.zeros(1))]
    >>> has_learning_rate(torch.optim.SGD(params, lr=0.1)), has_learning_rate(torch.optim.Optimizer(params, {}))
    (True, False)
    """
    groups = getattr(optimizer, "param_groups", None) or []
    return bool(groups) and all("lr" in group for group in groups)


def count_optimizer_steps(batches_per_epoch: int, epochs: int, accumulation: int = 1) -> int:
    """Optimizer steps in a run: ``ceil(batches_per_epoch / accumulation) * epochs``.

    A partial accumulation left at an epoch's end is stepped too (as the ``Optimizer`` callback does),
    hence the ceiling. Size ``total_steps`` of a per-step schedule with this, never with a sample count.

    >>> count_optimizer_steps(batches_per_epoch=10, epochs=3, accumulation=4)
    9
    """
    for key, value, low in (
        ("batches_per_epoch", batches_per_epoch, 0),
        ("epochs", epochs, 0),
        ("accumulation", accumulation, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"count_optimizer_steps: {key} must be an integer >= {low}, got {value!r}")
    return math.ceil(batches_per_epoch / accumulation) * epochs


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int | None = None,
    warmup_steps: int = 0,
    warmup_ratio: float = 0.0,
    **params: Any,
) -> Any:
    """Build the learning-rate scheduler ``name`` for ``optimizer``.

    Named schedules — "constant", "linear", "cosine" and "polynomial" (``power``, default 1.0), the
    last three decaying to ``min_lr_ratio`` (default 0) × the initial lr at ``total_steps`` — warm up
    linearly from ``warmup_start_ratio`` (default 0) over ``warmup_steps`` or
    ``ceil(warmup_ratio * total_steps)`` steps, and are ``LambdaLR``s, so ``state_dict`` and
    ``load_state_dict`` resume them exactly. They are meant to be stepped once per optimizer step:
    ``total_steps`` counts optimizer steps (see ``count_optimizer_steps``). As with every
    ``LambdaLR``, the first optimizer step runs at factor ``schedule(0)`` (0 with warmup from 0).

    Any other name is a ``torch.optim.lr_scheduler`` class (case-insensitive) built with ``params``;
    ``total_steps`` is passed on when the class takes it (``OneCycleLR``). Warmup is only offered for
    named schedules. ``ReduceLROnPlateau`` needs the monitored metric: see ``scheduler_needs_metric``.

    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> sched = build_scheduler("linear", opt, total_steps=4, warmup_steps=2)
    >>> lrs = []
    >>> for _ in range(5):
    ...     lrs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
    >>> lrs
    [0.0, 0.5, 1.0, 0.5, 0.0]
    >>> type(build_scheduler("StepLR", opt, step_size=10)).__name__
    'StepLR'
    """
    if not isinstance(name, str):
        raise ConfigError(f"scheduler name must be a string, got {type(name).__name__}")
    if not has_learning_rate(optimizer):
        raise ConfigError(
            f"scheduler {name!r}: {type(optimizer).__name__} has no 'lr' in its param groups (built with "
            "defaults={}?), so no schedule can change its learning rate; give it defaults={'lr': ...} or use "
            "scheduler=None"
        )
    key = name.lower()
    if key in NAMED_SCHEDULES:
        schedule = _named_schedule(key, total_steps, warmup_steps, warmup_ratio, params)
        return lr_scheduler.LambdaLR(optimizer, schedule)
    torch_classes = _torch_schedulers()
    if key not in torch_classes:
        names = [*NAMED_SCHEDULES, *torch_classes]
        close = difflib.get_close_matches(key, names, n=5, cutoff=0.5)
        spelled = {c.__name__.lower(): c.__name__ for c in torch_classes.values()}
        raise RegistryError(
            f"unknown scheduler {name!r}. Close matches: {', '.join(spelled.get(c, c) for c in close) or 'none'}. "
            "list_schedulers() gives every name."
        )
    if warmup_steps or warmup_ratio:
        raise ConfigError(
            f"scheduler {name!r}: warmup_steps/warmup_ratio are only supported for the named schedules "
            f"({', '.join(NAMED_SCHEDULES)}); use one of those, or build a SequentialLR with a LinearLR warmup."
        )
    return _build_torch_scheduler(name, torch_classes[key], optimizer, total_steps, params)


def _named_schedule(
    kind: str, total_steps: int | None, warmup_steps: int, warmup_ratio: float, params: dict[str, Any]
) -> Schedule:
    unknown = sorted(set(params) - set(NAMED_SCHEDULES[kind]))
    if unknown:
        accepted = ["total_steps", "warmup_steps", "warmup_ratio", *NAMED_SCHEDULES[kind]]
        raise ConfigError(f"scheduler {kind!r} got unexpected argument(s) {unknown}; it accepts: {', '.join(accepted)}")
    if total_steps is None:
        if kind != "constant" or warmup_ratio:
            raise ConfigError(f"scheduler {kind!r} needs total_steps (optimizer steps: use count_optimizer_steps)")
        total_steps = max(1, warmup_steps)
    _check_int("total_steps", total_steps, low=1)
    _check_int("warmup_steps", warmup_steps, low=0)
    _check_ratio("warmup_ratio", warmup_ratio)
    for ratio in ("warmup_start_ratio", "min_lr_ratio"):
        if ratio in params:
            _check_ratio(ratio, params[ratio])
    if "power" in params and (not isinstance(params["power"], (int, float)) or params["power"] <= 0):
        raise ConfigError(f"scheduler {kind!r}: power must be a positive number, got {params['power']!r}")
    if warmup_steps and warmup_ratio:
        raise ConfigError(f"scheduler {kind!r}: give warmup_steps or warmup_ratio, not both")
    if warmup_ratio:
        warmup_steps = math.ceil(warmup_ratio * total_steps)
    if warmup_steps > total_steps:
        raise ConfigError(
            f"scheduler {kind!r}: warmup_steps={warmup_steps} exceeds total_steps={total_steps}; "
            "both count optimizer steps"
        )
    return Schedule(kind, total_steps, warmup_steps, **params)


def _check_int(key: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"scheduler: {key} must be an integer >= {low}, got {value!r}")


def _check_ratio(key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"scheduler: {key} must be a number in [0, 1], got {value!r}")


def _build_torch_scheduler(
    name: str, cls: type, optimizer: torch.optim.Optimizer, total_steps: int | None, params: dict[str, Any]
) -> Any:
    signature = inspect.signature(cls).parameters
    accepted = [p for p in signature if p != "optimizer"]
    if total_steps is not None and "total_steps" in signature and "total_steps" not in params:
        params = {**params, "total_steps": total_steps}
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"scheduler {name!r} ({cls.__name__}) got unexpected argument(s) {unknown}; "
            f"it accepts: {', '.join(accepted)}"
        )
    try:
        return cls(optimizer, **params)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"scheduler {name!r} ({cls.__name__}): {error}") from error
