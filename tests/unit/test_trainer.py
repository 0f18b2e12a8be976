"""The Trainer, tested through ``fit()`` on small real data (digits), never callbacks alone."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import cfg, mlp
from torch import nn
from torch.utils.data import DataLoader, Subset

from trainforge import Callback, Trainer, TrainingConfig
from trainforge.errors import ConfigError


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))


@pytest.fixture(scope="module")
def small(digits):
    train, valid = digits
    return Subset(train, range(256)), Subset(valid, range(100))


# -- stages ----------------------------------------------------------------------------------------
STAGE_CALLS = ["preprocess", "augmentations", "on_before_model", "compute_loss", "train_step",
               "evaluate_step", "compute_metrics", "on_epoch_end"]


def test_every_stage_override_by_subclass_runs_through_fit(tmp_path, small):
    calls: dict[str, int] = {}

    class Recording(Trainer):
        pass

    def wrap(name):
        def method(self, *args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return getattr(Trainer, name)(self, *args, **kwargs)
        return method

    for name in [*STAGE_CALLS, "evaluate"]:
        setattr(Recording, name, wrap(name))
    trainer = Recording(mlp(), cfg(tmp_path), train_data=small[0], valid_data=small[1])
    trainer.fit()
    assert calls["train_step"] == 4 and calls["evaluate_step"] == 2 and calls["evaluate"] == 1
    assert calls["augmentations"] == 4  # training only
    assert calls["preprocess"] == 6 and calls["on_before_model"] == 6
    assert calls["compute_loss"] == 6 and calls["compute_metrics"] == 6 and calls["on_epoch_end"] == 1


def test_stages_assigned_after_construction_run_and_identity_stages_are_skipped(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path, metrics=[]), train_data=small[0])
    seen = []
    trainer.augmentations = lambda x: seen.append(x.shape[0]) or x  # after Trainer(...), before fit
    trainer.fit()
    assert seen == [64, 64, 64, 64]
    stages = trainer._stages  # nothing else overridden: the default identities are not even called
    assert stages.augmentations and not (stages.preprocess or stages.on_before_model or stages.compute_metrics)


def test_dict_overrides_are_bound_to_one_instance_only(tmp_path, small):
    seen = []

    def preprocess(x):
        seen.append("pre")
        return x * 1.0

    def on_epoch_end(self, state):  # first parameter 'self': bound like a method
        seen.append(("epoch_end", type(self).__name__, state.epoch))

    first = Trainer(mlp(), cfg(tmp_path), train_data=small[0],
                    callbacks={"preprocess": preprocess, "on_epoch_end": on_epoch_end})
    first.fit()
    assert seen.count("pre") == 4 and ("epoch_end", "Trainer", 0) in seen
    seen.clear()
    Trainer(mlp(), cfg(tmp_path / "b"), train_data=small[0]).fit()
    assert seen == []  # nothing leaked onto the class
    assert "preprocess" not in Trainer.__dict__ or Trainer.preprocess is not preprocess


def test_dict_override_of_fit_and_evaluate(tmp_path, small):
    def my_evaluate(self, data=None, phase="VALID"):
        return {"valid/custom": 1.0}

    def my_fit(self):
        self.model.train()
        for batch in self.train_loader:
            batch = self.runtime.to_device(batch)
            loss = self.criterion(self.model(batch["input"]), batch["target"])
            loss.backward()
        return self.evaluate()

    trainer = Trainer(mlp(), cfg(tmp_path), train_data=small[0], valid_data=small[1],
                      callbacks={"fit": my_fit, "evaluate": my_evaluate})
    assert trainer.fit() == {"valid/custom": 1.0}
    assert trainer.model[1].weight.grad is not None


def test_unknown_stage_key_is_an_error_listing_stages(tmp_path):
    with pytest.raises(ConfigError, match="stages that can be replaced: preprocess"):
        Trainer(mlp(), cfg(tmp_path), callbacks={"preproces": lambda x: x})


def test_callback_objects_in_kornia_style_dict_are_added(tmp_path, small):
    class Stopper(Callback):
        def on_batch_end(self, state):
            state.should_stop = state.global_step >= 2

    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=3), train_data=small[0], callbacks={"on_epoch_end": Stopper()})
    state = trainer.fit()
    assert state.global_step == 2 and trainer.epoch == 0


def test_misspelled_callback_hook_is_rejected(tmp_path):
    class Typo(Callback):
        def on_epoch_ends(self, state): ...

    trainer = Trainer(mlp(), cfg(tmp_path))
    with pytest.raises(TypeError, match="on_epoch_end"):
        trainer.add_callback(Typo())


def test_set_optimizer_and_set_loss_are_used(tmp_path, small):
    model = mlp()
    trainer = Trainer(model, cfg(tmp_path, scheduler=None), train_data=small[0])
    calls = []

    class Counting(torch.optim.SGD):
        def step(self, closure=None):
            calls.append(1)
            return super().step(closure)

    trainer.set_optimizer(Counting(model.parameters(), lr=0.1))
    losses = []
    trainer.set_loss(lambda out, target: losses.append(1) or nn.functional.cross_entropy(out, target))
    trainer.fit()
    assert len(calls) == 4 and len(losses) == 4


# -- optimization ------------------------------------------------------------------------------------
def _final_weights(tmp_path, data, batch_size, accumulation):
    trainer = Trainer(mlp(), cfg(tmp_path, batch_size=batch_size, accumulate_grad_batches=accumulation,
                                 optimizer="SGD", scheduler=None, lr=0.1, metrics=[]), train_data=data)
    trainer.fit()
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_accumulation_equals_larger_batch_through_fit(tmp_path, digits):
    data = Subset(digits[0], range(256))  # 256 = 8 windows of 32: no partial window
    big = _final_weights(tmp_path / "a", data, batch_size=32, accumulation=1)
    acc = _final_weights(tmp_path / "b", data, batch_size=8, accumulation=4)
    for a, b in zip(acc, big):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_clipping_bounds_the_applied_norm(tmp_path, small):
    norms = []
    model = mlp()

    class Spy(torch.optim.SGD):
        def step(self, closure=None):
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
            return super().step(closure)

    trainer = Trainer(model, cfg(tmp_path, gradient_clip_val=0.05, lr=1.0), train_data=small[0],
                      optimizer=Spy(model.parameters(), lr=1.0))
    state = trainer.fit()
    assert max(norms) <= 0.05 + 1e-5
    assert float(state.metrics["grad_norm"]) > 0.05  # the logged norm is the one before clipping


def test_scheduler_length_counts_optimizer_steps_with_accumulation(tmp_path, digits):
    data = Subset(digits[0], range(200))  # batch 16: 13 batches/epoch, accumulation 4 -> 4 steps/epoch
    trainer = Trainer(mlp(), cfg(tmp_path, batch_size=16, accumulate_grad_batches=4, max_epochs=3,
                                 scheduler="linear"), train_data=data)
    state = trainer.fit()
    assert trainer._optimizer_cb.steps == 12
    assert trainer.scheduler.last_epoch == 12
    assert state.metrics["lr"] == 0.0  # linear decay reaches zero exactly at the last optimizer step


def test_bf16_autocast_on_cpu_trains(tmp_path, small):
    dtypes = []

    class Spy(Trainer):
        def compute_loss(self, outputs, batch):
            dtypes.append(outputs["output"].dtype)
            return super().compute_loss(outputs, batch)

    trainer = Spy(mlp(), cfg(tmp_path, precision="bf16-mixed", max_epochs=3, lr=0.05), train_data=small[0],
                  valid_data=small[1])
    state = trainer.fit()
    assert set(dtypes) == {torch.bfloat16}
    assert state.metrics["valid/accuracy"] > 0.6


def test_ema_weights_differ_and_are_used_for_evaluation(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path, ema_decay=0.9, max_epochs=2), train_data=small[0], valid_data=small[1])
    trainer.fit()
    raw = copy.deepcopy(trainer.model)
    with trainer.ema.swap(trainer.model):
        averaged = copy.deepcopy(trainer.model)
    assert not torch.equal(raw[1].weight, averaged[1].weight)
    x, y = next(iter(DataLoader(small[1], batch_size=100)))
    expected = nn.functional.cross_entropy(averaged.eval()(x), y).item()
    raw_loss = nn.functional.cross_entropy(raw.eval()(x), y).item()
    result = trainer.evaluate()
    assert result["valid/loss"] == pytest.approx(expected, rel=1e-5)
    assert result["valid/loss"] != pytest.approx(raw_loss, rel=1e-5)
    assert torch.equal(trainer.model[1].weight, raw[1].weight)  # raw weights back after evaluation


def test_evaluation_never_updates_batchnorm_and_keeps_every_sample(tmp_path, digits):
    valid = Subset(digits[1], range(101))  # 101 = 3 batches of 32 + 5: the partial batch counts
    seen = []

    class Spy(Trainer):
        def evaluate_step(self, batch):
            seen.append(len(batch["index"]))
            return super().evaluate_step(batch)

    trainer = Spy(bn_net(), cfg(tmp_path, batch_size=32, drop_last=True), train_data=Subset(digits[0], range(64)),
                  valid_data=valid)
    trainer.setup()
    bn = trainer.model[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    result = trainer.evaluate()
    assert sum(seen) == 101
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert torch.equal(bn.num_batches_tracked, before[2])
    assert trainer.model.training  # back to training mode
    # the eval loss is the per-sample mean over all 101 samples
    trainer.model.eval()
    x = torch.stack([valid[i][0] for i in range(101)])
    y = torch.tensor([valid[i][1] for i in range(101)])
    with torch.no_grad():
        expected = nn.functional.cross_entropy(trainer.model(x), y).item()
    assert result["valid/loss"] == pytest.approx(expected, rel=1e-5)


def test_train_and_valid_metrics_are_kept_apart(tmp_path, small):
    state = Trainer(mlp(), cfg(tmp_path, max_epochs=2), train_data=small[0], valid_data=small[1]).fit()
    for key in ("train/loss", "train/accuracy", "valid/loss", "valid/accuracy"):
        assert key in state.metrics and math.isfinite(state.metrics[key])
    assert state.metrics["train/loss"] != state.metrics["valid/loss"]


def test_one_forward_pass_per_training_step(tmp_path, small):
    calls = []
    model = mlp()
    model.register_forward_hook(lambda *a: calls.append(1))
    Trainer(model, cfg(tmp_path), train_data=small[0]).fit()
    assert len(calls) == 4


def test_frozen_layers_stay_bit_identical_and_unfreeze_at_epoch(tmp_path, small):
    from trainforge.callbacks.freezing import FreezeUnfreeze

    model = mlp()
    trainer = Trainer(model, cfg(tmp_path, max_epochs=3), train_data=small[0])
    unfreeze = FreezeUnfreeze(model, lambda: trainer.optimizer, modules=["1"], unfreeze_at_epoch=2, lr=0.05,
                              scheduler=lambda: trainer.scheduler)
    frozen_before = model[1].weight.detach().clone()
    snapshots = []

    class Snap(Callback):
        def on_epoch_end(self, state):
            snapshots.append(model[1].weight.detach().clone())

    trainer.add_callback(unfreeze)
    trainer.add_callback(Snap())
    trainer.fit()
    assert torch.equal(snapshots[0], frozen_before) and torch.equal(snapshots[1], frozen_before)
    assert not torch.equal(snapshots[2], frozen_before)
    assert len(trainer.optimizer.param_groups) == 2


def test_freeze_batchnorm_keeps_statistics_through_fit(tmp_path, small):
    model = bn_net()
    bn = model[1]
    before = bn.running_mean.clone()
    Trainer(model, cfg(tmp_path, freeze_batchnorm=True, max_epochs=2), train_data=small[0],
            valid_data=small[1]).fit()
    assert torch.equal(bn.running_mean, before) and not bn.weight.requires_grad


# -- config, data, predict ------------------------------------------------------------------------
def test_config_yaml_round_trip_and_errors(tmp_path):
    config = TrainingConfig(max_epochs=3, lr=0.5, metrics=["Accuracy", {"name": "F1Score", "params": {}}])
    path = tmp_path / "c.yaml"
    config.save_yaml(path)
    assert TrainingConfig.from_yaml(path) == config
    path.write_text("max_epochs: three\n")
    with pytest.raises(ConfigError, match="max_epochs='three' has type str; expected int"):
        TrainingConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="precision='fp8'"):
        TrainingConfig(precision="fp8")
    with pytest.raises(ConfigError, match="lr must be a finite number >= 0"):
        TrainingConfig(lr=float("nan"))


def test_user_dataloader_and_predict(tmp_path, small):
    loader = DataLoader(small[0], batch_size=32, shuffle=True)
    trainer = Trainer(mlp(), cfg(tmp_path), train_data=loader)
    trainer.fit()
    predictions = trainer.predict(small[1])
    assert sum(len(p["index"]) for p in predictions) == 100
    assert predictions[0]["output"].shape[1] == 10 and predictions[0]["output"].device.type == "cpu"


def test_print_steps_lines(tmp_path, small, capsys):
    Trainer(mlp(), cfg(tmp_path, print_steps=2, max_epochs=1), train_data=small[0]).fit()
    lines = [line.split(" |")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert lines == ["epoch 1/1 step 2", "epoch 1/1 step 4", "epoch 1/1 done"]


def test_console_silent_on_other_ranks(tmp_path, small, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # no process group: only the rank checks of console and files run
    Trainer(mlp(), cfg(tmp_path, print_steps=1), train_data=small[0], valid_data=small[1]).fit()
    assert capsys.readouterr().out == ""
    assert not (tmp_path / "run").exists()  # only rank 0 writes the run folder


def test_bad_device_is_a_clear_error(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path, device="tpu:0"), train_data=small[0])
    with pytest.raises(ConfigError, match="device='tpu:0'"):
        trainer.fit()


def test_channels_last_reaches_the_model(tmp_path, small):
    layouts = []
    model = bn_net()
    model[0].register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    Trainer(model, cfg(tmp_path, channels_last=True), train_data=small[0]).fit()
    assert layouts and all(layouts)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_switch_compiles_the_model_used_for_training(tmp_path, small, monkeypatch):
    compiled = []

    def spy(module, **kwargs):  # the eager backend: what fit runs is the compiled wrapper, without codegen
        wrapper = torch._dynamo.optimize("eager")(module) if hasattr(torch, "_dynamo") else module
        compiled.append(module)
        return wrapper

    monkeypatch.setattr(torch, "compile", spy)
    model = mlp()
    state = Trainer(model, cfg(tmp_path, compile=True, max_epochs=2), train_data=small[0], valid_data=small[1]).fit()
    assert compiled == [model]
    assert state.metrics["valid/accuracy"] > 0.3


def test_joint_loss_criterion_trains_and_names_its_terms_on_nan(tmp_path, small):
    from trainforge.errors import NonFiniteLossError
    from trainforge.losses import JointLoss

    smooth = {"name": "CrossEntropyLoss", "weight": 0.5, "params": {"label_smoothing": 0.1}, "tag": "smooth"}
    joint = JointLoss([{"name": "CrossEntropyLoss", "weight": 1.0}, smooth])
    seen = []

    class Spy(Callback):
        def on_batch_end(self, state):
            seen.append(sorted(k for k in state.outputs if k.startswith("loss/")))

    state = Trainer(mlp(), cfg(tmp_path), train_data=small[0], criterion=joint, callbacks=[Spy()]).fit()
    assert seen[0] == ["loss/cross_entropy", "loss/smooth"] and math.isfinite(state.metrics["train/loss"])

    class Poisoned(Trainer):
        def compute_loss(self, outputs, batch):
            total, terms = super().compute_loss(outputs, batch)
            if self.global_step == 2:
                terms = {**terms, "smooth": terms["smooth"] * float("nan")}
                total = total + terms["smooth"]
            return total, terms

    with pytest.raises(NonFiniteLossError, match=r"step 3 .*loss terms: cross_entropy=[0-9.]+, smooth=nan"):
        Poisoned(mlp(), cfg(tmp_path / "p"), train_data=small[0], criterion=joint).fit()


# -- public APIs in the hot path ---------------------------------------------------------------------
def test_fit_runs_loss_backward_and_optimizer_zero_grad(tmp_path, small, monkeypatch):
    """The hot path uses the public ``loss.backward()`` and ``optimizer.zero_grad(set_to_none=True)``:
    a wrapper around either (a profiler, a hook, an optimizer wrapper) sees every call."""
    backwards, zero_grads = [], []
    real_backward = torch.Tensor.backward

    def counting_backward(self, *args, **kwargs):
        backwards.append(1)
        return real_backward(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", counting_backward)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    real_zero_grad = optimizer.zero_grad
    optimizer.zero_grad = lambda set_to_none=True: zero_grads.append(set_to_none) or real_zero_grad(set_to_none)
    Trainer(model, cfg(tmp_path, scheduler=None), train_data=small[0], optimizer=optimizer).fit()
    assert len(backwards) == 4
    assert zero_grads == [True] * 5  # once at fit start, then after each of the 4 optimizer steps
    assert all(p.grad is None for p in model.parameters())


def test_huge_but_finite_gradients_are_not_called_non_finite(tmp_path, small):
    """The gradient check's 2-norm overflows above ~1e19; finite gradients of 1e25 must still train."""
    scaled = lambda output, target: nn.functional.cross_entropy(output, target) * 1e25  # noqa: E731
    model = mlp()
    trainer = Trainer(model, cfg(tmp_path, optimizer="SGD", lr=1e-30, scheduler=None, metrics=[]),
                      train_data=small[0], criterion=scaled)
    state = trainer.fit()
    assert state.global_step == 4 and all(torch.isfinite(p).all() for p in model.parameters())


