"""Checkpoints that never lose work, proven through ``fit()`` on small real data (digits): top-k, last,
every-N-steps, early stopping, best-model loading, full disk (B6), corrupt newest checkpoint (B9),
fp16 GradScaler round trip (B11), resume drift (B12), non-finite loss (B25), weights export (B24)."""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import cfg, mlp
from torch import nn
from torch.utils.data import Subset, TensorDataset

from trainforge import Callback, Trainer
from trainforge.checkpoint import _tensors as tensors_in
from trainforge.checkpoint import load_checkpoint, read_latest, read_manifest, verify_checkpoint
from trainforge.errors import CheckpointWriteError, ConfigError, NonFiniteLossError, ResumeMismatchError


@pytest.fixture(scope="module")
def small(digits):
    train, valid = digits
    return Subset(train, range(256)), Subset(valid, range(100))  # 4 steps per epoch at batch 64


def checkpoints(run_dir) -> dict[str, dict]:
    """Committed checkpoint folders of a run by name, with their manifest metadata."""
    folder = run_dir / "checkpoints"
    return {p.name: read_manifest(p)["metadata"] for p in sorted(folder.iterdir()) if (p / "MANIFEST.json").exists()}


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_equal_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class Scripted(Callback):
    """Posts a scripted ``valid/scripted`` value at each epoch end (after evaluation, before early stopping
    and checkpoints, which run in the epilogue) and snapshots the weights there."""

    def __init__(self, values, model=None, ema=None):
        self.values = list(values)
        self.model = model
        self.snapshots: list[dict] = []
        self.ema_snapshots: list[dict] = []
        self.trainer = None

    def on_epoch_end(self, state):
        state.metrics["valid/scripted"] = self.values[state.epoch]
        if self.model is not None:
            self.snapshots.append(weights(self.model))
        if self.trainer is not None and self.trainer.ema is not None:
            self.ema_snapshots.append({k: v.clone() for k, v in self.trainer.ema.state_dict()["shadow"].items()})


# -- policy: top-k, last, every N steps ---------------------------------------------------------------
@pytest.mark.parametrize(("monitor", "mode"), [("valid/loss", "min"), ("valid/accuracy", "max")])
def test_top_k_keeps_exactly_k_best_by_the_monitored_metric(tmp_path, small, monitor, mode):
    seen = []

    class Record(Callback):
        def on_epoch_end(self, state):
            seen.append(state.metrics[monitor])

    checkpoint = {"monitor": monitor, "mode": mode, "save_top_k": 2, "save_last": True}
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=5, lr=0.003, checkpoint=checkpoint), train_data=small[0],
                      valid_data=small[1], callbacks=[Record()])
    trainer.fit()
    saved = checkpoints(trainer.run_dir)
    kept = {name: meta for name, meta in saved.items() if name != "last"}
    assert len(kept) == 2 and len(seen) == 5
    best_two = sorted(seen, reverse=(mode == "max"))[:2]
    assert sorted(m["score"] for m in kept.values()) == sorted(best_two)
    assert saved["last"]["global_step"] == 20 and read_latest(trainer.run_dir / "checkpoints") == "last"
    best = trainer.checkpoint_callback.best_model_path
    assert saved[best.name]["score"] == best_two[0]


def test_every_n_steps_saves_mid_epoch_and_last_is_the_newest(tmp_path, small):
    at_step_6 = {}

    class Snapshot(Callback):
        def on_batch_end(self, state):  # runs after the optimizer step, before the epilogue checkpoint
            if state.global_step == 6:
                at_step_6.update(weights(trainer.model))

    checkpoint = {"every_n_steps": 3, "every_n_epochs": None, "save_top_k": -1, "save_last": True}
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=2, checkpoint=checkpoint), train_data=small[0],
                      callbacks=[Snapshot()])
    trainer.fit()
    saved = checkpoints(trainer.run_dir)
    assert sorted(m["global_step"] for name, m in saved.items() if name != "last") == [3, 6]
    assert saved["last"]["global_step"] == 6
    last = load_checkpoint(trainer.run_dir / "checkpoints" / "last")
    assert_equal_tensors(last["recipe"]["registered"]["model"], at_step_6)


