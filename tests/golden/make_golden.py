"""Writes tests/golden/v<version>/: a tiny mid-epoch checkpoint and the losses of the 10 steps after it.

Run once per release that changes the checkpoint format: ``python tests/golden/make_golden.py``. The test
``tests/integration/test_golden.py`` loads every committed version and must reproduce its losses exactly.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset

from trainforge import Callback, Trainer, TrainingConfig, __version__
from trainforge.data import load_digits_split

HERE = Path(__file__).parent


def build(output_dir: str, max_epochs: int, callbacks=()) -> Trainer:
    train, _ = load_digits_split()
    torch.manual_seed(7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 10))
    config = TrainingConfig(
        output_dir=output_dir, max_epochs=max_epochs, batch_size=16, lr=0.01, seed=3, tensorboard=False,
        report=False, print_steps=10_000, metrics=[], checkpoint={"every_n_steps": 5, "every_n_epochs": None,
                                                                   "save_top_k": -1, "save_last": False},
    )
    return Trainer(model, config, train_data=Subset(train, range(96)), callbacks=list(callbacks))


class LossLog(Callback):
    def __init__(self) -> None:
        self.losses: dict[int, str] = {}

    def on_batch_end(self, state) -> None:
        self.losses[state.global_step] = repr(float(state.outputs["loss"]))


def main() -> int:
    target = HERE / f"v{__version__}"
    with tempfile.TemporaryDirectory() as tmp:
        log = LossLog()
        build(tmp, max_epochs=3, callbacks=[log]).fit()  # 6 steps an epoch: checkpoint at step 5 (mid-epoch)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(Path(tmp) / "checkpoints" / "epoch000-step000005", target / "checkpoint")
    (target / "expected.json").write_text(json.dumps({"from_step": 5, "losses": {
        str(k): v for k, v in log.losses.items() if 5 < k <= 15}}, indent=2))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