# -- what a finished run leaves behind ---------------------------------------------------------------
def test_a_finished_fit_with_every_default_on_leaves_few_objects_in_reference_cycles(tmp_path, small):
    """A fit with metrics, checkpoints, TensorBoard and the report leaves < 1,000 objects that only a
    full garbage collection frees (a pause for whatever runs next); the model is freed by refcount."""
    import gc
    import weakref

    config = cfg(tmp_path, tensorboard=True, report=True, checkpoint={"save_last": True})
    model = mlp()
    gone = weakref.ref(model)
    gc.collect()
    Trainer(model, config, train_data=small[0], valid_data=small[1]).fit()
    del model
    assert gone() is None, "the trainer's objects are held in a reference cycle"
    assert gc.collect() < 1000
    assert (tmp_path / "run" / "report" / "index.html").is_file()


def test_report_files_get_the_permissions_of_the_rest_of_the_run_folder(tmp_path, small):
    import stat

    Trainer(mlp(), cfg(tmp_path, report=True), train_data=small[0], valid_data=small[1]).fit()
    run = tmp_path / "run"
    expected = stat.S_IMODE((run / "metrics.jsonl").stat().st_mode)
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert "report/index.html" in modes and "report/confusion_matrix.svg" in modes
    assert {name: mode for name, mode in modes.items() if mode != expected} == {}