def test_checkpoint_holds_everything_a_resume_needs(tmp_path, small):
    checkpoint = {"monitor": "valid/loss", "save_top_k": 1, "save_last": True}
    config = cfg(tmp_path, max_epochs=1, ema_decay=0.9, checkpoint=checkpoint,
                 early_stopping={"monitor": "valid/loss", "patience": 3})
    trainer = Trainer(mlp(), config, train_data=small[0], valid_data=small[1])
    trainer.class_names = [str(i) for i in range(10)]
    trainer.fit()
    state = load_checkpoint(trainer.run_dir / "checkpoints" / "last")
    recipe = state["recipe"]
    assert set(recipe["registered"]) == {"model"}
    optimizer = recipe["callbacks"]["Optimizer[0]"]
    assert {"optimizer", "scheduler", "steps"} <= set(optimizer) and optimizer["optimizer"]["state"]
    for key in ("EMA[0]", "EarlyStopping[0]", "ModelCheckpoint[0]", "_TrainMetrics[0]"):
        assert key in recipe["callbacks"], key
    assert recipe["progress"] == {"epoch": 1, "global_step": 4, "epoch_step": 0, "samples": 256}
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    assert state["config"] == config.to_dict()
    data = state["data"]
    assert data["num_samples"] == 256 and data["sampler_seed"] == 0 and data["batch_size"] == 64
    assert isinstance(data["dataset_hash"], str) and data["class_names"] == trainer.class_names
    assert {"trainforge", "torch", "numpy", "python"} <= set(state["versions"])


# -- early stopping and the best model, through fit --------------------------------------------------
@pytest.mark.parametrize(
    ("values", "options", "epochs_run"),
    [
        ([1.0, 0.9, 0.95, 0.93, 0.5, 0.4], {"patience": 2}, 4),
        ([1.0, 0.95, 0.92, 0.80, 0.7, 0.6], {"patience": 2, "min_delta": 0.1}, 3),  # improving, but < min_delta
        ([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], {"patience": 2, "baseline": 0.5}, 2),  # never beats the baseline
        ([0.1, 0.2, 0.2, 0.2, 0.2, 0.2], {"patience": 2, "mode": "max"}, 4),
    ],
    ids=["patience", "min_delta", "baseline", "max"],
)
def test_early_stopping_fires_through_fit(tmp_path, small, values, options, epochs_run):
    early = {"monitor": "valid/scripted", **options}
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=6, early_stopping=early), train_data=small[0],
                      valid_data=small[1], callbacks=[Scripted(values)])
    state = trainer.fit()
    assert state.epoch == epochs_run and state.global_step == 4 * epochs_run


def test_early_stopping_monitor_never_logged_fails_at_setup(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=5, early_stopping={"monitor": "valid/los"}),
                      train_data=small[0], valid_data=small[1])
    with pytest.raises(ConfigError, match=r"early_stopping.monitor='valid/los' is not a metric this run logs; did you "
                                          r"mean 'valid/loss'\?"):
        trainer.fit()
    assert trainer.global_step == 0  # at set-up, not after the first epoch


def test_load_best_model_at_end_loads_the_best_weights_and_ema(tmp_path, small):
    model = mlp()
    scripted = Scripted([0.5, 0.2, 0.4, 0.3], model=model)
    checkpoint = {"monitor": "valid/scripted", "mode": "min", "save_top_k": 1, "save_last": True}
    config = cfg(tmp_path, max_epochs=4, checkpoint=checkpoint, load_best_model_at_end=True, ema_decay=0.5)
    trainer = Trainer(model, config, train_data=small[0], valid_data=small[1], callbacks=[scripted])
    scripted.trainer = trainer
    trainer.fit()
    assert trainer.checkpoint_callback.best_model_path.name == "epoch002-step000008"
    assert_equal_tensors(weights(trainer.model), scripted.snapshots[1])
    assert not torch.equal(trainer.model[1].weight, scripted.snapshots[3]["1.weight"])
    assert_equal_tensors(trainer.ema.state_dict()["shadow"], scripted.ema_snapshots[1])


