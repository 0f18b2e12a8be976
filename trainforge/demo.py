"""The default experiment: a small CNN on the embedded digits data with the default TrainingConfig."""

from __future__ import annotations

from pathlib import Path

import torch

from .data import DIGITS_CLASSES, load_digits_split
from .models import SmallCNN
from .trainer import Trainer
from .training_config import TrainingConfig


def run_demo(output_dir: str | None = None, max_epochs: int = 10, print_steps: int | None = None) -> dict[str, float]:
    """Train ``SmallCNN`` on digits and print the final metrics; returns them.

    The run folder (config, env, metrics, checkpoints, TensorBoard, report) is ``output_dir`` or
    ``runs/demo/<timestamp>``.
    """
    train, valid = load_digits_split()
    torch.manual_seed(0)
    config = TrainingConfig(
        output_dir=output_dir, experiment_name="demo", max_epochs=max_epochs, print_steps=print_steps,
        checkpoint={"monitor": "valid/accuracy", "mode": "max", "save_top_k": 1, "save_last": True},
    )
    trainer = Trainer(SmallCNN(in_channels=1, num_classes=10), config, train_data=train, valid_data=valid)
    trainer.class_names = list(DIGITS_CLASSES)
    state = trainer.fit()
    final = {k: float(v) for k, v in state.metrics.items() if k.startswith(("train/", "valid/"))}
    print(f"run folder: {Path(trainer.run_dir).resolve()}")
    print("final metrics: " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(final.items())))
    return final
