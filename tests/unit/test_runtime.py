from __future__ import annotations

import random
from typing import ClassVar

import numpy as np
import pytest
import torch

from trainforge.errors import ConfigError
from trainforge.runtime import Runtime, resolve_device, rng_state, seed_everything, set_rng_state


def test_resolve_device_and_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(None) == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
        with pytest.raises(ConfigError, match="not visible"):
            resolve_device("cuda:3")
    with pytest.raises(ConfigError, match="is not a device"):
        resolve_device("gpu0")


def test_rng_state_round_trip_covers_python_numpy_torch():
    seed_everything(5)
    saved = rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(saved)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == first
    # and it survives the checkpoint format: weights_only loading of a torch.save
    import io

    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True))
    assert random.random() == first[0]


def test_precision_modes():
    assert Runtime("cpu", "32").scaler is None
    assert Runtime("cpu", "16-mixed").scaler is not None  # fp16 always gets a GradScaler
    bf16 = Runtime("cpu", "bf16-mixed")
    with bf16.autocast():
        assert torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="precision='fp8'"):
        Runtime("cpu", "fp8")


def test_single_process_helpers():
    runtime = Runtime("cpu")
    assert runtime.is_main and not runtime.distributed
    assert runtime.any_rank(True) and not runtime.any_rank(False)
    model = torch.nn.Linear(1, 1)
    assert runtime.wrap_model(model) is model
    batch = runtime.to_device({"x": torch.ones(1), "y": [torch.zeros(1)]})
    assert batch["x"].device.type == "cpu"


def test_backward_gives_the_gradients_of_loss_backward():
    from trainforge.runtime import backward

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    backward(torch.nn.functional.cross_entropy(model(x), y))
    backward(torch.nn.functional.cross_entropy(model(x), y))  # accumulates like .backward()
    for param, grad in zip(model.parameters(), expected):
        assert torch.equal(param.grad, 2 * grad)


def test_backward_leaves_other_tensors_to_loss_backward_and_its_errors():
    from trainforge.runtime import backward

    w = torch.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        backward(w * 2)  # not a scalar: torch's own error
    with pytest.raises(RuntimeError, match="does not require grad"):
        backward(torch.zeros(()))

    class Tagged(torch.Tensor):  # a subclass keeps its __torch_function__ route through Tensor.backward
        funcs: ClassVar[list] = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.funcs.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    loss = (w.as_subclass(Tagged) * 2).sum()
    Tagged.funcs.clear()
    backward(loss)
    assert torch.Tensor.backward in Tagged.funcs and torch.equal(w.grad, torch.full((3,), 2.0))
