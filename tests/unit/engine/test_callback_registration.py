"""Registering callbacks as Torchélie users write it, and every way of getting it wrong being an error."""

from __future__ import annotations

import json

import pytest
import torch

from trainforge.callbacks import CallRecipe, Counter, EpochMetricAvg, Optimizer, StdoutLogger
from trainforge.engine import Callback, CallbackError, Recipe
from trainforge.loggers import JsonlLogger, TensorBoardLogger


class Hook:
    def __init__(self):
        self.seen = 0

    def on_batch_end(self, state):
        self.seen += 1


def test_add_callbacks_and_add_callback_work_as_written():
    recipe = Recipe(lambda b: None, [0, 1])
    first, second, third = Hook(), Hook(), Hook()
    recipe.callbacks.add_callbacks([first, second])
    recipe.callbacks.add_callback(third)
    recipe.add_callbacks([Hook()])
    recipe.run(1)
    assert (first.seen, second.seen, third.seen) == (2, 2, 2)
    assert len(recipe.callbacks) == 4


def test_a_list_where_one_callback_is_expected_is_an_error():
    w = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([w], lr=0.1)
    recipe = Recipe(lambda b: None, [0])
    for call in (recipe.callbacks.add, recipe.callbacks.add_callback):
        with pytest.raises(CallbackError, match=r"got a list of 2 items; use add_callbacks"):
            call([Optimizer(opt), Hook()])
    assert len(recipe.callbacks) == 0  # nothing half-added


def test_objects_with_no_hook_are_errors_not_silently_kept():
    w = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([w], lr=0.1)
    recipe = Recipe(lambda b: None, [0])
    with pytest.raises(CallbackError, match=r"SGD .* not a callback.*Optimizer\(opt\)"):
        recipe.callbacks.add(opt)  # the optimizer itself instead of Optimizer(opt): would train nothing
    with pytest.raises(CallbackError, match="not a callback"):
        recipe.callbacks.add(lambda state: None)
    with pytest.raises(CallbackError, match=r"add_callbacks\(\): .*str 'loss'"):
        recipe.callbacks.add_callbacks([Hook(), "loss"])
    with pytest.raises(CallbackError, match="takes a list"):
        recipe.callbacks.add_callbacks(Hook())
    assert len(recipe.callbacks) == 0


def test_foreign_hook_names_and_signatures_name_our_spelling():
    class TowheeStyle(Callback):
        def on_batch_begin(self, batch, logs):
            print("on_batch_begin")

    with pytest.raises(CallbackError, match=r"on_batch_begin is another library's.*'on_batch_start\(self, state\)'"):
        Recipe(lambda b: None, [0]).callbacks.add(TowheeStyle())

    class TwoArgs:
        def on_epoch_end(self, epochs, logs): ...

    with pytest.raises(CallbackError, match=r"cannot be called as on_epoch_end\(state\)"):
        Recipe(lambda b: None, [0]).callbacks.add(TwoArgs())


def test_call_recipe_run_every_and_counters_are_not_copied(capsys):
    test = Recipe(lambda b: {"loss": torch.tensor(1.0)}, [0, 1, 2])
    test.callbacks.add_callbacks([Counter(), EpochMetricAvg("loss", post_each_batch=False),
                                  StdoutLogger(log_every=-1, prefix="Test")])
    train = Recipe(lambda b: None, [0, 1, 2, 3])
    train.register("test_recipe", test)
    train.callbacks.add_callbacks([Counter(), CallRecipe(test, run_every=2, prefix="test"), StdoutLogger(log_every=2)])
    state = train.run(1)
    assert state.metrics["test/loss"] == 1.0
    assert not any(k.startswith("test/") and k.split("/")[1] in ("epoch", "global_step", "epoch_step")
                   for k in state.metrics)
    out = capsys.readouterr().out
    assert "test/loss=1" in out and "global_step=" not in out and "test/epoch=" not in out
    with pytest.raises(ValueError, match="not both"):
        CallRecipe(test, every=2, run_every=2)
    with pytest.raises(TypeError, match="runs a Recipe"):
        CallRecipe(lambda: None)


def test_loggers_are_recipe_callbacks_and_write_what_the_recipe_posts(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = iter(torch.linspace(1.0, 0.1, 12))
    test = Recipe(lambda b: {"loss": torch.tensor(0.5)}, [0, 1])
    test.callbacks.add_callbacks([EpochMetricAvg("loss", post_each_batch=False),
                                  TensorBoardLogger(tmp_path / "tb_test", log_every=-1, prefix="test")])
    train = Recipe(lambda b: {"loss": next(losses)}, list(range(6)))
    board = TensorBoardLogger(tmp_path / "tb", log_every=2)
    jsonl = JsonlLogger(tmp_path / "metrics.jsonl", log_every=3)
    train.callbacks.add_callbacks([Counter(), EpochMetricAvg("loss"), CallRecipe(test, prefix="test"), board, jsonl])
    train.run(2)
    board.close()
    jsonl.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "loss" in tags and "test/loss" in tags and "epoch" not in tags and "global_step" not in tags
    assert [e.step for e in events.Scalars("loss")] == [2, 4, 6, 6, 8, 10, 12, 12]  # cadence, then epoch mean
    # the copy in the training metrics is logged once per test run, not again at each cadence
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("test/loss")] == [(6, 0.5), (12, 0.5)]
    nested = EventAccumulator(str(tmp_path / "tb_test"))
    nested.Reload()  # the test recipe's own logger logs at the caller's step
    assert [(e.step, round(e.value, 4)) for e in nested.Scalars("test/loss")] == [(6, 0.5), (12, 0.5)]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6, 6, 9, 12, 12]  # at 6 and 12: the cadence, then the test
    assert records[-1]["metrics"]["test/loss"] == 0.5 and "epoch" not in records[-1]["metrics"]


def test_image_values_go_to_log_images_once_per_new_grid():
    from trainforge.loggers import BaseLogger

    class Recorder(BaseLogger):
        def __init__(self):
            self.images, self.metrics = [], []

        def log_metrics(self, metrics, step, phase=None, *, epoch=None):
            self.metrics.append((step, dict(metrics)))

        def log_images(self, tag, images, step):
            self.images.append((tag, tuple(images.shape), step))

    grid = torch.rand(3, 8, 8)

    class Post:
        def on_batch_end(self, state):
            if state.global_step == 2:
                state.metrics["samples"] = grid

    recorder = Recorder().every(2)
    recipe = Recipe(lambda b: None, [0, 1, 2, 3])
    recipe.callbacks.add_callbacks([Post(), recorder])
    recipe.run(1)
    assert recorder.images == [("samples", (1, 3, 8, 8), 2)]
