from __future__ import annotations

import pytest
import torch

from trainforge.callbacks import CallRecipe, EpochMetricAvg
from trainforge.engine import CallbackError, Recipe


def names(recorder):
    return [e[0] for e in recorder.events]


def test_event_order_plain_run(recorder):
    rec = recorder()
    recipe = Recipe(lambda b: None, [0, 1])
    recipe.callbacks.add(rec)
    recipe.run(2)
    assert rec.events == [
        ("fit_start", 0, 0, 0),
        ("epoch_start", 0, 0, 0),
        ("batch_start", 0, 0, 0),
        ("batch_end", 0, 1, 1),
        ("batch_start", 0, 1, 1),
        ("batch_end", 0, 2, 2),
        ("epoch_end", 0, 2, 2),
        ("epoch_start", 1, 2, 0),
        ("batch_start", 1, 2, 0),
        ("batch_end", 1, 3, 1),
        ("batch_start", 1, 3, 1),
        ("batch_end", 1, 4, 2),
        ("epoch_end", 1, 4, 2),
        ("fit_end", 2, 4, 0),
    ]


def test_event_order_with_nested_call_recipe(recorder):
    outer_rec, inner_rec = recorder(), recorder("test.")
    inner_rec.events = outer_rec.events  # one shared log, so the interleaving is recorded
    test = Recipe(lambda b: None, [0])
    test.callbacks.add(inner_rec)
    train = Recipe(lambda b: None, [0, 1, 2])
    train.callbacks.add(CallRecipe(test, every=2))
    train.callbacks.add(outer_rec)
    train.run(1)
    assert [e[0] for e in outer_rec.events] == [
        "fit_start", "epoch_start",
        "batch_start", "batch_end",
        "batch_start",
        # CallRecipe sits before the recorder in the middle group: eval runs inside batch_end
        "eval_start",
        "test.fit_start", "test.epoch_start", "test.batch_start", "test.batch_end",
        "test.epoch_end", "test.fit_end",
        "eval_end",
        "batch_end",
        "batch_start", "batch_end",
        "epoch_end", "fit_end",
    ]


def test_should_stop_ends_after_current_batch_and_fit_end_fires(recorder):
    rec = recorder()

    class StopAt:
        def on_batch_end(self, state):
            if state.global_step == 3:
                state.should_stop = True

    recipe = Recipe(lambda b: None, [0, 1])
    recipe.callbacks.add(StopAt())
    recipe.callbacks.add(rec)
    state = recipe.run(5)
    assert names(rec)[-3:] == ["batch_start", "batch_end", "fit_end"]
    assert "epoch_end" not in names(rec)[names(rec).index("epoch_start", 3):]
    assert state.global_step == 3 and state.epoch == 1 and state.epoch_step == 1


def test_misspelled_hook_raises_at_registration():
    class Typo:
        def on_epoch_ned(self, state): ...

    recipe = Recipe(lambda b: None, [0])
    with pytest.raises(CallbackError, match="on_epoch_end"):
        recipe.callbacks.add(Typo())
    assert len(recipe.callbacks) == 0


def test_fit_end_fires_when_step_raises_and_exception_reaches_caller(recorder):
    rec = recorder()
    boom = ValueError("boom")

    def step(b):
        if b == 1:
            raise boom
        return None

    recipe = Recipe(step, [0, 1, 2])
    recipe.callbacks.add(rec)
    with pytest.raises(ValueError) as info:
        recipe.run(1)
    assert info.value is boom
    assert names(rec)[-2:] == ["exception", "fit_end"]
    assert recipe.state.exception is boom


def test_run_counts_total_epochs_after_resume():
    recipe = Recipe(lambda b: None, [0, 1])
    recipe.run(2)
    saved = recipe.state_dict()
    fresh = Recipe(lambda b: None, [0, 1])
    fresh.load_state_dict(saved)
    state = fresh.run(3)
    assert state.epoch == 3 and state.global_step == 6


def test_callbacks_groups_order_and_remove():
    calls = []

    def make(tag):
        return type(tag, (), {"on_fit_start": lambda self, s: calls.append(tag)})()

    recipe = Recipe(lambda b: None, [0])
    late, first, mid = make("late"), make("first"), make("mid")
    recipe.callbacks.add(late, "epilogue")
    recipe.callbacks.add(mid)
    recipe.callbacks.add(first, "prologue")
    recipe.run(1)
    assert calls == ["first", "mid", "late"]
    recipe.callbacks.remove(mid)
    calls.clear()
    recipe.reset()
    recipe.run(1)
    assert calls == ["first", "late"]
    with pytest.raises(ValueError):
        recipe.callbacks.remove(mid)


def test_step_outputs_stay_on_device_and_in_state():
    out = torch.tensor(3.0)
    recipe = Recipe(lambda b: {"x": out}, [0])
    state = recipe.run(1)
    assert state.outputs["x"] is out  # not copied or moved to the host


def test_state_dict_round_trip_every_registered_kind():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    avg = EpochMetricAvg("loss")

    def build(m, o, s):
        r = Recipe(lambda b: {"loss": torch.tensor(float(b))}, [1, 2, 3])
        r.register("model", m)
        r.register("opt", o)
        r.register("sched", s)
        r.register("buffer", torch.zeros(2))
        r.register("best", None)
        r.register("history", [])
        return r

    recipe = build(model, opt, sched)
    recipe.callbacks.add(avg)
    recipe.register("best", 0.75)
    recipe.register("history", [1, 2])
    recipe.buffer.add_(5)
    recipe.run(1)
    saved = recipe.state_dict()

    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    other = build(model2, opt2, sched2)
    avg2 = EpochMetricAvg("loss")
    other.callbacks.add(avg2)
    other.load_state_dict(saved)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert opt2.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    assert sched2.last_epoch == sched.last_epoch and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert other.buffer.tolist() == [5.0, 5.0]
    assert other.best == 0.75 and other.history == [1, 2]
    assert avg2.state_dict()["count"] == 3
    assert other.state.global_step == 3 and other.state.epoch == 1


