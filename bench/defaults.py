"""The Trainer with its default config against a hand-written loop doing the same useful work.

Both train ``trainforge.models.SmallCNN`` on digits (batch 32, AdamW, cosine schedule per step),
evaluate accuracy on the validation split after each epoch and write one atomic, fsynced checkpoint
per epoch. The Trainer also keeps its defaults on: Accuracy metric, JSONL and TensorBoard logs, console
lines, ``checkpoints/last`` with top-1, the HTML report at the end of fit.

Measured, per runner, from alternating 1-epoch and 5-epoch runs in one process (medians over rounds):

- marginal steps/s: the 4 extra epochs' steps over their extra time, so fixed costs cancel; the
  Trainer's against the hand-written loop's as the median of per-round ratios, the two runners
  taking turns to go first (target >= 0.95x);
- fixed cost per run: the 1-epoch run's time minus its steps at the marginal rate (target <= 0.5 s);
- objects left in reference cycles by a finished run: the garbage ``gc.collect()`` finds once the
  run's objects are dropped, the collector running as usual during the run (target < 1,000). A full
  collection that has them to free is a pause that whatever runs next pays;
- the same marginal rate and fixed cost in CPU seconds of this process (``time.process_time``), which a
  shared, busy machine disturbs less than wall time;
- the marginal rate again, interleaved: one Trainer fit and one hand-written loop taking turns epoch
  by epoch in this process (``--interleaved EPOCHS``, default 40), the median of per-epoch ratios,
  which a machine whose speed drifts during the bench disturbs far less;
- with ``--breakdown``: where a default 1-epoch fit's time goes, phase by phase (``perf_counter`` around
  set-up, evaluation, checkpoint, the report's data and each report section; medians of 5 fits);
- with ``--profile``: the same fit under cProfile, top entries.

Run: ``python bench/defaults.py [--rounds 3] [--interleaved 40] [--breakdown] [--profile]``
(``--rounds 0`` skips the 1-vs-5-epoch runs).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainforge.data import load_digits_split
from trainforge.models import SmallCNN

BATCH = 32


def _model() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, num_classes=10)


def _save_atomic(state: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HandWritten:
    """The same useful work written by hand: train, accuracy each epoch, one durable checkpoint each epoch."""

    def __init__(self, epochs: int, out: Path) -> None:
        self.train, self.valid = load_digits_split()
        self.model = _model()
        self.loader = torch.utils.data.DataLoader(self.train, batch_size=BATCH, shuffle=True)
        steps_total = epochs * len(self.loader)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps_total))
        )
        self.out = out

    def run_epoch(self, epoch: int) -> int:
        """Train one epoch, evaluate, save; returns the steps taken."""
        model, optimizer, schedule, steps = self.model, self.optimizer, self.schedule, 0
        model.train()
        for x, y in self.loader:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            steps += 1
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(self.valid, batch_size=BATCH):
                correct += int((model(x).argmax(1) == y).sum())
        model.train()
        print(f"epoch {epoch + 1}: accuracy {correct / len(self.valid):.3f}")
        _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "schedule": schedule.state_dict(), "epoch": epoch + 1}, self.out / "last.pt")
        return steps


def hand_written(epochs: int, out: Path) -> int:
    """``HandWritten`` for ``epochs`` epochs; returns the steps taken."""
    loop = HandWritten(epochs, out)
    return sum(loop.run_epoch(epoch) for epoch in range(epochs))


def trainer_defaults(epochs: int, out: Path) -> int:
    """``Trainer(model, TrainingConfig(max_epochs, batch_size, output_dir))``: every default on."""
    from trainforge import Trainer, TrainingConfig

    train, valid = load_digits_split()
    config = TrainingConfig(max_epochs=epochs, batch_size=BATCH, output_dir=str(out / "run"), device="cpu")
    state = Trainer(_model(), config, train_data=train, valid_data=valid).fit()
    return state.global_step


RUNNERS: dict[str, Callable[[int, Path], int]] = {"hand-written": hand_written, "trainer": trainer_defaults}


def timed(fn: Callable[[int, Path], int], epochs: int) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds, steps, objects left in reference cycles) of one run in a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="bench-defaults-") as folder:
        gc.collect()
        with contextlib.redirect_stdout(io.StringIO()):
            start, cpu = time.perf_counter(), time.process_time()
            steps = fn(epochs, Path(folder))
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        left = gc.collect()  # the run's objects are dropped: what is found now was held in cycles
    return seconds, cpu_seconds, steps, left


def measure(rounds: int) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Medians over rounds of each runner's figures, and each round's marginal-rate ratios to the
    hand-written loop (wall and CPU). The runners take turns going first (hand, trainer, then trainer,
    hand...) so a machine that slows down or speeds up during the bench favours neither, and each ratio
    compares runs made minutes apart at most: on a shared VM the rate drifts by more than the 5% the
    target allows, and a ratio of medians taken over the whole bench would carry that drift."""
    keys = ("marginal", "fixed", "cpu_marginal", "cpu_fixed", "cycles")
    samples: dict[str, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in RUNNERS}
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    for round_index in range(rounds + 1):  # the first round warms up (imports, allocator) and is dropped
        order = list(RUNNERS.items()) if round_index % 2 else list(RUNNERS.items())[::-1]
        this_round: dict[str, dict[str, float]] = {}
        for name, fn in order:
            t1, c1, s1, left = timed(fn, 1)
            t5, c5, s5, _ = timed(fn, 5)
            if round_index == 0:
                continue
            figures = this_round[name] = {"cycles": left}
            for prefix, one, five in (("", t1, t5), ("cpu_", c1, c5)):
                marginal = (s5 - s1) / (five - one)
                figures[f"{prefix}marginal"] = marginal
                figures[f"{prefix}fixed"] = one - s1 / marginal
        for name, figures in this_round.items():
            for key, value in figures.items():
                samples[name][key].append(value)
        if this_round:
            ratios["wall"].append(this_round["trainer"]["marginal"] / this_round["hand-written"]["marginal"])
            ratios["cpu"].append(this_round["trainer"]["cpu_marginal"] / this_round["hand-written"]["cpu_marginal"])
    medians = {name: {key: statistics.median(values) for key, values in parts.items()}
               for name, parts in samples.items()}
    return medians, ratios


