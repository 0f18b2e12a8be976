from __future__ import annotations

import pytest
import torch
from torch import nn

from trainforge.errors import ConfigError, RegistryError
from trainforge.optim import build_optimizer, list_optimizers


@pytest.mark.parametrize("name", ["adamw", "AdamW", "ADAMW"])
def test_torch_names_are_case_insensitive(name):
    opt = build_optimizer(name, nn.Linear(2, 1), lr=0.01)
    assert type(opt) is torch.optim.AdamW
    assert opt.param_groups[0]["lr"] == 0.01


def test_torch_wins_over_timm_for_shared_names():
    assert type(build_optimizer("sgd", nn.Linear(2, 1), lr=0.1)) is torch.optim.SGD


def test_module_gives_only_parameters_trainable_at_build_time():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    net[0].requires_grad_(False)
    opt = build_optimizer("sgd", net, lr=0.1)
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in net[1].parameters()]
    net[0].requires_grad_(True)
    with pytest.raises(ConfigError, match="no parameters"):
        build_optimizer("sgd", nn.Linear(2, 1).requires_grad_(False), lr=0.1)


def test_param_group_dicts_keep_their_own_values():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    groups = [{"params": net[0].parameters(), "lr": 0.5}, {"params": net[1].parameters()}]
    opt = build_optimizer("SGD", groups, lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]
    assert opt.param_groups[1]["momentum"] == 0.9


@pytest.mark.parametrize("name", ["lamb", "lion"])
def test_timm_optimizer_by_name_builds_and_steps(name):
    torch.manual_seed(0)
    net = nn.Linear(4, 2)
    before = net.weight.detach().clone()
    opt = build_optimizer(name, net, lr=0.01, weight_decay=0.0)
    net(torch.randn(8, 4)).square().mean().backward()
    opt.step()
    assert type(opt).__module__.startswith("timm")
    assert not torch.equal(before, net.weight)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(RegistryError, match="adamw") as info:
        build_optimizer("adamww", nn.Linear(2, 1), lr=0.1)
    assert isinstance(info.value, KeyError)
    assert "list_optimizers()" in str(info.value)


def test_bad_kwarg_names_optimizer_argument_and_accepted_ones():
    with pytest.raises(ConfigError) as info:
        build_optimizer("adamw", nn.Linear(2, 1), lr=0.1, weight_decai=0.1)
    message = str(info.value)
    assert "'adamw'" in message and "'weight_decai'" in message and "did you mean 'weight_decay'" in message
    assert "betas" in message and "amsgrad" in message
    with pytest.raises(ConfigError, match=r"'lamb'.*'mommentum'"):
        build_optimizer("lamb", nn.Linear(2, 1), lr=0.1, mommentum=0.9)


def test_bad_value_is_a_config_error():
    with pytest.raises(ConfigError, match=r"'sgd'.*learning rate"):
        build_optimizer("sgd", nn.Linear(2, 1), lr=-1.0)


def test_list_optimizers_has_torch_and_timm_names():
    names = list_optimizers()
    assert {"adamw", "sgd", "rmsprop", "lamb", "lion", "adabelief"} <= set(names)
    assert names == sorted(names)