# -- B6: a full disk during a save --------------------------------------------------------------------
def test_full_disk_keeps_the_previous_checkpoint_and_stops_the_run(tmp_path, small, monkeypatch):
    monkeypatch.delenv("TRAINFORGE_FAULT", raising=False)

    class DiskFillsInEpoch2(Callback):
        def on_epoch_end(self, state):  # before the epilogue's checkpoint of this epoch
            if state.epoch == 1:
                monkeypatch.setenv("TRAINFORGE_FAULT", "enospc_in_save")

    config = cfg(tmp_path, max_epochs=3, checkpoint={"save_top_k": 1, "save_last": True})
    trainer = Trainer(mlp(), config, train_data=small[0], callbacks=[DiskFillsInEpoch2()])
    with pytest.raises(CheckpointWriteError, match="No space left on device") as caught:
        trainer.fit()
    folder = trainer.run_dir / "checkpoints"
    assert caught.value.errno == errno.ENOSPC and str(folder / "epoch002-step000008") in str(caught.value)
    assert trainer.global_step == 8  # the run stopped at the failed save
    assert sorted(checkpoints(trainer.run_dir)) == ["epoch001-step000004", "last"]
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]
    verify_checkpoint(folder / "last")
    assert read_manifest(folder / "last")["metadata"]["global_step"] == 4
    monkeypatch.delenv("TRAINFORGE_FAULT")
    resumed = Trainer(mlp(), config, train_data=small[0])
    assert resumed.fit(resume_from=trainer.run_dir).global_step == 12


# -- B9: a corrupt newest checkpoint -------------------------------------------------------------------
def test_resume_skips_a_corrupt_newest_checkpoint_and_matches_the_uninterrupted_run(tmp_path, small):
    config = cfg(tmp_path, max_epochs=3, checkpoint={"save_top_k": -1, "save_last": False})
    reference = Trainer(mlp(), config, train_data=small[0])
    reference.fit()
    final = weights(reference.model)
    state_file = reference.run_dir / "checkpoints" / "epoch003-step000012" / "state.pt"
    data = bytearray(state_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    state_file.write_bytes(bytes(data))

    resumed = Trainer(mlp(), config, train_data=small[0])
    with pytest.warns(UserWarning, match=r"skipping corrupt checkpoint .*epoch003-step000012"):
        state = resumed.fit(resume_from=reference.run_dir)
    assert state.global_step == 12
    assert_equal_tensors(weights(resumed.model), final)  # resumed from step 8, replayed epoch 3 exactly
    verify_checkpoint(reference.run_dir / "checkpoints" / "epoch003-step000012")  # rewritten intact


# -- B12: drift between the saved run and the resuming one -------------------------------------------
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, digits):
    tmp = tmp_path_factory.mktemp("saved")
    x, y = digits[0].tensors
    data = TensorDataset(x[:256].clone(), y[:256].clone())
    trainer = Trainer(mlp(), cfg(tmp), train_data=data)
    trainer.fit()
    return trainer.save(tmp / "saved"), data