def test_joint_loss_terms_are_logged_as_train_and_valid_loss_tags(tmp_path, small):
    from trainforge.loggers.jsonl import read_metrics_jsonl
    from trainforge.losses import JointLoss

    smooth = {"name": "CrossEntropyLoss", "weight": 0.5, "params": {"label_smoothing": 0.1}, "tag": "smooth"}
    joint = JointLoss([{"name": "CrossEntropyLoss", "weight": 1.0}, smooth])
    trainer = Trainer(mlp(), cfg(tmp_path, log_every_n_steps=2, report=True), train_data=small[0],
                      valid_data=small[1], criterion=joint)
    state = trainer.fit()
    metrics = state.metrics
    # the epoch means are linear in the terms: the total is the weighted sum of the term means
    total = metrics["train/loss/cross_entropy"] + 0.5 * metrics["train/loss/smooth"]
    assert metrics["train/loss"] == pytest.approx(total, rel=1e-5)
    x = torch.stack([small[1][i][0] for i in range(len(small[1]))])
    y = torch.stack([small[1][i][1] for i in range(len(small[1]))])
    with torch.no_grad():
        logits = trainer.model.eval()(x)
    assert metrics["valid/loss/cross_entropy"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert metrics["valid/loss/smooth"] == pytest.approx(
        nn.functional.cross_entropy(logits, y, label_smoothing=0.1).item(), rel=1e-5)
    records = read_metrics_jsonl(tmp_path / "run" / "metrics.jsonl")
    logged = {name for record in records for name in record["metrics"]}
    assert {"train/loss/cross_entropy", "train/loss/smooth", "valid/loss/cross_entropy", "valid/loss/smooth"} <= logged
    assert any(r["step"] == 2 and "train/loss/smooth" in r["metrics"] for r in records)  # at the logging cadence
    assert (tmp_path / "run" / "report" / "curve_loss_smooth.svg").is_file()


def test_a_recipe_outliving_its_trainer_says_so(tmp_path, small):
    import gc

    trainer = Trainer(mlp(), cfg(tmp_path), train_data=small[0])
    trainer.fit()
    recipe = trainer.recipe
    del trainer
    gc.collect()
    with pytest.raises(ReferenceError, match=r"keep a reference to it|no longer exists"):
        recipe.run(2)  # one more epoch
