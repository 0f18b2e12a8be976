from __future__ import annotations

import random

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
