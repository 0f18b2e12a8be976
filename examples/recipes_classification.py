"""Torchélie's prebuilt recipes with trainforge names: ``CrossEntropyClassification`` trains a small CNN
on the embedded digits with no step function written (optimizer, LR schedule, mixed precision, loss,
accuracy, confusion matrix, best/worst samples, input gradients, checkpoints and the HTML report built in).

Run: ``python examples/recipes_classification.py [--epochs N] [--run-dir DIR]``.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from torch import nn
from torch.utils.data import DataLoader

import trainforge.recipes as tcr
from trainforge.data import DIGITS_CLASSES, load_digits_split
from trainforge.loggers import TensorBoardLogger


def main(epochs: int = 5, run_dir: str | None = None) -> dict[str, float]:
    torch.manual_seed(0)
    trainset, testset = load_digits_split()
    data_loader = DataLoader(trainset, batch_size=32, shuffle=True)
    test_loader = DataLoader(testset, batch_size=128)
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 16, 10))
    run_dir = run_dir or tempfile.mkdtemp(prefix="recipes-")

    recipe = tcr.CrossEntropyClassification(model, data_loader, test_loader, list(DIGITS_CLASSES),
                                            checkpoint=run_dir, log_every=20)
    recipe.callbacks.add(TensorBoardLogger(f"{run_dir}/tensorboard", log_every=20))
    recipe.to("cuda" if torch.cuda.is_available() else "cpu")
    state = recipe.run(epochs)

    print(f"run folder: {run_dir} (report/index.html, metrics.jsonl, checkpoints/, tensorboard/)")
    return {k: float(v) for k, v in state.metrics.items() if k in ("test/accuracy", "test/loss", "accuracy")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--run-dir", default=None)
    args = parser.parse_args()
    print(main(args.epochs, args.run_dir))
