from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from trainforge.errors import ConfigError, RegistryError
from trainforge.losses import JointLoss, build_loss, list_losses, register_loss

_NEEDS_ARGS = {"LinearCrossEntropyLoss": {"in_features": 4, "num_classes": 3}}


@pytest.mark.parametrize("name", list_losses())
def test_every_listed_loss_builds(name):
    assert isinstance(build_loss(name, **_NEEDS_ARGS.get(name, {})), nn.Module)


@pytest.mark.parametrize("name", ["CrossEntropyLoss", "cross_entropy", "crossentropyloss", "CROSS-ENTROPY"])
def test_name_spellings(name):
    assert type(build_loss(name)) is nn.CrossEntropyLoss


def test_other_torch_losses_and_params():
    assert type(build_loss("mse")) is nn.MSELoss
    assert build_loss("smooth_l1", beta=0.5).beta == 0.5
    ce = build_loss("CrossEntropyLoss", weight=[1.0, 2.0], label_smoothing=0.1)
    assert torch.equal(ce.weight, torch.tensor([1.0, 2.0])) and ce.label_smoothing == 0.1


def test_unknown_loss_and_bad_params():
    with pytest.raises(RegistryError, match="CrossEntropyLoss"):
        build_loss("cross_entropyy")
    with pytest.raises(ConfigError, match=r"'mse'.*'smoothing'.*reduction"):
        build_loss("mse", smoothing=0.1)


def test_register_loss_and_duplicates():
    @register_loss("test_abs_sum")
    class AbsSum(nn.Module):
        def __init__(self, scale: float = 1.0):
            super().__init__()
            self.scale = scale

        def forward(self, input, target):
            return self.scale * (input - target).abs().sum()

    assert build_loss("TestAbsSumLoss", scale=2.0)(torch.ones(2), torch.zeros(2)).item() == 4.0
    assert "test_abs_sum" in list_losses()
    with pytest.raises(ConfigError, match="already exists"):
        register_loss("test_abs_sum")(AbsSum)
    with pytest.raises(ConfigError, match="already exists"):
        register_loss("MSELoss")(AbsSum)


def _data():
    torch.manual_seed(0)
    outputs = {"output": torch.randn(6, 3, requires_grad=True), "embedding": torch.randn(6, 4)}
    batch = {"target": torch.randint(0, 3, (6,)), "embedding_target": torch.randn(6, 4)}
    return outputs, batch


def test_joint_loss_is_the_weighted_sum_of_mapped_terms():
    outputs, batch = _data()
    loss = JointLoss(
        [
            {"name": "CrossEntropyLoss", "weight": 1.5, "params": {"label_smoothing": 0.1}},
            {
                "name": "mse",
                "weight": 0.25,
                "tag": "embed",
                "mapping": {"input": "embedding", "target": "embedding_target"},
            },
        ]
    )
    total, terms = loss(outputs, batch)
    ce = F.cross_entropy(outputs["output"], batch["target"], label_smoothing=0.1)
    mse = F.mse_loss(outputs["embedding"], batch["embedding_target"])
    assert list(terms) == ["cross_entropy", "embed"]
    torch.testing.assert_close(terms["cross_entropy"], ce)
    torch.testing.assert_close(terms["embed"], mse)
    torch.testing.assert_close(total, 1.5 * ce + 0.25 * mse)
    assert all(isinstance(v, torch.Tensor) for v in terms.values())  # no .item(): stays on device
    total.backward()
    assert outputs["output"].grad is not None


def test_joint_loss_normalize_weights():
    outputs, batch = _data()
    loss = JointLoss([{"name": "cross_entropy", "weight": 1.0}, {"name": "nll", "weight": 3.0}], normalize_weights=True)
    assert loss.weights == [0.25, 0.75]
    total, terms = loss(outputs, batch)
    torch.testing.assert_close(total, 0.25 * terms["cross_entropy"] + 0.75 * terms["nll"])


def test_joint_loss_mapping_error_names_the_missing_key():
    outputs, batch = _data()
    loss = JointLoss([{"name": "mse", "mapping": {"input": "embeddings", "target": "embedding_target"}}])
    with pytest.raises(ConfigError, match=r"losses\[0\]\.mapping\.input: key 'embeddings'.*'embedding'"):
        loss(outputs, batch)
    with pytest.raises(ConfigError, match=r"mapping\.input: key 'output'"):
        JointLoss([{"name": "mse"}])({}, batch)


def test_joint_loss_config_errors():
    with pytest.raises(ConfigError, match=r"'inpt'.*it takes: input, target"):
        JointLoss([{"name": "mse", "mapping": {"inpt": "output", "target": "target"}}])
    with pytest.raises(ConfigError, match="used more than once"):
        JointLoss([{"name": "mse"}, {"name": "MSELoss"}])
    with pytest.raises(ConfigError, match=r"losses\[0\] has unknown key"):
        JointLoss([{"name": "mse", "wieght": 2.0}])
    with pytest.raises(ConfigError, match="empty"):
        JointLoss([])