def _changed_sample(data):
    x, y = data.tensors[0].clone(), data.tensors[1].clone()
    x[17, 0, 3, 3] += 0.25
    return TensorDataset(x, y)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: ({"batch_size": 32}, d, mlp()), r"batch_size changed from 64 \(saved run\) to 32 \(this run\)"),
        (lambda d: ({"accumulate_grad_batches": 2}, d, mlp()), r"accumulate_grad_batches changed from 1 .* to 2"),
        (lambda d: ({"seed": 1}, d, mlp()), r"sampler_seed changed from 0 .* to 1"),
        (lambda d: ({}, _changed_sample(d), mlp()), r"dataset_hash changed from '\w+' \(saved run\) to '\w+'"),
        (lambda d: ({}, TensorDataset(*(t[:255] for t in d.tensors)), mlp()), r"num_samples changed from 256 .* 255"),
        (lambda d: ({}, Subset(d, range(1, 256)), mlp()), r"num_samples changed from 256 .* 255"),
        (lambda d: ({}, d, mlp(hidden=16)), r"shape mismatch \(3\): '1.weight': saved \(32, 64\), model \(16, 64\)"),
        (lambda d: ({"ema_decay": 0.9}, d, mlp()), r"stateful callbacks differ: this run has \['EMA\[0\]'\]"),
    ],
    ids=["batch_size", "accumulation", "seed", "one_sample", "length", "subset", "architecture", "ema"],
)
def test_resume_with_a_change_names_it_and_restores_nothing(tmp_path, saved_run, change, message):
    path, data = saved_run
    overrides, new_data, model = change(data)
    trainer = Trainer(model, cfg(tmp_path, **overrides), train_data=new_data)
    before = weights(model)
    with pytest.raises(ResumeMismatchError, match=message):
        trainer.load(path)
    assert_equal_tensors(weights(model), before)
    assert trainer.global_step == 0


def test_subset_of_the_same_data_in_another_order_is_a_different_dataset(tmp_path, digits):
    x, y = digits[0].tensors
    base = TensorDataset(x[:300].clone(), y[:300].clone())
    trainer = Trainer(mlp(), cfg(tmp_path), train_data=Subset(base, range(256)))
    path = trainer.save(tmp_path / "subset")
    other = Trainer(mlp(), cfg(tmp_path / "b"), train_data=Subset(base, range(1, 257)))
    with pytest.raises(ResumeMismatchError, match="dataset_hash changed"):
        other.load(path)


# -- B11: fp16 autocast + GradScaler on the CPU -----------------------------------------------------
def _amp_trainer(tmp_path, data, precision="16-mixed"):
    checkpoint = {"every_n_steps": 5, "every_n_epochs": None, "save_top_k": -1, "save_last": False}
    config = cfg(tmp_path, precision=precision, max_epochs=2, batch_size=32, checkpoint=checkpoint, metrics=[])
    model = mlp()
    trainer = Trainer(model, config, train_data=data)
    # step 3's gradients are inf: the scaler must skip that step and halve its scale
    model[3].weight.register_hook(lambda g: g * float("inf") if trainer.global_step + 1 == 3 else g)
    return trainer


def _full_state(trainer) -> dict[str, torch.Tensor]:
    flat = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    for name, tensor in tensors_in(trainer.optimizer.state_dict()["state"], "optimizer"):
        flat[name] = tensor
    flat["scaler"] = torch.tensor([float(v) for v in trainer.runtime.scaler.state_dict().values()])
    flat["lr"] = torch.tensor(trainer.scheduler.get_last_lr())
    return flat


def test_fp16_grad_scaler_round_trips_and_resume_is_bitwise(tmp_path, small):
    reference = _amp_trainer(tmp_path / "a", small[0])
    reference.fit()
    assert reference.global_step == 16
    folder = reference.run_dir / "checkpoints"
    saved = load_checkpoint(folder / "epoch000-step000005")
    saved_scaler = saved["recipe"]["callbacks"]["Optimizer[0]"]["scaler"]
    assert saved_scaler["scale"] == 2.0**15 and saved_scaler["_growth_tracker"] == 2  # backed off at step 3

    resumed = _amp_trainer(tmp_path / "b", small[0])
    resumed.load(folder / "epoch000-step000005")
    assert resumed.runtime.scaler.state_dict() == saved_scaler
    resumed.fit()
    assert_equal_tensors(_full_state(resumed), _full_state(reference))

    named = _amp_trainer(tmp_path / "c", small[0])
    named.train(resume_checkpoint_path=folder / "epoch001-step000010")  # Towhee's spelling, a named checkpoint
    assert_equal_tensors(_full_state(named), _full_state(reference))

    plain = Trainer(mlp(), cfg(tmp_path / "d", max_epochs=2, batch_size=32, metrics=[]), train_data=small[0])
    before = weights(plain.model)
    expected = r"precision changed from '16-mixed' .* to '32' .*resume with precision='16-mixed'"
    with pytest.raises(ResumeMismatchError, match=expected):
        plain.load(folder / "epoch000-step000005")
    assert_equal_tensors(weights(plain.model), before)
    plain_checkpoint = plain.save(tmp_path / "plain")
    with pytest.raises(ResumeMismatchError, match=r"precision changed from '32' .* to '16-mixed'"):
        _amp_trainer(tmp_path / "e", small[0]).load(plain_checkpoint)


