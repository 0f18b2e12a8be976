from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from trainforge.callbacks import CallRecipe, Counter, EpochMetricAvg, Optimizer, StdoutLogger
from trainforge.engine import Recipe


def _grads_after(model, batches, accumulation):
    model = copy.deepcopy(model)
    captured = {}

    class Capture(torch.optim.SGD):
        def step(self, closure=None):
            captured["grads"] = [p.grad.clone() for p in model.parameters()]
            return super().step(closure)

    opt = Capture(model.parameters(), lr=0.1)

    def step(batch):
        x, y = batch
        nn.functional.cross_entropy(model(x), y).backward()

    recipe = Recipe(step, batches)
    recipe.callbacks.add(Optimizer(opt, accumulation=accumulation))
    recipe.run(1)
    return captured["grads"], model


def test_accumulation_equals_one_larger_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    x, y = torch.randn(12, 8), torch.randint(0, 3, (12,))
    small = [(x[i : i + 3], y[i : i + 3]) for i in range(0, 12, 3)]
    big_grads, big_model = _grads_after(model, [(x, y)], accumulation=1)
    acc_grads, acc_model = _grads_after(model, small, accumulation=4)
    for a, b in zip(acc_grads, big_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(acc_model.parameters(), big_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_optimizer_steps_only_at_boundaries_and_flushes_partial_at_epoch_end():
    w = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=1.0)
    cb = Optimizer(opt, accumulation=2)
    recipe = Recipe(lambda b: (w * b).sum().neg().backward(), [torch.ones(1)] * 5)
    recipe.callbacks.add(cb)
    recipe.run(1)
    assert cb.steps == 3  # 2 + 2 + the partial 1 at epoch end
    assert w.item() == pytest.approx(3.0)


def test_clip_grad_norm_bounds_the_norm_and_is_posted_without_sync():
    w = nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=1.0)
    recipe = Recipe(lambda b: (w * 100).sum().backward(), [0])
    recipe.callbacks.add(Optimizer(opt, clip_grad_norm=1.0))
    state = recipe.run(1)
    assert isinstance(state.metrics["grad_norm"], torch.Tensor)
    assert state.metrics["grad_norm"].item() == pytest.approx(200.0)  # norm before clipping
    assert w.norm().item() == pytest.approx(1.0, rel=1e-5)  # the applied update was clipped


def test_scheduler_per_step_and_per_epoch():
    for interval, expected in (("step", 4), ("epoch", 2)):
        w = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([w], lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: 0.5**n)
        recipe = Recipe(lambda b, w=w: w.sum().backward(), [0, 1])
        recipe.callbacks.add(Optimizer(opt, scheduler=sched, scheduler_interval=interval))
        recipe.run(2)
        assert sched.last_epoch == expected
        assert opt.param_groups[0]["lr"] == 0.5**expected


def test_optimizer_rejects_bad_arguments():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="accumulation"):
        Optimizer(opt, accumulation=0)
    with pytest.raises(ValueError, match="scheduler_interval"):
        Optimizer(opt, scheduler_interval="batch")


def test_epoch_metric_avg_posts_lazy_running_mean_per_batch_and_float_at_epoch_end():
    seen = []
    recipe = Recipe(lambda b: {"loss": torch.tensor(b)}, [1.0, 2.0, 6.0])
    recipe.callbacks.add(EpochMetricAvg("loss"))
    spy = type("Spy", (), {"on_batch_end": lambda self, s: seen.append(float(s.metrics["loss"]))})()
    recipe.callbacks.add(spy)
    state = recipe.run(1)
    assert seen == [1.0, 1.5, 3.0]
    assert state.metrics["loss"] == 3.0 and isinstance(state.metrics["loss"], float)


def test_epoch_metric_avg_names_missing_output():
    recipe = Recipe(lambda b: {"other": torch.tensor(1.0)}, [0])
    recipe.callbacks.add(EpochMetricAvg("loss"))
    with pytest.raises(KeyError, match="returned no 'loss'"):
        recipe.run(1)


def test_counter_and_stdout_logger_cadence():
    out = io.StringIO()
    recipe = Recipe(lambda b: {"loss": torch.tensor(float(b))}, list(range(5)))
    recipe.callbacks.add(Counter(), "prologue")
    recipe.callbacks.add(EpochMetricAvg("loss", post_each_batch=True))
    recipe.callbacks.add(StdoutLogger(log_every=2, prefix="Train", stream=out), "epilogue")
    recipe.run(1)
    lines = out.getvalue().splitlines()
    # the counters Counter copies are the line's position, not metrics
    assert lines == [
        "Train | epoch 1/1 step 2 | loss=0.5",
        "Train | epoch 1/1 step 4 | loss=1.5",
        "Train | epoch 1/1 | loss=2",
    ]


def test_stdout_logger_silent_off_rank_zero(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    out = io.StringIO()
    recipe = Recipe(lambda b: None, [0])
    recipe.callbacks.add(StdoutLogger(log_every=1, stream=out))
    recipe.run(1)
    assert out.getvalue() == ""


def test_call_recipe_every_n_batches_copies_prefixed_metrics():
    calls = []
    test = Recipe(lambda b: {"acc": torch.tensor(float(len(calls)))}, [0])
    test.callbacks.add(EpochMetricAvg("acc", post_each_batch=False))
    test.callbacks.add(type("Count", (), {"on_fit_start": lambda self, s: calls.append(1)})())
    train = Recipe(lambda b: None, list(range(6)))
    train.callbacks.add(CallRecipe(test, every=3, prefix="valid"))
    state = train.run(1)
    assert len(calls) == 2
    assert state.metrics["valid/acc"] == 2.0  # from the second call (fit_start counted it first)


def test_optimizer_state_mismatch_changes_nothing():
    w = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=1.0, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    saved = Optimizer(opt, scheduler=sched).state_dict()
    saved["steps"] = 7
    fresh_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5, momentum=0.9)
    target = Optimizer(fresh_opt)  # no scheduler: the checkpoint's scheduler state cannot be placed
    with pytest.raises(KeyError, match="learning-rate scheduler"):
        target.load_state_dict(saved)
    assert target.steps == 0 and fresh_opt.param_groups[0]["lr"] == 0.5  # nothing was half-restored


def test_optimizer_clears_gradients_directly_or_through_a_custom_zero_grad():
    w = nn.Parameter(torch.ones(2))
    recipe = Recipe(lambda batch: (w * batch).sum().backward(), [torch.ones(2)] * 3)
    seen = []
    recipe.callbacks.add(type("Seen", (), {"on_batch_start": lambda self, s: seen.append(w.grad)})())
    recipe.callbacks.add(Optimizer(torch.optim.SGD([w], lr=0.1)))
    recipe.run(1)
    assert seen == [None, None, None] and w.grad is None  # set to None after every step

    class Counting(torch.optim.SGD):
        calls = 0

        def zero_grad(self, set_to_none: bool = True) -> None:
            Counting.calls += 1
            super().zero_grad(set_to_none)

    recipe = Recipe(lambda batch: (w * batch).sum().backward(), [torch.ones(2)] * 3)
    recipe.callbacks.add(Optimizer(Counting([w], lr=0.1)))
    recipe.run(1)
    assert Counting.calls == 4  # fit start + one per step: its own zero_grad is respected
