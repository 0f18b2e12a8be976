from __future__ import annotations

import io
import math

import pytest
import torch

from trainforge.errors import ConfigError, RegistryError
from trainforge.optim import build_scheduler, count_optimizer_steps, list_schedulers, scheduler_needs_metric


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(optimizer, scheduler, steps: int) -> list[float]:
    """The lr each of ``steps`` optimizer steps runs with, stepping the scheduler after each."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_linear_warmup_then_decay_to_zero():
    opt = _optimizer(2.0)
    lrs = _lrs(opt, build_scheduler("linear", opt, total_steps=10, warmup_steps=2), 13)
    # warmup start, mid warmup, end of warmup, midpoint of decay (4 of 8 steps), end, after the end
    assert lrs[0] == 0.0 and lrs[1] == 1.0 and lrs[2] == 2.0
    assert lrs[6] == pytest.approx(1.0) and lrs[10] == 0.0 and lrs[12] == 0.0


def test_cosine_to_min_lr_ratio():
    opt = _optimizer(1.0)
    lrs = _lrs(opt, build_scheduler("Cosine", opt, total_steps=10, warmup_steps=2, min_lr_ratio=0.1), 11)
    assert lrs[0] == 0.0 and lrs[2] == 1.0
    assert lrs[4] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))  # a quarter of the decay
    assert lrs[6] == pytest.approx(0.55)  # midpoint: halfway between 1 and 0.1
    assert lrs[10] == pytest.approx(0.1)


def test_polynomial_power_and_warmup_ratio():
    opt = _optimizer(1.0)
    # warmup_ratio 0.2 of 10 steps = 2 warmup steps, then (1 - progress) ** 2 over 8 steps
    lrs = _lrs(opt, build_scheduler("polynomial", opt, total_steps=10, warmup_ratio=0.2, power=2.0), 11)
    assert lrs[:3] == [0.0, 0.5, 1.0]
    assert lrs[6] == pytest.approx(0.25) and lrs[8] == pytest.approx(0.0625) and lrs[10] == 0.0


def test_constant_with_warmup_start_ratio():
    opt = _optimizer(1.0)
    lrs = _lrs(opt, build_scheduler("constant", opt, total_steps=100, warmup_steps=4, warmup_start_ratio=0.2), 50)
    assert lrs[0] == pytest.approx(0.2) and lrs[2] == pytest.approx(0.6)
    assert lrs[4] == 1.0 and lrs[49] == 1.0


def test_warmup_ratio_rounds_up():
    opt = _optimizer(1.0)
    sched = build_scheduler("linear", opt, total_steps=25, warmup_ratio=0.1)
    assert sched.lr_lambdas[0].warmup_steps == 3


@pytest.mark.parametrize("name", ["linear", "cosine", "polynomial", "constant", "OneCycleLR", "StepLR"])
def test_state_dict_round_trip_gives_identical_later_lrs(name):
    params = {"StepLR": {"step_size": 3, "gamma": 0.5}, "OneCycleLR": {"max_lr": 1.0}}.get(name, {})

    def build():
        opt = _optimizer(1.0)
        return opt, build_scheduler(name, opt, total_steps=20, warmup_steps=0 if params else 4, **params)

    opt, sched = build()
    uninterrupted = _lrs(opt, sched, 16)
    opt, sched = build()
    _lrs(opt, sched, 7)
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # checkpoints load with weights_only
    opt, sched = build()
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    assert _lrs(opt, sched, 9) == uninterrupted[7:]


def test_torch_scheduler_by_name_and_total_steps_passed_on():
    opt = _optimizer(1.0)
    step = build_scheduler("steplr", opt, step_size=2, gamma=0.1)
    assert type(step).__name__ == "StepLR" and _lrs(opt, step, 3) == pytest.approx([1.0, 1.0, 0.1])
    one_cycle = build_scheduler("OneCycleLR", _optimizer(), total_steps=50, max_lr=0.1)
    assert one_cycle.total_steps == 50
    plateau = build_scheduler("ReduceLROnPlateau", _optimizer(), mode="max")
    assert scheduler_needs_metric(plateau) and not scheduler_needs_metric(step)


def test_unknown_scheduler_suggests_close_matches():
    with pytest.raises(RegistryError, match="cosine"):
        build_scheduler("cosin", _optimizer(), total_steps=10)
    with pytest.raises(RegistryError, match="StepLR"):
        build_scheduler("steplrr", _optimizer())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"total_steps": 10, "warmup_steps": 11}, "warmup_steps=11 exceeds total_steps=10"),
        ({"total_steps": 10, "warmup_steps": -1}, "warmup_steps must be"),
        ({"total_steps": -5}, "total_steps must be"),
        ({"total_steps": 10, "min_lr_ratio": -0.1}, "min_lr_ratio must be"),
        ({"total_steps": 10, "warmup_ratio": 1.5}, "warmup_ratio must be"),
        ({"total_steps": 10, "warmup_steps": 2, "warmup_ratio": 0.1}, "not both"),
        ({"total_steps": 10, "power": 2.0}, "unexpected argument.*'power'"),
        ({}, "needs total_steps"),
    ],
)
def test_named_schedule_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_scheduler("cosine", _optimizer(), **kwargs)


def test_torch_scheduler_argument_errors():
    with pytest.raises(ConfigError, match=r"StepLR.*'step_sise'.*step_size"):
        build_scheduler("StepLR", _optimizer(), step_sise=2)
    with pytest.raises(ConfigError, match="only supported for the named schedules"):
        build_scheduler("StepLR", _optimizer(), step_size=2, warmup_steps=3)


def test_count_optimizer_steps_with_accumulation():
    assert count_optimizer_steps(10, 3, 1) == 30
    assert count_optimizer_steps(10, 3, 4) == 9  # 4 + 4 + a partial 2 stepped at epoch end, per epoch
    assert count_optimizer_steps(8, 2, 4) == 4
    assert count_optimizer_steps(1, 5, 4) == 5
    with pytest.raises(ConfigError, match="accumulation"):
        count_optimizer_steps(10, 3, 0)


def test_list_schedulers():
    names = list_schedulers()
    assert names[:4] == ["constant", "linear", "cosine", "polynomial"]
    assert {"StepLR", "OneCycleLR", "ReduceLROnPlateau", "CosineAnnealingLR"} <= set(names)
    assert "LRScheduler" not in names
