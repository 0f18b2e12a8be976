"""What an experiment evaluates: every VALID / TEST set with its own dataloader settings (TorchOk's
classification_cifar10_multi_validation.yaml style), and ``trainforge test`` on a trained run using the
best checkpoint by the monitored metric, saying which weights it used."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from trainforge.config import build_experiment, parse_experiment

ROOT = Path(__file__).resolve().parents[3]
DIGITS = yaml.safe_load((ROOT / "configs" / "classification_digits.yaml").read_text())


def _valid(batch_size: int, limit: int, name: str | None = None, **loader: object) -> dict:
    pair = {"dataset": {"name": "Digits", "params": {"split": "valid"}}, "limit": limit,
            "dataloader": {"batch_size": batch_size, **loader}}
    if name:
        pair["name"] = name
    return pair


def _config(**changes: object) -> dict:
    cfg = copy.deepcopy(DIGITS)
    cfg["trainer"].update({"max_epochs": 1, "print_steps": 1000, "report": False, "accelerator": "cpu"})
    cfg["data"]["TRAIN"][0]["limit"] = 64
    cfg["logger"] = None
    cfg.update(changes)
    return cfg


class BatchSizes:
    """Records the size of every evaluation batch, in order."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_eval_batch_end(self, state) -> None:
        self.sizes.append(len(state.batch["input"]))


def test_each_valid_and_test_set_keeps_its_own_batch_size(tmp_path: Path) -> None:
    cfg = _config()
    cfg["data"]["VALID"] = [_valid(256, 20), _valid(7, 30, "small"), _valid(50, 120, "large", pin_memory=False)]
    cfg["data"]["TEST"] = [_valid(11, 33)]
    experiment = build_experiment(parse_experiment(cfg), tmp_path / "run")
    recorder = BatchSizes()
    experiment.trainer.callbacks.append(recorder)
    metrics = experiment.trainer.evaluate()
    assert recorder.sizes == [20] + [7] * 4 + [2] + [50, 50, 20]
    assert {"valid/accuracy", "valid_small/accuracy", "valid_large/accuracy"} <= set(metrics)
    recorder.sizes.clear()
    experiment.trainer.evaluate(experiment.eval_data["TEST"], phase="TEST")
    assert recorder.sizes == [11, 11, 11]  # not the first VALID set's 256


def test_a_test_set_in_test_mode_keeps_its_batch_size_too(tmp_path: Path, capsys) -> None:
    cfg = _config()
    cfg["data"]["TEST"] = [_valid(9, 20), _valid(4, 8, "extra")]
    experiment = build_experiment(parse_experiment(cfg), tmp_path / "run", mode="test")
    recorder = BatchSizes()
    experiment.trainer.callbacks.append(recorder)
    experiment.trainer.evaluate(experiment.eval_data["TEST"], phase="TEST")
    assert recorder.sizes == [9, 9, 2, 4, 4]
    assert "test uses the model as built from task.params (nothing trained loaded): pass +resume_path=" in (
        capsys.readouterr().err)


def test_drop_last_on_an_evaluation_set_is_noted_not_applied(tmp_path: Path, capsys) -> None:
    cfg = _config()
    cfg["data"]["VALID"] = [_valid(8, 20, drop_last=True)]
    experiment = build_experiment(parse_experiment(cfg), tmp_path / "run")
    recorder = BatchSizes()
    experiment.trainer.callbacks.append(recorder)
    experiment.trainer.evaluate()
    assert recorder.sizes == [8, 8, 4]
    assert "data.VALID[0].dataloader.drop_last is ignored: evaluation never drops samples" in capsys.readouterr().err


def test_evaluation_checkpoint_refuses_or_explains_surprising_paths(tmp_path: Path) -> None:
    import pytest
    import torch

    from trainforge.checkpoint import save_checkpoint
    from trainforge.config.build import evaluation_checkpoint
    from trainforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"resume_path='.*nowhere' does not exist; give a run folder or a checkpoint"):
        evaluation_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds no intact checkpoint"):
        evaluation_checkpoint(tmp_path / "empty")
    run = tmp_path / "run"  # two scored checkpoints and no config.yaml: the mode is unknown
    for step, score in ((5, 0.2), (9, 0.1)):
        save_checkpoint(run / "checkpoints" / f"s{step}", {"w": torch.ones(1)},
                        {"global_step": step, "monitor": "valid/loss", "score": score})
    found, why = evaluation_checkpoint(run / "checkpoints")  # the checkpoints folder itself works too
    assert found.name == "s9" and "the newest checkpoint s9 (the monitor's mode is unknown)" in why
    (run / "config.yaml").write_text("checkpoint: {monitor: valid/loss, mode: min}\n")
    found, why = evaluation_checkpoint(run)
    assert found.name == "s9" and "also the newest" in why
    (run / "config.yaml").write_text("checkpoint: {monitor: valid/loss, mode: max}\n")
    assert evaluation_checkpoint(run)[0].name == "s5"
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"x")
    assert evaluation_checkpoint(weights) == (weights, f"resume_path={str(weights)!r}: the checkpoint given "
                                                       "(weights.safetensors)")
