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