def interleaved(epochs: int) -> tuple[list[float], float, float]:
    """Per-epoch rate ratios (Trainer over hand-written) from one Trainer fit and one hand-written loop
    taking turns epoch by epoch in this process: at each Trainer ``epoch_start`` the hand-written loop
    runs one epoch, timed, and the Trainer's epoch is timed from there to its next ``epoch_start``
    (training, evaluation, checkpoint, logs). A drifting machine slows both sides of a pair alike, so
    this is the low-noise estimate of the same per-epoch cost the 1-vs-5-epoch runs measure. The first
    pair (warm-up, first-batch checks) is not counted; the last Trainer epoch ends at ``fit_end``.

    Also returns each runner's fixed cost measured directly: the hand-written loop's set-up (data,
    model, loader, optimizer), and the Trainer's whole run (data, construction, ``fit``, the report)
    less its epochs and the hand-written epochs run inside it."""
    from trainforge import Trainer, TrainingConfig

    class TakeTurns:
        def __init__(self, hand: HandWritten) -> None:
            self.hand, self.ratios, self.hand_seconds, self.epoch_seconds = hand, [], 0.0, 0.0
            self.start: tuple[float, int, float] | None = None  # the Trainer epoch under way

        def _end_epoch(self, steps_now: int) -> None:
            start, steps_before, hand_rate = self.start
            seconds = time.perf_counter() - start
            self.epoch_seconds += seconds
            self.ratios.append((steps_now - steps_before) / seconds / hand_rate)

        def on_epoch_start(self, state: Any) -> None:
            if self.start is not None:
                self._end_epoch(state.global_step)
            begin = time.perf_counter()
            steps = self.hand.run_epoch(state.epoch)
            seconds = time.perf_counter() - begin
            self.hand_seconds += seconds
            self.start = (time.perf_counter(), state.global_step, steps / seconds)

        def on_fit_end(self, state: Any) -> None:
            self._end_epoch(state.global_step)

    with tempfile.TemporaryDirectory(prefix="bench-defaults-") as folder, contextlib.redirect_stdout(io.StringIO()):
        hand_written(1, Path(folder))  # warm-up: imports and first-call costs are not per-run costs
        trainer_defaults(1, Path(folder) / "warm-up")
        gc.collect()
        begin = time.perf_counter()
        hand = HandWritten(epochs, Path(folder))
        hand_fixed = time.perf_counter() - begin
        turns = TakeTurns(hand)
        begin = time.perf_counter()
        train, valid = load_digits_split()
        config = TrainingConfig(max_epochs=epochs, batch_size=BATCH, output_dir=str(Path(folder) / "run"), device="cpu")
        Trainer(_model(), config, train_data=train, valid_data=valid, callbacks=[turns]).fit()
        trainer_fixed = time.perf_counter() - begin - turns.epoch_seconds - turns.hand_seconds
    return turns.ratios[1:-1], hand_fixed, trainer_fixed


