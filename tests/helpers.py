"""Small builders shared by the Trainer tests (importable because conftest.py puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from trainforge import TrainingConfig

#: The seed systems' real files: ``shared/external`` beside the checkout (as on every developer machine and in
#: CI), or TRAINFORGE_EXTERNAL. Missing files fail the tests that read them: they are never skipped.
EXTERNAL = Path(os.environ.get("TRAINFORGE_EXTERNAL") or Path(__file__).resolve().parents[2] / "shared" / "external")


def cfg(tmp_path, **overrides) -> TrainingConfig:
    """A quiet, fast config writing into ``tmp_path/run``: one epoch, no checkpoints, TensorBoard or report."""
    values = dict(
        output_dir=str(tmp_path / "run"), max_epochs=1, batch_size=64, lr=0.01, tensorboard=False,
        report=False, checkpoint=None, print_steps=10_000, seed=0,
    )
    values.update(overrides)
    return TrainingConfig(**values)


def mlp(seed: int = 0, hidden: int = 32) -> nn.Module:
    """A digits MLP (64 → hidden → 10) with weights fixed by ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))
