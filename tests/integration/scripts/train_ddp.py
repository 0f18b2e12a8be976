"""Two-process training under torchrun (gloo on CPU): the Trainer wraps DDP, shards the data, reduces
metrics across ranks, and only rank 0 writes the run folder. Writes RANK's view to OUT/rank<R>.json.

With ``SIGTERM_RANK=R SIGTERM_AFTER_STEP=K`` rank R alone gets SIGTERM after step K (a preempted node)."""

from __future__ import annotations

import json
import os
import signal
import sys

import torch
from torch import nn
from torch.utils.data import Subset

from trainforge import Trainer, TrainingConfig
from trainforge.data import load_digits_split


class SigtermAfter:
    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, state) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    run_dir, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    train, valid = load_digits_split()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    config = TrainingConfig(
        output_dir=run_dir, max_epochs=2, batch_size=32, lr=0.01, print_steps=5, tensorboard=False, report=False,
        checkpoint={"every_n_epochs": 1, "save_top_k": 1, "monitor": "valid/accuracy", "mode": "max"},
        metrics=["Accuracy"], log_every_n_steps=5,
    )
    trainer = Trainer(model, config, train_data=Subset(train, range(256)), valid_data=Subset(valid, range(101)))
    if os.environ.get("SIGTERM_RANK") == os.environ["RANK"]:
        trainer.add_callback(SigtermAfter(int(os.environ["SIGTERM_AFTER_STEP"])))
    state = trainer.fit()
    rank = int(os.environ["RANK"])
    weights = [p.detach().flatten()[:4].tolist() for p in trainer.model.parameters()]
    seen = trainer.evaluate()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"metrics": {k: float(v) for k, v in state.metrics.items() if isinstance(v, (int, float))},
                   "eval": seen, "weights": weights, "steps": trainer.global_step,
                   "world": trainer.runtime.world_size}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
