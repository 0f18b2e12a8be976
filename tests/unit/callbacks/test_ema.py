from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from trainforge.callbacks import Optimizer
from trainforge.callbacks.ema import EMA
from trainforge.engine import Recipe
from trainforge.errors import ConfigError


class SnapshotOptimizer(Optimizer):
    """The Optimizer callback (which posts its step count for the EMA), keeping the weights after each step."""

    def __init__(self, *args, model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model = model
        self.snapshots = []

    def _update(self, state):
        super()._update(state)
        self.snapshots.append([p.detach().clone() for p in self.model.parameters()])


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _batches(n=5):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(6, 4, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(n)]


def _train(model, ema, epochs=2, accumulation=2):
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    optimizer_cb = SnapshotOptimizer(opt, accumulation=accumulation, model=model)

    def step(batch):
        x, y = batch
        nn.functional.cross_entropy(model(x), y).backward()

    recipe = Recipe(step, _batches())
    recipe.callbacks.add(optimizer_cb)
    recipe.callbacks.add(ema)
    model.train()
    recipe.run(epochs)
    return optimizer_cb


def test_ema_through_the_loop_equals_hand_computed_average():
    model = _model()
    initial = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, decay=0.9)
    optimizer_cb = _train(model, ema)
    # 5 batches, accumulation 2: steps after batches 2 and 4, plus the partial flush at epoch end
    assert optimizer_cb.steps == 6 and ema.num_updates == 6
    expected = initial
    for n, snapshot in enumerate(optimizer_cb.snapshots):
        decay = min(0.9, (1 + n) / (10 + n))
        expected = [decay * e + (1 - decay) * s for e, s in zip(expected, snapshot)]
    for averaged, hand, raw, start in zip(ema.module.parameters(), expected, model.parameters(), initial):
        torch.testing.assert_close(averaged, hand, rtol=1e-5, atol=1e-6)
        if not torch.allclose(raw, start):  # (the bias before BatchNorm gets ~no gradient and stays put)
            assert not torch.allclose(averaged, raw)
    for shadow_buffer, buffer in zip(ema.module.buffers(), model.buffers()):
        assert torch.equal(shadow_buffer, buffer)  # buffers are copied, not averaged
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_update_every_and_no_warmup():
    model = _model()
    initial = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, decay=0.5, warmup=False, update_every=3)
    optimizer_cb = _train(model, ema, epochs=2, accumulation=1)  # 10 optimizer steps
    assert ema.num_updates == 3
    expected = initial
    for index in (2, 5, 8):
        expected = [0.5 * e + 0.5 * s for e, s in zip(expected, optimizer_cb.snapshots[index])]
    for averaged, hand in zip(ema.module.parameters(), expected):
        torch.testing.assert_close(averaged, hand)


def test_swap_restores_raw_weights_bit_identically():
    model = _model()
    ema = EMA(model, decay=0.9)
    _train(model, ema)
    raw = copy.deepcopy(model.state_dict())
    with ema.swap(model) as swapped:
        assert swapped is model
        for (name, value), averaged in zip(model.state_dict().items(), ema.module.state_dict().values()):
            assert torch.equal(value, averaged), name
        model.eval()
        model(torch.randn(3, 4))
    for name, value in model.state_dict().items():
        assert torch.equal(value, raw[name]), name
    ema.apply_to(model)
    with pytest.raises(RuntimeError, match="already applied"):
        ema.apply_to(model)
    ema.restore(model)
    with pytest.raises(RuntimeError, match="restore"):
        ema.restore(model)


def test_state_round_trip_then_identical_updates():
    model = _model()
    ema = EMA(model, decay=0.95)
    _train(model, ema)
    buffer = io.BytesIO()
    torch.save(ema.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    restored = EMA(_model(), decay=0.95)
    restored.load_state_dict(saved)
    assert restored.num_updates == ema.num_updates == 6 and restored.seen_optimizer_steps == 6
    for a, b in zip(restored.module.state_dict().values(), ema.module.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    restored.update(model)
    for a, b in zip(restored.module.state_dict().values(), ema.module.state_dict().values()):
        assert torch.equal(a, b)


def test_missing_step_count_is_an_error_not_a_silent_no_op():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(x):  # steps the optimizer itself and posts no count: the EMA would never update
        model(x).sum().backward()
        opt.step()

    recipe = Recipe(step, [torch.ones(1, 2)])
    recipe.callbacks.add(EMA(model))
    with pytest.raises(ConfigError, match="optimizer_steps"):
        recipe.run(1)


def test_invalid_arguments():
    with pytest.raises(ConfigError, match="decay"):
        EMA(nn.Linear(1, 1), decay=1.5)
    with pytest.raises(ConfigError, match="update_every"):
        EMA(nn.Linear(1, 1), update_every=0)
