"""A TrainAndTest run for the kill tests: digits through a ResumableLoader (shuffled), dropout, AdamW,
a test pass and a checkpoint every 7 steps into RUN_DIR; resumes from RUN_DIR automatically.

Run as ``python train_and_test_resumable.py RUN_DIR [--kill-at STEP]``: with ``--kill-at`` the process
SIGKILLs itself right after that step (after any checkpoint due there). Writes RUN_DIR/final.json with
the SHA-256 of the final weights and optimizer state, and the last test loss.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal

import torch
from torch import nn

from trainforge.callbacks import EpochMetricAvg, Optimizer
from trainforge.data import ResumableLoader, load_digits_split
from trainforge.recipes import TrainAndTest


class KillAt:
    group = "epilogue"

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, state) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def digest(obj, h) -> None:
    if isinstance(obj, dict):
        for key in sorted(obj, key=str):
            h.update(str(key).encode())
            digest(obj[key], h)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            digest(item, h)
    elif isinstance(obj, torch.Tensor):
        h.update(obj.detach().cpu().contiguous().numpy().tobytes())
    else:
        h.update(repr(obj).encode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--kill-at", type=int, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    train, test = load_digits_split()
    train_loader = ResumableLoader(train, batch_size=64, shuffle=True, seed=0)
    test_loader = ResumableLoader(test, batch_size=120, shuffle=False)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def forward_pass(batch):
        loss = nn.functional.cross_entropy(model(batch["input"]), batch["target"])
        loss.backward()
        return {"loss": loss}

    def test_pass(batch):
        return {"loss": nn.functional.cross_entropy(model(batch["input"]), batch["target"])}

    recipe = TrainAndTest(model, forward_pass, test_pass, train_loader, test_loader, test_every=7,
                          log_every=1000, checkpoint=args.run_dir, key_best="test/loss", best_mode="min")
    recipe.callbacks.add_callbacks([Optimizer(opt), EpochMetricAvg("loss")])
    recipe.test_loop.callbacks.add_callbacks([EpochMetricAvg("loss", post_each_batch=False)])
    if args.kill_at is not None:
        recipe.callbacks.add(KillAt(args.kill_at))
    resumed = recipe.resume("auto")
    state = recipe.run(2)
    h = hashlib.sha256()
    digest({"model": model.state_dict(), "optimizer": opt.state_dict()}, h)
    result = {"hash": h.hexdigest(), "step": state.global_step, "test_loss": state.metrics["test/loss"],
              "resumed": None if resumed is None else resumed.name}
    with open(os.path.join(args.run_dir, "final.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
