"""Prebuilt recipes: eval mode and gradients around the test pass (also on errors), checkpoints and
resume, and the errors a hostile caller gets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainforge.callbacks import EpochMetricAvg, Optimizer
from trainforge.errors import CheckpointError, ConfigError
from trainforge.recipes import Classification, CrossEntropyClassification, TrainAndCall, TrainAndTest

DATA = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(4)]


def steps(model):
    def train_fn(batch):
        x, y = batch
        pred = model(x)
        loss = nn.functional.cross_entropy(pred, y)
        loss.backward()
        return {"loss": loss, "pred": pred}

    def test_fn(batch):
        x, y = batch
        pred = model(x)
        return {"loss": nn.functional.cross_entropy(pred, y), "pred": pred}

    return train_fn, test_fn


def test_test_pass_restores_train_mode_and_gradients_even_when_it_fails():
    model = nn.Linear(4, 3)
    train_fn, _ = steps(model)

    def failing_test(batch):
        assert not model.training and not torch.is_grad_enabled()
        raise RuntimeError("boom")

    recipe = TrainAndTest(model, train_fn, failing_test, DATA, DATA, log_every=1000)
    with pytest.raises(RuntimeError, match="boom"):
        recipe.run(1)
    assert model.training and torch.is_grad_enabled()


def test_checkpoints_best_and_resume(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    train_fn, test_fn = steps(model)
    recipe = TrainAndTest(model, train_fn, test_fn, DATA, DATA, test_every=2, log_every=1000,
                          checkpoint=tmp_path, key_best="test/loss", best_mode="min")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    recipe.callbacks.add_callbacks([Optimizer(opt), EpochMetricAvg("loss")])
    recipe.test_loop.callbacks.add(EpochMetricAvg("loss", post_each_batch=False))
    recipe.run(2)
    assert recipe.checkpoint_callback.best_model_path is not None
    assert (tmp_path / "metrics.jsonl").read_text().count("test/loss") >= 4

    again = TrainAndTest(nn.Linear(4, 3), *steps(model), DATA, DATA, test_every=2, log_every=1000,
                         checkpoint=tmp_path, key_best="test/loss", best_mode="min")
    again.callbacks.add_callbacks([Optimizer(torch.optim.SGD(model.parameters(), lr=0.1)),
                                   EpochMetricAvg("loss")])
    again.test_loop.callbacks.add(EpochMetricAvg("loss", post_each_batch=False))
    assert again.resume("auto").name == "last" and again.state.global_step == 8
    assert again.run(2).global_step == 8 and again.state.epoch == 2  # nothing left to train
    fresh = TrainAndTest(nn.Linear(4, 3), *steps(model), DATA, DATA, checkpoint=tmp_path / "new")
    assert fresh.resume("auto") is None  # nothing to resume: a fresh start
    with pytest.raises(ConfigError, match="is not a recipe checkpoint"):
        trainer_checkpoint = tmp_path / "trainer_ckpt"
        from trainforge.checkpoint import save_checkpoint

        save_checkpoint(trainer_checkpoint, {"recipe": {}, "format_version": 1})
        fresh.resume(trainer_checkpoint)
    with pytest.raises((ConfigError, CheckpointError, FileNotFoundError)):
        fresh.resume(tmp_path / "missing")


def test_monitoring_a_metric_nobody_posts_names_what_exists(tmp_path):
    model = nn.Linear(4, 3)
    recipe = TrainAndTest(model, *steps(model), DATA, DATA, log_every=1000, checkpoint=tmp_path,
                          key_best="test/acuracy")
    recipe.test_loop.callbacks.add(EpochMetricAvg("loss", post_each_batch=False))
    with pytest.raises(ConfigError, match=r"'test/acuracy', which was never logged.*test/loss"):
        recipe.run(1)


def test_bad_arguments_are_errors():
    model = nn.Linear(4, 3)
    train_fn, test_fn = steps(model)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        TrainAndTest(train_fn, model, test_fn, DATA, DATA)
    with pytest.raises(TypeError, match="test_fn must be a function"):
        TrainAndTest(model, train_fn, "test", DATA, DATA)
    with pytest.raises(ConfigError, match="give checkpoint=<run folder> too"):
        TrainAndTest(model, train_fn, test_fn, DATA, DATA, key_best="test/loss")
    with pytest.raises(ValueError, match="call_every must be a positive"):
        TrainAndCall(model, train_fn, lambda: None, DATA, call_every=0)
    with pytest.raises(ConfigError, match="precision='fp8'"):
        CrossEntropyClassification(model, DATA, DATA, ["a", "b", "c"], precision="fp8")
    for lr in (0, "0.1", None, True):  # a string used to fail as a bare TypeError from a comparison
        with pytest.raises(ConfigError, match=f"lr must be a positive number, got {lr!r}"):
            CrossEntropyClassification(model, DATA, DATA, ["a", "b", "c"], lr=lr)
    recipe = Classification(model, train_fn, test_fn, DATA, DATA, ["a", "b"], log_every=1000)
    recipe.callbacks.add(Optimizer(torch.optim.SGD(model.parameters(), lr=0.1)))
    with pytest.raises(ConfigError, match="pred has 3 classes but classes lists 2"):
        recipe.run(1)
    def tensor_batches(batch):
        return {"loss": torch.tensor(0.0), "pred": model(batch)}

    bad = Classification(model, train_fn, tensor_batches, DATA, [torch.zeros(2, 4)], ["a", "b", "c"], log_every=1000)
    with pytest.raises(ConfigError, match=r"a classification batch is \(input, target\)"):
        bad.run(1)


def test_fp16_uses_a_grad_scaler_and_schedule_follows_run_length():
    model = nn.Linear(4, 3)
    recipe = CrossEntropyClassification(model, DATA, DATA, ["a", "b", "c"], precision="16-mixed", log_every=1000)
    assert recipe.scaler is not None
    recipe.run(2)
    assert recipe.schedule.total == 2 * len(DATA)
    assert recipe.optimizer.param_groups[0]["lr"] < 1e-6  # the cosine reached its end