# -- B25: non-finite loss ------------------------------------------------------------------------------
class Faulty(Trainer):
    """Injects a non-finite value at step ``fault_step``: into the loss ("nan", "inf"), or only into the
    gradients ("grad_nan", through a backward hook on one weight)."""

    def __init__(self, model, config, fault, fault_step, **kwargs):
        super().__init__(model, config, **kwargs)
        self.fault, self.fault_step, self.indices = fault, fault_step, None
        if fault == "grad_nan":
            model[1].weight.register_hook(lambda g: g * float("nan") if self._at_fault() else g)

    def _at_fault(self) -> bool:
        return self.global_step + 1 == self.fault_step

    def compute_loss(self, outputs, batch):
        loss = super().compute_loss(outputs, batch)
        if not self._at_fault():
            return loss
        self.indices = batch["index"].tolist()
        return {"nan": loss * float("nan"), "inf": loss + float("inf")}.get(self.fault, loss)


@pytest.mark.parametrize(
    ("fault", "step", "message"),
    [
        ("nan", 6, r"loss is nan at step 6 \(epoch 2\)"),
        ("inf", 3, r"loss is inf at step 3 \(epoch 1\)"),
        ("grad_nan", 7, r"gradients are non-finite \(norm nan\) at step 7 \(epoch 2\)"),
    ],
)
def test_non_finite_loss_stops_at_that_step_and_no_bad_checkpoint_exists(tmp_path, small, fault, step, message):
    checkpoint = {"every_n_steps": 1, "every_n_epochs": None, "save_top_k": -1, "save_last": True}
    trainer = Faulty(mlp(), cfg(tmp_path, max_epochs=3, checkpoint=checkpoint), fault, step, train_data=small[0])
    with pytest.raises(NonFiniteLossError, match=message) as caught:
        trainer.fit()
    assert f"batch sample indices: {trainer.indices}" in str(caught.value)
    assert trainer.global_step == step - 1
    saved = checkpoints(trainer.run_dir)
    assert max(m["global_step"] for m in saved.values()) == step - 1
    for name in saved:
        state = load_checkpoint(trainer.run_dir / "checkpoints" / name)
        recipe = state["recipe"]
        for where, tensor in tensors_in([recipe["registered"], recipe["callbacks"]["Optimizer[0]"]], "state"):
            assert bool(torch.isfinite(tensor).all()), (name, where)
    last = load_checkpoint(trainer.run_dir / "checkpoints" / "last")["recipe"]["registered"]["model"]
    assert_equal_tensors(last, weights(trainer.model))  # the bad step never reached the weights


@pytest.mark.parametrize(("fault", "warning"), [("nan", "skipping batch at step 3"),
                                                ("grad_nan", "skipping the optimizer step at step 3")])
def test_skip_policy_drops_the_bad_batch_and_training_continues(tmp_path, small, fault, warning):
    trainer = Faulty(mlp(), cfg(tmp_path, max_epochs=2, non_finite="skip"), fault, 3, train_data=small[0])
    with pytest.warns(UserWarning, match=warning):
        state = trainer.fit()
    assert state.global_step == 8 and trainer._guard.skipped == 1
    assert all(bool(torch.isfinite(t).all()) for t in trainer.model.state_dict().values())


