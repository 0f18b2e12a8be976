"""Config -> objects: each optimizer gets only the parameters of the modules it names, parameter-group
rules, scheduler stepping (interval, frequency, plateau monitor), and freezing from TorchOk's lists."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from trainforge.config import build_experiment, parse_experiment
from trainforge.config.build import EveryN, PlateauStep
from trainforge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
BASE = yaml.safe_load((ROOT / "configs" / "classification_digits.yaml").read_text())
COMPOSED = {"backbone_name": "small_cnn", "backbone_params": {"width": 8, "depth": 2}, "pooling_name": "Pooling",
            "head_name": "ClassificationHead", "num_classes": 10, "in_channels": 1}
TWO = [
    {"optimizer": {"name": "SGD", "params": {"lr": 0.1, "weight_decay": 0.01}}, "modules": ["backbone"],
     "no_decay_norm_and_bias": True, "scheduler": {"name": "StepLR", "params": {"step_size": 1},
                                                    "pl_params": {"interval": "step", "frequency": 3}}},
    {"optimizer": {"name": "AdamW", "params": {"lr": 0.01}}, "modules": ["head"],
     "param_groups": [{"pattern": "head.*.bias", "lr_mult": 0.5}],
     "scheduler": {"name": "ReduceLROnPlateau", "params": {"patience": 1}, "pl_params": {"monitor": "valid/loss"}}},
]


def _experiment(tmp_path: Path, **changes):
    cfg = copy.deepcopy(BASE)
    cfg["task"]["params"] = dict(COMPOSED)
    cfg["trainer"].update({"max_epochs": 1, "print_steps": 1000, "report": False})
    cfg["data"]["TRAIN"][0]["limit"] = 128
    cfg["logger"] = None
    cfg.update(changes)
    return build_experiment(parse_experiment(cfg), tmp_path / "run")


def test_each_optimizer_gets_only_its_modules(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path, optimization=copy.deepcopy(TWO))
    trainer = experiment.trainer
    model = trainer.model
    first = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert first == {id(p) for p in model.backbone.parameters()}
    extra = [c for c in trainer.callbacks if type(c).__name__ == "Optimizer"]
    assert len(extra) == 1
    second = {id(p) for g in extra[0].optimizer.param_groups for p in g["params"]}
    assert second == {id(p) for p in model.head.parameters()} and not first & second
    decays = {p.dim(): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert decays[4] == 0.01 and decays[1] == 0.0  # conv weights decay; norms and biases do not
    lrs = {tuple(p.shape): g["lr"] for g in extra[0].optimizer.param_groups for p in g["params"]}
    assert sorted(lrs.values()) == pytest.approx([0.005, 0.01])  # the head bias at half the lr
    assert [lr for shape, lr in lrs.items() if len(shape) == 1] == pytest.approx([0.005])
    assert isinstance(trainer.scheduler, EveryN) and trainer.scheduler.frequency == 3
    assert any(isinstance(c, PlateauStep) and c.monitor == "valid/loss" for c in trainer.callbacks)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.fit()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any(n.startswith("backbone.") for n in moved) and any(n.startswith("head.") for n in moved)
    assert trainer.scheduler.calls == 4 and trainer.scheduler.scheduler.last_epoch == 1  # 4 steps / 3


def test_a_parameter_named_by_two_optimizers_is_an_error(tmp_path: Path) -> None:
    pairs = copy.deepcopy(TWO)
    pairs[1]["modules"] = ["head", "backbone.stages.0"]
    with pytest.raises(ConfigError, match=r"optimization\[1\].modules and optimization\[0\].modules both take"):
        _experiment(tmp_path, optimization=pairs)


def test_an_unknown_module_and_an_unmatched_pattern_name_the_key(tmp_path: Path) -> None:
    pairs = copy.deepcopy(TWO)
    pairs[1]["modules"] = ["haed"]
    with pytest.raises(ConfigError, match=r"optimization\[1\].modules\[0\]='haed'.*did you mean 'head'"):
        _experiment(tmp_path, optimization=pairs)
    pairs = copy.deepcopy(TWO)
    pairs[1]["param_groups"] = [{"pattern": "neck.*", "lr_mult": 2.0}]
    with pytest.raises(ConfigError, match=r"optimization\[1\].param_groups\[0\].pattern='neck.\*' matches no"):
        _experiment(tmp_path, optimization=pairs)


def test_torchok_freeze_list_freezes_forever_and_until_an_epoch(tmp_path: Path) -> None:
    freeze = {"name": "FreezeUnfreeze", "params": {"freeze_modules": [
        {"module_name": "backbone", "stages": 0},
        {"module_name": "head", "epoch": 1},
    ]}}
    callbacks = [*BASE["callbacks"], freeze]
    experiment = _experiment(tmp_path, callbacks=callbacks)
    model = experiment.trainer.model
    assert not any(p.requires_grad for p in model.backbone.stages[0].parameters())
    assert all(p.requires_grad for p in model.backbone.stages[1].parameters())
    assert not any(p.requires_grad for p in model.head.parameters())  # until epoch 1
    in_optimizer = {id(p) for g in experiment.trainer.optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in model.head.parameters()}
