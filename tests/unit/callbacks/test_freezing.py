from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

from trainforge.callbacks import Optimizer
from trainforge.callbacks.freezing import (
    FreezeBatchNorm,
    FreezeUnfreeze,
    LayerFreezer,
    freeze_batchnorm,
    set_batchnorm_eval,
)
from trainforge.engine import Recipe
from trainforge.errors import ConfigError
from trainforge.optim import build_optimizer, build_scheduler


def _model(batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8) if batchnorm else nn.Identity(), nn.ReLU())
    return nn.Sequential(OrderedDict(stem=nn.Linear(4, 8), act=nn.ReLU(), body=body, head=nn.Linear(8, 3)))


def _batches(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def _recipe(model, optimizer, callbacks, scheduler=None):
    def step(batch):
        x, y = batch
        nn.functional.cross_entropy(model(x), y).backward()

    recipe = Recipe(step, _batches())
    recipe.register("model", model)
    recipe.callbacks.add(Optimizer(optimizer, scheduler=scheduler))
    for callback in callbacks:
        recipe.callbacks.add(callback)
    return recipe


class Snapshots:
    """Copies a module's parameters at each epoch end."""

    def __init__(self, module):
        self.module, self.taken = module, []

    def on_epoch_end(self, state):
        self.taken.append([p.detach().clone() for p in self.module.parameters()])


class TrainMode:
    """What a trainer does: ``model.train()`` at each epoch start (which un-evals BatchNorm)."""

    group = "prologue"

    def __init__(self, model):
        self.model = model

    def on_epoch_start(self, state):
        self.model.train()


# -- LayerFreezer ------------------------------------------------------------------------------------
def test_layer_freezer_by_names_idx_and_status():
    model = _model(batchnorm=True)
    freezer = LayerFreezer(model)
    assert freezer.layer_names == ["stem", "act", "body", "head"]
    freezer.by_names(["stem", "body.0"])  # a dotted module path: body's Linear, not its BatchNorm
    assert freezer.status("stem") == "frozen" and freezer.status(0) == "frozen"
    assert freezer.status("body") == "partially frozen" and freezer.status("head") == "unfrozen"
    assert freezer.show_frozen_layers() == ["stem", "body"]
    freezer.by_idx([-1, 2])
    assert freezer.status("body") == freezer.status(-1) == "frozen"
    freezer.by_names(["body"], freeze=False)
    assert freezer.show_frozen_layers() == ["stem", "head"]
    assert freezer.status("act") == "unfrozen"  # no parameters


def test_layer_freezer_slices_and_all():
    model = _model()
    freezer = LayerFreezer(model)
    freezer.set_slice(2)
    assert freezer.show_frozen_layers() == ["stem"]  # "act" has no parameters
    freezer.set_all(freeze=False)
    freezer.set_slice(-1)  # Towhee: all but the last layer
    assert freezer.show_frozen_layers() == ["stem", "body"] and freezer.status("head") == "unfrozen"
    freezer.set_all()
    assert not any(p.requires_grad for p in model.parameters())
    freezer.set_all(freeze=False)
    assert all(p.requires_grad for p in model.parameters())


def test_layer_freezer_errors_list_available_layers():
    freezer = LayerFreezer(_model())
    with pytest.raises(ConfigError, match=r"'heads'.*Close module paths: head.*stem, act, body, head"):
        freezer.by_names(["heads"])
    with pytest.raises(ConfigError, match=r"index 4.*0: stem, 1: act, 2: body, 3: head"):
        freezer.by_idx([4])
    with pytest.raises(ConfigError, match="index -5"):
        freezer.status(-5)


# -- FreezeUnfreeze through the loop ------------------------------------------------------------------
def test_frozen_weights_stay_identical_then_unfreeze_with_own_lr():
    model = _model()
    stem_before = [p.detach().clone() for p in model.stem.parameters()]
    head_before = [p.detach().clone() for p in model.head.parameters()]
    unfreeze = FreezeUnfreeze(model, lambda: optimizer, ["stem"], unfreeze_at_epoch=2, lr=0.005)
    optimizer = build_optimizer("sgd", model, lr=0.1, momentum=0.9)
    assert len(optimizer.param_groups[0]["params"]) == 4  # body's and head's weight and bias only
    snapshots = Snapshots(model.stem)
    _recipe(model, optimizer, [unfreeze, snapshots]).run(4)
    for epoch in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(snapshots.taken[epoch], stem_before))
    assert not any(torch.equal(a, b) for a, b in zip(snapshots.taken[2], stem_before))
    assert not torch.equal(model.head.weight, head_before[0])
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.005]
    assert optimizer.param_groups[1]["params"] == list(model.stem.parameters())
    assert optimizer.param_groups[1]["momentum"] == 0.9  # other hyper-parameters: the optimizer's defaults
    assert all(p.requires_grad for p in model.parameters())


