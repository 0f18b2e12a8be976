"""Loop overhead on the same MLP and digits data, batch 64, alternating runs in one process:

- hand-written: a plain PyTorch loop over pre-made batches, printing the mean loss every 50 steps;
- recipe: Counter + Optimizer + EpochMetricAvg + StdoutLogger(log_every=50) (target >= 0.95x);
- trainer: ``Trainer`` with console lines every 50 steps, no progress bar, no checkpoints/TensorBoard/
  report, fed the same batches (target >= 0.9x), with and without its default Accuracy metric. Its
  non-finite checks stay on (a loss read and a fused gradient check every step, about 5 us here), and
  so do the JSONL log, the epoch lines and throughput;
- trainer-dataset: the Trainer building its own resumable loader from the Dataset, next to
- hand-written+DataLoader: the hand-written loop over ``torch.utils.data.DataLoader(dataset,
  shuffle=True)`` — the fair comparison for it (both load and shuffle every epoch).

Prints steps/s for each and the ratio to the hand-written loop.
Run: ``python bench/overhead.py [--rounds 7] [--epochs 10]`` (the VM noise is a few percent between runs).
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


def _hand_loop(loader, epochs: int) -> float:
    model, opt = make_model()
    start = time.perf_counter()
    for _ in range(epochs):
        total = torch.zeros(())
        for step, (x, y) in enumerate(loader, 1):
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            total += loss.detach()
            if step % 50 == 0:
                print(f"step {step} loss={(total / step).item():.4f}")
    return epochs * len(loader) / (time.perf_counter() - start)


def hand_written(batches, epochs: int) -> float:
    return _hand_loop(batches, epochs)


def hand_written_dataloader(batches, epochs: int) -> float:
    from torch.utils.data import DataLoader

    train, _ = load_digits_split(flatten=True)
    return _hand_loop(DataLoader(train, batch_size=64, shuffle=True), epochs)


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


def _trainer(batches, epochs: int, data=None, metrics=()) -> float:
    import tempfile

    from trainforge import Trainer, TrainingConfig

    model, opt = make_model()
    config = TrainingConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-"), max_epochs=epochs, batch_size=64, print_steps=50,
        progress_bar=False, checkpoint=None, tensorboard=False, report=False, scheduler=None,
        metrics=list(metrics), optimizer="SGD", lr=0.05,
    )
    trainer = Trainer(model, config, train_data=data if data is not None else batches, optimizer=opt)
    trainer.setup()  # run folder, loaders: not part of the loop
    start = time.perf_counter()
    state = trainer.fit()
    return state.global_step / (time.perf_counter() - start)


def with_trainer(batches, epochs: int) -> float:
    return _trainer(batches, epochs)


def with_trainer_accuracy(batches, epochs: int) -> float:
    return _trainer(batches, epochs, metrics=["Accuracy"])


def with_trainer_dataset(batches, epochs: int) -> float:
    train, _ = load_digits_split(flatten=True)
    return _trainer(batches, epochs, data=train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=10)  # ~230 steps a run: fixed costs amortized
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = make_batches()
    runners = {
        "hand-written": hand_written,
        "recipe": with_recipe,
        "trainer": with_trainer,
        "trainer+accuracy": with_trainer_accuracy,
        "trainer-dataset": with_trainer_dataset,
        "hand-written+DataLoader": hand_written_dataloader,
    }
    results: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for name, fn in runners.items():
            with contextlib.redirect_stdout(io.StringIO()):
                results[name].append(fn(batches, args.epochs))
    medians = {name: statistics.median(values[1:]) for name, values in results.items()}
    base = medians["hand-written"]
    targets = {"recipe": " (target >= 0.95)", "trainer": " (target >= 0.9)"}
    for name, value in medians.items():
        ratio = f"{value / base:.3f}x{targets.get(name, '')}"
        print(f"{name:>23}: {value:8.1f} steps/s  {ratio}  (median of {args.rounds})")
    fair = medians["trainer-dataset"] / medians["hand-written+DataLoader"]
    print(f"trainer-dataset vs hand-written+DataLoader: {fair:.3f}x")


if __name__ == "__main__":
    main()
