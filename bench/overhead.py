"""Loop overhead: a hand-written PyTorch loop against a Recipe (Counter + Optimizer + EpochMetricAvg +
StdoutLogger(log_every=50)) on the same MLP and digits data, batch 64, alternating runs in one process.

Prints steps/s for each and the ratio (target: Recipe >= 0.95x the hand-written loop).
Run: ``python bench/overhead.py [--rounds 5] [--epochs 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

import torch
from torch import nn

import trainforge.callbacks as tcb
from trainforge import Recipe
from trainforge.data import load_digits_split


def make_batches(batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    train, _ = load_digits_split(flatten=True)
    x, y = train.tensors
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def make_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def hand_written(batches, epochs: int) -> float:
    model, opt = make_model()
    start = time.perf_counter()
    for _ in range(epochs):
        total = torch.zeros(())
        for step, (x, y) in enumerate(batches, 1):
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            total += loss.detach()
            if step % 50 == 0:
                print(f"step {step} loss={(total / step).item():.4f}")
    return epochs * len(batches) / (time.perf_counter() - start)


def with_recipe(batches, epochs: int) -> float:
    model, opt = make_model()

    def step(batch):
        x, y = batch
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return {"loss": loss}

    recipe = Recipe(step, batches)
    recipe.register("model", model)
    recipe.add_callbacks([tcb.Counter()], "prologue")
    recipe.add_callbacks([tcb.Optimizer(opt), tcb.EpochMetricAvg("loss")])
    recipe.add_callbacks([tcb.StdoutLogger(log_every=50)], "epilogue")
    start = time.perf_counter()
    recipe.run(epochs)
    return epochs * len(batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = make_batches()
    runners = {"hand-written": hand_written, "recipe": with_recipe}
    results: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for name, fn in runners.items():
            with contextlib.redirect_stdout(io.StringIO()):
                results[name].append(fn(batches, args.epochs))
    medians = {name: statistics.median(values[1:]) for name, values in results.items()}
    for name, value in medians.items():
        print(f"{name:>14}: {value:8.1f} steps/s (median of {args.rounds})")
    print(f"{'ratio':>14}: {medians['recipe'] / medians['hand-written']:.3f}x (target >= 0.95)")


if __name__ == "__main__":
    main()
