"""``train`` and ``test_mode`` pick a split or drop labels: a value that is not a bool ("false" from a
hand-written config, 0, None) is an error naming the parameter, never Python's truthiness."""

from __future__ import annotations

import pytest

from trainforge.data.standard import CIFAR10, CIFAR100, MNIST
from trainforge.data.torchok_examples import SOP, SweetPepper, TripletSOP
from trainforge.errors import ConfigError


@pytest.mark.parametrize("cls", [CIFAR10, CIFAR100, MNIST, SOP, SweetPepper, TripletSOP])
@pytest.mark.parametrize("value", ["false", 0, None])
def test_a_split_flag_that_is_not_a_bool_is_refused(cls, value, tmp_path) -> None:
    with pytest.raises(ConfigError, match=f"{cls.__name__} train={value!r}: expected true or false"):
        cls(tmp_path, train=value)


@pytest.mark.parametrize("cls", [CIFAR10, CIFAR100, MNIST, SOP, SweetPepper])
def test_test_mode_that_is_not_a_bool_is_refused(cls, tmp_path) -> None:
    with pytest.raises(ConfigError, match=f"{cls.__name__} test_mode='yes': expected true or false"):
        cls(tmp_path, test_mode="yes")


@pytest.mark.parametrize("value", ["'false'", "0", "null"])
def test_config_check_refuses_a_split_flag_that_is_not_a_bool(value, tmp_path, capsys) -> None:
    """``config check`` reads no data, yet a data set's bool parameter is checked from its signature."""
    from trainforge.cli import main

    config = tmp_path / "cifar.yaml"
    config.write_text(
        "task: {name: ClassificationTask, params: {backbone_name: small_cnn, num_classes: 10}}\n"
        "optimization: [{optimizer: {name: Adam, params: {lr: 0.001}}}]\n"
        "joint_loss: {losses: [{name: CrossEntropyLoss}]}\n"
        "data:\n"
        "  TRAIN:\n"
        f"    - dataset: {{name: CIFAR10, params: {{root: {tmp_path}, train: {value}}}}}\n"
        "      dataloader: {batch_size: 8}\n",
        encoding="utf-8",
    )
    assert main(["config", "check", str(config)]) != 0
    err = capsys.readouterr().err
    shown = {"'false'": "'false'", "0": "0", "null": "None"}[value]
    assert f"data.TRAIN[0].dataset.params.train={shown}: expected true or false" in err, err
    config.write_text(config.read_text(encoding="utf-8").replace(f"train: {value}", "train: true"), encoding="utf-8")
    assert main(["config", "check", str(config)]) == 0, capsys.readouterr().err
