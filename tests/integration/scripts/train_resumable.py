"""A training run for the reliability tests: digits with shuffle, per-sample random augmentation
(flip + noise in the dataset), dropout, AdamW and a cosine schedule; checkpoints every 5 steps.

Run as ``python train_resumable.py RUN_DIR [--num-workers N] [--seed S] [--max-epochs E]``; resumes
from RUN_DIR automatically. Appends one JSON line per step to RUN_DIR/steps.jsonl (step, loss repr,
sample indices) and writes RUN_DIR/final.json with the SHA-256 of the final training state.
Kill points come from the TRAINFORGE_FAULT environment variable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import torch
from torch import nn
from torch.utils.data import Dataset

from trainforge import Callback, Trainer, TrainingConfig
from trainforge.data import load_digits_split


class AugmentedDigits(Dataset):
    """Random flip and noise per sample: uses the global RNGs, which the loader seeds per sample."""

    def __init__(self, base, size: int) -> None:
        self.base, self.size = base, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        x, y = self.base[index]
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x + 0.05 * torch.randn_like(x), y


class StepLog(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_batch_end(self, state) -> None:
        record = {
            "step": state.global_step,
            "loss": repr(float(state.outputs["loss"].float())),
            "indices": state.batch["index"].tolist(),
            "epoch": state.epoch,
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _feed(digest, value, path: str, parts: dict) -> None:
    """Canonical bytes: key paths in sorted order, tensors as dtype + shape + raw bytes."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            _feed(digest, value[key], f"{path}.{key}", parts)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _feed(digest, item, f"{path}[{i}]", parts)
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        data = str((t.dtype, tuple(t.shape))).encode() + t.view(torch.uint8).numpy().tobytes()
        digest.update(path.encode() + data)
        parts[path] = hashlib.sha256(data).hexdigest()[:12]
    elif callable(value):
        return  # e.g. a schedule's lambda
    else:
        digest.update(f"{path}={value!r}".encode())
        parts[path] = repr(value)


def state_hash(trainer: Trainer) -> tuple[str, dict]:
    digest, parts = hashlib.sha256(), {}
    state = {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "step": trainer.global_step,
        "epoch": trainer.epoch,
    }
    _feed(digest, state, "", parts)
    return digest.hexdigest(), parts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=320)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, _ = load_digits_split()
    torch.manual_seed(123)  # model init: identical in every attempt, independent of --seed
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))
    config = TrainingConfig(
        output_dir=args.run_dir, max_epochs=args.max_epochs, batch_size=32, lr=3e-3, seed=args.seed,
        num_workers=args.num_workers, scheduler="cosine", optimizer="AdamW", tensorboard=False, report=False,
        checkpoint={"every_n_steps": 5, "every_n_epochs": 1, "save_top_k": 2, "save_last": True},
        print_steps=1000, metrics=["Accuracy"], data_timeout=30.0,
    )
    trainer = Trainer(model, config, train_data=AugmentedDigits(train, args.samples),
                      callbacks=[StepLog(os.path.join(args.run_dir, "steps.jsonl"))])
    trainer.fit(resume_from="auto")
    with open(os.path.join(args.run_dir, "final.json"), "w") as f:
        digest, parts = state_hash(trainer)
        json.dump({"hash": digest, "step": trainer.global_step, "parts": parts}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