def test_loss_terms_are_named_in_the_error():
    from trainforge.engine import State
    from trainforge.trainer_hooks import _NonFiniteGuard

    guard = _NonFiniteGuard("raise")
    guard.on_fit_start(State())
    terms = {"cross_entropy": torch.tensor(0.7), "aux": torch.tensor(float("nan"))}
    expected = r"loss is nan at step 1 \(epoch 1\); loss terms: cross_entropy=0.7, aux=nan; batch sample indices: \[4"
    with pytest.raises(NonFiniteLossError, match=expected):
        guard.check(torch.tensor(float("nan")), {"index": torch.tensor([4, 5])}, terms)


def test_a_non_finite_loss_ends_the_process_with_a_non_zero_exit_code(tmp_path):
    script = textwrap.dedent(f"""
        import torch
        from torch import nn
        from torch.utils.data import TensorDataset
        from trainforge import Trainer, TrainingConfig

        class Diverging(Trainer):
            def compute_loss(self, outputs, batch):
                loss = super().compute_loss(outputs, batch)
                return loss * float("nan") if self.global_step == 1 else loss

        data = TensorDataset(torch.randn(32, 8), torch.randint(0, 2, (32,)))
        config = TrainingConfig(output_dir={str(tmp_path / "run")!r}, max_epochs=1, batch_size=8, tensorboard=False,
                                report=False, print_steps=1000, metrics=[])
        Diverging(nn.Linear(8, 2), config, train_data=data).fit()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "NonFiniteLossError: loss is nan at step 2 (epoch 1)" in result.stderr


# -- B24: weights export ------------------------------------------------------------------------------
READER = """
import hashlib, json, sys
from safetensors.torch import load_file
from safetensors import safe_open
tensors = load_file(sys.argv[1])
with safe_open(sys.argv[1], "pt") as f:
    metadata = f.metadata()
digests = {k: [hashlib.sha256(v.contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest(), str(v.dtype),
               list(v.shape)] for k, v in tensors.items()}
assert not any(name.startswith("trainforge") for name in sys.modules)
print(json.dumps({"digests": digests, "metadata": metadata}))
"""


def _digest(t: torch.Tensor) -> list:
    data = t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    return [hashlib.sha256(data).hexdigest(), str(t.dtype), list(t.shape)]


def test_export_weights_round_trips_bitwise_in_a_fresh_process(tmp_path, small):
    config = cfg(tmp_path, max_epochs=2, ema_decay=0.9, image_size=8)
    trainer = Trainer(mlp(), config, train_data=small[0])
    trainer.class_names = [f"digit {i}" for i in range(10)]
    trainer.fit()
    path = trainer.export_weights(tmp_path / "model.safetensors", {"mean": [0.5], "std": [0.25]})
    reader = "import torch\n" + READER
    result = subprocess.run([sys.executable, "-c", reader, str(path)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    expected = {k: _digest(v) for k, v in trainer.ema.state_dict()["shadow"].items()}
    assert loaded["digests"] == expected  # the EMA weights, bit for bit
    assert loaded["digests"]["1.weight"] != _digest(trainer.model[1].weight)
    metadata = {k: json.loads(v) for k, v in loaded["metadata"].items() if k != "format" and "." not in k}
    assert metadata["class_names"] == trainer.class_names
    assert metadata["preprocessing"] == {"image_size": 8, "mean": [0.5], "std": [0.25]}
    assert metadata["ema"] is True and metadata["trainforge_version"]
    assert len(metadata["config_hash"]) == 16
    assert metadata["dataset_hash"] == trainer._data_fingerprint()["dataset_hash"] is not None


def test_device_losses_are_checked_at_the_cadence_and_name_the_first_bad_step():
    """The GPU path (no host sync per step), driven with CPU tensors: record, then check at the cadence."""
    from trainforge.engine import State
    from trainforge.trainer_hooks import _NonFiniteGuard

    guard = _NonFiniteGuard("raise", device_type="cuda")  # deferred: the accelerator path
    state = State()
    guard.on_fit_start(state)
    guard.every = 4
    for step, value in enumerate([1.0, 2.0, float("inf"), float("nan")]):
        state.global_step = step
        guard._record(torch.tensor(value), {"index": torch.tensor([10 * step, 10 * step + 1])}, None)
        if step < 3:
            state.global_step += 1
            guard.on_batch_end(state)  # steps 1-3: not at the cadence, nothing is read
    state.global_step = 4
    expected = r"loss is inf at step 3 \(epoch 1\); batch sample indices: \[20, 21\]"
    with pytest.raises(NonFiniteLossError, match=expected):
        guard.on_batch_end(state)


class SendSigterm(Callback):
    """Sends this process SIGTERM from inside the loop: after ``step``'s batch, or at the last epoch end."""

    def __init__(self, step=None, at_last_epoch_end=False):
        self.step, self.at_last_epoch_end = step, at_last_epoch_end

    def on_batch_end(self, state):
        if state.global_step == self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)

    def on_epoch_end(self, state):
        if self.at_last_epoch_end and state.epoch + 1 == state.max_epochs:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_stops_after_the_current_step_writes_last_and_exits_143(tmp_path, small, capsys):
    checkpoint = {"every_n_steps": None, "every_n_epochs": 1, "save_top_k": -1, "save_last": True}
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=3, checkpoint=checkpoint), train_data=small[0],
                      callbacks=[SendSigterm(step=6)])
    with pytest.raises(SystemExit) as caught:
        trainer.fit()
    assert caught.value.code == 143 and trainer.global_step == 6
    assert "SIGTERM: stopped after step 6" in capsys.readouterr().out
    assert read_manifest(trainer.run_dir / "checkpoints" / "last")["metadata"]["global_step"] == 6
    resumed = Trainer(mlp(), cfg(tmp_path, max_epochs=3, checkpoint=checkpoint), train_data=small[0])
    assert resumed.fit(resume_from="auto").global_step == 12


