"""Broken experiment configs, table-driven: each error names the key path and the fix, and is raised
before any data is read."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from trainforge.config import check_experiment, parse_experiment
from trainforge.errors import ConfigError
from trainforge.registry import registry

ROOT = Path(__file__).resolve().parents[3]
BASE = yaml.safe_load((ROOT / "configs" / "classification_digits.yaml").read_text())


def _set(path: str, value: object):
    def change(cfg: dict) -> None:
        *parents, last = path.split(".")
        node = cfg
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


_DELETE = object()
FREEZE = {"name": "FreezeUnfreeze", "params": {"freeze_modules": [{"module_name": "0", "stage": 1}]}}

# (case, change, words the message must contain: the key path and the fix)
CASES = [
    ("unknown key", _set("trainer.max_epoch", 3), ["trainer has no key 'max_epoch'", "did you mean 'max_epochs'"]),
    ("unknown top-level key", _set("optimisation", []), ["no key 'optimisation'", "did you mean 'optimization'"]),
    ("wrong type", _set("trainer.max_epochs", "ten"), ["trainer.max_epochs='ten'", "expected an integer"]),
    ("wrong type in a list", _set("optimization.0.optimizer.params", [1]),
     ["optimization[0].optimizer.params", "expected a mapping"]),
    ("bool is not an int", _set("data.TRAIN.0.dataloader.batch_size", True), ["data.TRAIN[0].dataloader.batch_size",
                                                                                "expected an integer"]),
    ("bad choice", _set("trainer.precision", 8), ["trainer.precision=8", "expected one of"]),
    ("unknown loss", _set("joint_loss.losses.0.name", "CrossEntropyLos"), ["joint_loss.losses[0].name",
                                                                             "did you mean 'CrossEntropyLoss'"]),
    ("unknown optimizer", _set("optimization.0.optimizer.name", "AdamWW"), ["optimization[0].optimizer.name",
                                                                              "did you mean 'AdamW'"]),
    ("unknown scheduler", _set("optimization.0.scheduler.name", "cosin"), ["optimization[0].scheduler.name",
                                                                             "did you mean 'cosine'"]),
    ("unknown metric", _set("metrics.0.name", "Acuracy"), ["metrics[0].name", "did you mean 'Accuracy'"]),
    ("unknown callback", _set("callbacks.0.name", "ModelCheckpointt"), ["callbacks[0].name",
                                                                          "did you mean 'ModelCheckpoint'"]),
    ("unknown task", _set("task.name", "ClassificationTsk"), ["task.name", "ClassificationTsk"]),
    ("unknown data set", _set("data.TRAIN.0.dataset.name", "Digts"), ["data.TRAIN[0].dataset.name", "Digts"]),
    ("missing task", _set("task", _DELETE), ["task is required", "{name, params}"]),
    ("missing data", _set("data", _DELETE), ["data is required"]),
    ("missing loss to train", lambda cfg: (cfg.pop("joint_loss"), cfg["task"].update(name="Trainer")),
     ["joint_loss is required to train", "CrossEntropyLoss"]),  # the plain Trainer brings no loss of its own
    ("missing optimization", _set("optimization", _DELETE), ["optimization is required to train", "lr"]),
    ("missing TRAIN data", _set("data.TRAIN", _DELETE), ["data.TRAIN is required to train"]),
    ("missing name", _set("metrics.0.name", _DELETE), ["metrics[0].name is required"]),
    ("missing lr", _set("optimization.0.optimizer.params.lr", _DELETE), ["optimization[0].optimizer.params.lr is "
                                                                          "required"]),
    ("bad loss mapping key", _set("joint_loss.losses.0.mapping", {"inpt": "output", "target": "target"}),
     ["joint_loss.losses[0].mapping", "'inpt'", "it takes: input, target"]),
    ("bad metric mapping key", _set("metrics.0.mapping", {"pred": "output"}), ["metrics[0].mapping has no key 'pred'",
                                                                                 "did you mean 'preds'"]),
    ("bad phase name", _set("data.TRIAN", []), ["data has no key 'TRIAN'", "did you mean 'TRAIN'"]),
    ("bad metric phase", _set("metrics.1.phases", ["VALIDATION"]), ["metrics[1].phases[0]='VALIDATION'",
                                                                      "TRAIN, VALID, TEST or PREDICT"]),
    ("typo inside task.params", _set("task.params.backbone_nam", "SmallCNN"), ["task.params has no key "
                                                                                 "'backbone_nam'",
                                                                                 "did you mean 'backbone_name'"]),
    ("typo in a callback's params", _set("callbacks.0.params.save_top", 2), ["callbacks[0].params has no key "
                                                                               "'save_top'",
                                                                               "did you mean 'save_top_k'"]),
    ("TorchOk's arcface typo stage", lambda cfg: cfg["callbacks"].append(FREEZE),
     ["callbacks[1].params.freeze_modules[0] has no key 'stage'", "did you mean 'stages'"]),
    ("monitor never logged", _set("callbacks.0.params.monitor", "valid/acc"), ["callbacks[0].params.monitor",
                                                                                 "did you mean 'valid/accuracy'"]),
    ("typo in scheduler params", _set("optimization.0.scheduler.params", {"warmup_ration": 0.1}),
     ["optimization[0].scheduler.params", "warmup_ration"]),
    ("bad interval", _set("optimization.0.scheduler.pl_params.interval", "batch"),
     ["optimization[0].scheduler.pl_params.interval='batch'", "expected one of step, epoch"]),
    ("plateau without monitor", _set("optimization.0.scheduler", {"name": "ReduceLROnPlateau"}),
     ["optimization[0].scheduler.pl_params.monitor is required", "valid/loss"]),
    ("plateau monitor never logged", _set("optimization.0.scheduler", {
        "name": "ReduceLROnPlateau", "pl_params": {"monitor": "valid/los"}}),
     ["optimization[0].scheduler.pl_params.monitor='valid/los'", "did you mean 'valid/loss'"]),
    ("typo in data set params", _set("data.TRAIN.0.dataset.params.splitt", "train"),
     ["data.TRAIN[0].dataset.params has no key 'splitt'", "did you mean 'split'"]),
    ("typo in dataloader", _set("data.VALID.0.dataloader.batchsize", 4), ["data.VALID[0].dataloader has no key "
                                                                            "'batchsize'",
                                                                            "did you mean 'batch_size'"]),
    ("negative batch size", _set("data.TRAIN.0.dataloader.batch_size", 0), ["data.TRAIN[0].dataloader.batch_size "
                                                                              "must be >= 1"]),
    ("two TRAIN sets", _set("data.TRAIN", [BASE["data"]["TRAIN"][0]] * 2), ["data.TRAIN has 2 pairs"]),
    ("seeds twice", _set("task.seed_params", {"seed": 1}), ["seed_params is given twice"]),
    ("bad mode", _set("mode", "fit"), ["mode='fit' is not allowed", "train, test, predict"]),
    ("infinite number", _set("optimization.0.optimizer.params.lr", float("inf")), ["optimization[0].optimizer.params"
                                                                                     ".lr must be a positive"]),
]


def check(values: dict) -> None:
    check_experiment(parse_experiment(values))


def test_the_base_config_is_valid() -> None:
    check(copy.deepcopy(BASE))


@pytest.mark.parametrize(("case", "change", "words"), CASES, ids=[c[0] for c in CASES])
def test_broken_config_names_key_and_fix(case: str, change, words: list[str]) -> None:
    values = copy.deepcopy(BASE)
    change(values)
    with pytest.raises(ConfigError) as error:
        check(values)
    message = str(error.value)
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"


_READ: list[str] = []


class _Exploding:
    """A data set that records being built (reading data)."""

    def __init__(self, split: str = "train") -> None:
        _READ.append("read")


def test_errors_come_before_any_data_is_read(tmp_path: Path) -> None:
    from trainforge.config import build_experiment

    if "ExplodingForTest" not in registry("datasets"):
        registry("datasets").register(_Exploding, name="ExplodingForTest")
    values = copy.deepcopy(BASE)
    values["data"]["TRAIN"][0]["dataset"]["name"] = "ExplodingForTest"
    values["optimization"][0]["optimizer"]["name"] = "Adamm"
    with pytest.raises(ConfigError, match="optimization"):
        build_experiment(parse_experiment(values), tmp_path / "run")
    assert _READ == []
    assert not (tmp_path / "run").exists()