def test_strict_loading_names_missing_and_unexpected_keys():
    a = Recipe(lambda b: None, [])
    a.register("model", torch.nn.Linear(1, 1))
    a.register("extra", 3)
    b = Recipe(lambda b: None, [])
    b.register("model", torch.nn.Linear(1, 1))
    b.register("ema", torch.nn.Linear(1, 1))
    with pytest.raises(KeyError) as info:
        b.load_state_dict(a.state_dict())
    assert "missing registered ['ema']" in str(info.value) and "unexpected ['extra']" in str(info.value)
    b.load_state_dict(a.state_dict(), strict=False)  # non-strict loads what matches


def test_register_rejects_names_that_shadow_recipe_attributes():
    recipe = Recipe(lambda b: None, [])
    with pytest.raises(ValueError):
        recipe.register("run", 1)


def test_to_moves_registered_modules_and_batches():
    seen = []
    recipe = Recipe(lambda b: seen.append(b.device), [torch.zeros(1)])
    recipe.register("model", torch.nn.Linear(1, 1))
    recipe.to("meta")
    recipe.run(1)
    assert seen == [torch.device("meta")]
    assert recipe.model.weight.device.type == "meta"


def test_resume_mid_epoch_without_resumable_loader_warns_and_skips():
    seen = []
    recipe = Recipe(lambda b: seen.append(b), [10, 11, 12])
    recipe.state.load_progress({"epoch": 0, "global_step": 2, "epoch_step": 2})
    with pytest.warns(UserWarning, match="cannot skip batches at the sampler"):
        recipe.run(1)
    assert seen == [12]


def test_resume_uses_loader_iter_epoch_when_available():
    class Loader:
        def __init__(self):
            self.calls = []

        def iter_epoch(self, epoch, start):
            self.calls.append((epoch, start))
            return iter(range(start, 4))

    loader = Loader()
    recipe = Recipe(lambda b: None, loader)
    recipe.state.load_progress({"epoch": 1, "global_step": 6, "epoch_step": 2})
    state = recipe.run(3)
    assert loader.calls == [(1, 2), (2, 0)]
    assert state.global_step == 6 + 2 + 4


def test_a_hook_set_to_none_on_the_instance_is_not_dispatched():
    class Sometimes:
        def __init__(self, per_batch):
            self.calls = 0
            if not per_batch:
                self.on_batch_end = None

        def on_batch_end(self, state):
            self.calls += 1

        def on_epoch_end(self, state):
            self.calls += 100

    on, off = Sometimes(True), Sometimes(False)
    recipe = Recipe(lambda batch: None, [0, 1, 2])
    recipe.callbacks.extend([on, off])
    recipe.run(1)
    assert (on.calls, off.calls) == (103, 100)


@pytest.mark.parametrize("step_fn, loader, epochs, message", [
    (5, [0], 1, r"Recipe step_fn must be a function of one batch, got int 5; the order is Recipe\(step_fn, loader\)"),
    (lambda b: None, None, 1, r"Recipe loader must be an iterable of batches .*got NoneType"),
    (lambda b: None, [0], -1, r"Recipe.run\(epochs=-1\): expected a whole number of epochs >= 0"),
    (lambda b: None, [0], 1.5, r"Recipe.run\(epochs=1.5\)"),  # ran two epochs
    (lambda b: None, [0], "2", r"Recipe.run\(epochs='2'\)"),  # a bare TypeError from a comparison
    (lambda b: None, [0], True, r"Recipe.run\(epochs=True\)"),
    (lambda b: None, [], 1, r"the loader \(list\) gave no batches in epoch 1: an empty data set"),  # 0 steps, silently
    (lambda b: None, (i for i in range(3)), 2, r"no batches in epoch 2: generator is an iterator, used up by the"),
])
def test_bad_recipe_inputs_are_named(step_fn, loader, epochs, message):
    from trainforge.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        Recipe(step_fn, loader).run(epochs)


def test_a_resume_at_an_epochs_last_batch_runs_no_batch_and_is_not_an_error():
    steps = []
    first = Recipe(lambda b: steps.append(b), [1, 2])
    stop = {"on_batch_end": lambda self, s: setattr(s, "should_stop", s.epoch_step == 2)}
    first.callbacks.add(type("Stop", (), stop)())
    first.run(1)  # stopped after the last batch, before epoch_end: the epoch is not complete
    second = Recipe(lambda b: steps.append(b), [1, 2])
    second.load_state_dict(first.state_dict())
    with pytest.warns(UserWarning, match="cannot skip batches at the sampler"):
        state = second.run(2)
    assert state.epoch == 2 and steps == [1, 2, 1, 2]  # epoch 1 ends with no batch left, then epoch 2


def test_an_empty_epoch_of_a_loader_with_only_iter_epoch_is_named():
    from trainforge.errors import EmptyLoaderError

    class EpochsOnly:  # a resumable loader without __iter__: the error must not call iter() on it
        def iter_epoch(self, epoch, start):
            return iter([1] if epoch == 0 else [])

    with pytest.raises(EmptyLoaderError, match=r"the loader \(EpochsOnly\) gave no batches in epoch 2"):
        Recipe(lambda b: None, EpochsOnly()).run(2)