def test_sigterm_after_the_last_step_lets_the_finished_run_end_normally(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=2), train_data=small[0],
                      callbacks=[SendSigterm(at_last_epoch_end=True)])
    state = trainer.fit()  # no SystemExit: there is nothing left to resume
    assert state.epoch == 2 and state.global_step == 8


def test_non_finite_gradients_of_a_layer_unfrozen_mid_run_are_caught(tmp_path, small):
    """The gradient check follows the optimizer's groups: a group added by FreezeUnfreeze is checked too."""
    from trainforge.callbacks.freezing import FreezeUnfreeze

    model = mlp()
    trainer = Trainer(model, cfg(tmp_path, max_epochs=3), train_data=small[0])
    trainer.add_callback(FreezeUnfreeze(model, lambda: trainer.optimizer, modules=["1"], unfreeze_at_epoch=2,
                                        scheduler=lambda: trainer.scheduler))

    class PoisonAfterUnfreeze(Callback):  # epoch 3 (index 2): the layer is trainable again
        def on_epoch_start(self, state):
            if state.epoch == 2:
                model[1].weight.register_hook(lambda g: g * float("nan") if trainer.global_step + 1 == 10 else g)

    trainer.add_callback(PoisonAfterUnfreeze())
    with pytest.raises(NonFiniteLossError, match=r"gradients are non-finite \(norm nan\) at step 10 \(epoch 3\)"):
        trainer.fit()
    assert len(trainer.optimizer.param_groups) == 2 and trainer.global_step == 9


def test_every_line_logged_before_a_checkpoint_is_on_disk_when_it_commits(tmp_path, small):
    from trainforge.loggers import read_metrics_jsonl

    class LinesAtCheckpoint(Callback):
        def __init__(self):
            self.seen = []

        def on_checkpoint(self, state):  # no close yet: only the flush before saving put them there
            run_dir = state.extra["checkpoint_path"].parent.parent
            self.seen.append(max(r["step"] for r in read_metrics_jsonl(run_dir / "metrics.jsonl")))

    spy = LinesAtCheckpoint()
    checkpoint = {"every_n_steps": None, "every_n_epochs": 1, "save_top_k": -1, "save_last": False}
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=3, checkpoint=checkpoint, log_every_n_steps=1),
                      train_data=small[0], callbacks=[spy])
    trainer.fit()
    assert spy.seen == [4, 8, 12]  # each epoch's last logged step, although lines are flushed once a second