def test_default_lr_and_scheduled_new_group_follows_the_schedule():
    model = _model()
    unfreeze = FreezeUnfreeze(model, lambda: optimizer, ["stem", "body"], unfreeze_at_epoch=1, scheduler=lambda: sched)
    optimizer = build_optimizer("sgd", model, lr=0.2)
    sched = build_scheduler("cosine", optimizer, total_steps=16, warmup_steps=2)
    seen = []

    class RecordLrs:
        def on_batch_start(self, state):
            seen.append([g["lr"] for g in optimizer.param_groups])

    _recipe(model, optimizer, [unfreeze, RecordLrs()], scheduler=sched).run(4)
    assert [len(lrs) for lrs in seen] == [1] * 4 + [2] * 12
    for lrs in seen[4:]:
        assert lrs[1] == pytest.approx(0.1 * lrs[0])  # default: 0.1 x, following the same cosine
    assert seen[-1][0] < seen[4][0]


def test_resume_after_unfreeze_equals_uninterrupted_run():
    def build():
        model = _model()
        unfreeze = FreezeUnfreeze(model, lambda: opt, ["stem"], unfreeze_at_epoch=1, scheduler=lambda: sched)
        opt = build_optimizer("adamw", model, lr=0.01)
        sched = build_scheduler("linear", opt, total_steps=16, warmup_steps=3)
        return model, _recipe(model, opt, [unfreeze], scheduler=sched), opt

    model, recipe, _ = build()
    recipe.run(4)
    uninterrupted = copy.deepcopy(model.state_dict())

    model, recipe, _ = build()
    recipe.run(2)
    saved = copy.deepcopy(recipe.state_dict())
    model, recipe, opt = build()
    assert len(opt.param_groups) == 1
    recipe.load_state_dict(saved)  # FreezeUnfreeze (prologue) loads before the Optimizer callback
    assert len(opt.param_groups) == 2
    recipe.run(4)
    for name, value in model.state_dict().items():
        assert torch.equal(value, uninterrupted[name]), name


def test_unfreeze_is_idempotent():
    model = _model()
    unfreeze = FreezeUnfreeze(model, lambda: optimizer, ["stem"], unfreeze_at_epoch=0)
    optimizer = build_optimizer("sgd", model, lr=0.1)
    unfreeze.unfreeze()
    unfreeze.load_state_dict({"unfrozen": True})
    unfreeze.on_epoch_start(Recipe(lambda b: None, []).state)
    FreezeUnfreeze(model, optimizer, ["stem"], unfreeze_at_epoch=0).unfreeze()  # already optimized: no group
    assert len(optimizer.param_groups) == 2


def test_parameters_already_in_optimizer_are_an_error():
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    unfreeze = FreezeUnfreeze(model, optimizer, ["stem"], unfreeze_at_epoch=1)
    with pytest.raises(ConfigError, match=r"already in the optimizer.*before building the optimizer"):
        _recipe(model, optimizer, [unfreeze]).run(1)
    with pytest.raises(ConfigError, match="no layer named 'stems'"):
        FreezeUnfreeze(model, optimizer, ["stems"], unfreeze_at_epoch=1)


# -- BatchNorm ----------------------------------------------------------------------------------------
def test_frozen_batchnorm_statistics_and_weights_do_not_change_in_training():
    model = _model(batchnorm=True)
    bn = model.body[1]
    freeze = FreezeBatchNorm(model)
    bn_before = copy.deepcopy(bn.state_dict())
    head_before = model.head.weight.detach().clone()
    optimizer = build_optimizer("sgd", model, lr=0.1)
    assert not any(p is bn.weight for p in optimizer.param_groups[0]["params"])
    _recipe(model, optimizer, [TrainMode(model), freeze]).run(2)
    assert model.training and not bn.training
    for name, value in bn.state_dict().items():
        assert torch.equal(value, bn_before[name]), name
    assert not torch.equal(model.head.weight, head_before)


def test_freeze_batchnorm_helpers():
    model = _model(batchnorm=True)
    (bn,) = freeze_batchnorm(model)
    assert not bn.training and not bn.weight.requires_grad
    model.train()
    assert bn.training
    set_batchnorm_eval(model)
    assert not bn.training and model.stem.training