def profile_fixed_cost(top: int = 25) -> None:
    import cProfile
    import pstats

    with tempfile.TemporaryDirectory(prefix="bench-defaults-") as folder:
        trainer_defaults(1, Path(folder))  # warm: imports are not a per-run cost
        profiler = cProfile.Profile()
        with contextlib.redirect_stdout(io.StringIO()):
            profiler.enable()
            trainer_defaults(1, Path(folder) / "second")
            profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)


def breakdown(fits: int = 5) -> None:
    """Print the median time of each phase of a default 1-epoch fit (after one warm-up fit)."""
    import functools

    import trainforge.trainer
    import trainforge.trainer_report
    from trainforge import Trainer
    from trainforge.callbacks.checkpoint import ModelCheckpoint
    from trainforge.report import sections

    spent: dict[str, float] = {}

    def timed_call(label: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - start
        return call

    # module-level steps are patched where they are looked up: trainer.py calls finish_run by its imported name
    patched = [(Trainer, "setup"), (Trainer, "evaluate"), (trainforge.trainer, "finish_run"),
               (trainforge.trainer_report, "save_report_data"), (ModelCheckpoint, "_write")]
    originals = [(owner, name, getattr(owner, name)) for owner, name in patched]
    section_fns = dict(sections.SECTIONS)
    for owner, name, fn in originals:
        setattr(owner, name, timed_call(f"{owner.__name__}.{name}", fn))
    for name, fn in section_fns.items():
        sections.SECTIONS[name] = timed_call(f"report section {name}", fn)
    samples: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-defaults-") as folder:
            for index in range(fits + 1):
                spent.clear()
                with contextlib.redirect_stdout(io.StringIO()):
                    start = time.perf_counter()
                    trainer_defaults(1, Path(folder) / str(index))
                    spent["whole 1-epoch run"] = time.perf_counter() - start
                if index:  # the first fit pays the imports
                    for label, seconds in spent.items():
                        samples.setdefault(label, []).append(seconds)
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
        sections.SECTIONS.update(section_fns)
    print(f"breakdown of a default 1-epoch fit (ms, median of {fits}; evaluation and checkpoint run every epoch):")
    for label, values in sorted(samples.items(), key=lambda item: -statistics.median(item[1])):
        print(f"  {statistics.median(values) * 1000:8.1f}  {label}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interleaved", type=int, default=40, metavar="EPOCHS",
                        help="epochs of the interleaved estimate (0: skip it)")
    parser.add_argument("--profile", action="store_true", help="also profile the Trainer's 1-epoch run")
    parser.add_argument("--breakdown", action="store_true", help="also time the phases of a 1-epoch fit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results, ratios = measure(args.rounds) if args.rounds > 0 else ({}, {})
    base = results.get("hand-written")
    for name, result in results.items():
        print(f"{name:>13}: marginal {result['marginal']:6.1f} steps/s | fixed {result['fixed']:.3f} s/run "
              f"(target <= 0.5) | left in cycles {int(result['cycles'])} objects (target < 1000)  "
              f"[median of {args.rounds}]")
        print(f"{'':>13}  CPU time: marginal {result['cpu_marginal']:6.1f} steps/s | "
              f"fixed {result['cpu_fixed']:.3f} s/run")
        if result is not base:  # the estimate's own error shows in the hand-written loop's (about 0) figure
            print(f"{'':>13}  fixed cost over the hand-written loop's: {result['fixed'] - base['fixed']:+.3f} s wall, "
                  f"{result['cpu_fixed'] - base['cpu_fixed']:+.3f} s CPU")
    for clock, values in ratios.items():
        shown = ", ".join(f"{v:.3f}" for v in values)
        print(f"marginal rate, trainer / hand-written in the same round ({clock}): median "
              f"{statistics.median(values):.3f}x (target >= 0.95x); rounds: {shown}")
    if args.interleaved > 3:
        pairs, hand_fixed, trainer_fixed = interleaved(args.interleaved)
        quartiles = statistics.quantiles(pairs, n=4)
        print(f"marginal rate, interleaved epoch by epoch ({len(pairs)} pairs): median {statistics.median(pairs):.3f}x "
              f"(target >= 0.95x; quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}x)")
        print("  pairs: " + ", ".join(f"{p:.2f}" for p in pairs))
        print(f"fixed cost per run, measured directly in that run: trainer {trainer_fixed:.3f} s (target <= 0.5), "
              f"hand-written {hand_fixed:.3f} s")
    if args.breakdown:
        breakdown()
    if args.profile:
        profile_fixed_cost()


if __name__ == "__main__":
    main()
