"""Callbacks for the terminal: ``ConsoleLogger`` (a line every N steps, or a rich progress bar per epoch;
rank 0 only) and ``Throughput`` (samples/s and step time posted to ``state.metrics`` at a cadence)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import torch

from ..engine import State
from .base import COUNTERS, is_main_process, to_float

Clock = Callable[[], float]
SAMPLES_PER_S = "throughput/samples_per_s"
STEP_TIME_S = "throughput/step_time_s"


def _synchronize(batch: Any) -> None:
    """Wait for queued device work, so wall time measures work done rather than work launched."""
    if type(batch) is dict or isinstance(batch, Mapping):
        batch = next(iter(batch.values()), None)
    elif isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if isinstance(batch, torch.Tensor) and batch.device.type != "cpu":
        torch.accelerator.synchronize(batch.device)  # host sync: once per window, not per step


class RateWindow:
    """Samples and steps since ``restart``, over wall time minus paused time (evaluation).

    The counts are differences of the loop's own counters (``state.samples``, ``state.global_step``),
    so a window costs nothing per batch: it only reads the clock when restarted and when read.

    >>> from trainforge.engine import State
    >>> state, now = State(), [0.0]
    >>> window = RateWindow(clock=lambda: now[0])
    >>> window.restart(state)
    >>> state.samples, state.global_step, now[0] = 64, 2, 2.0
    >>> window.rates(state)  # (samples/s, s/step)
    (32.0, 1.0)
    """

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self.clock = clock
        self.restart()

    def restart(self, state: State | None = None) -> None:
        """Start a new window at the state's current counters (zero without a state)."""
        self.start = self.clock()
        self.start_samples = state.samples if state is not None else 0
        self.start_steps = state.global_step if state is not None else 0
        self.paused = 0.0
        self._paused_at: float | None = None

    def steps(self, state: State) -> int:
        return state.global_step - self.start_steps

    def samples(self, state: State) -> int:
        return state.samples - self.start_samples

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = self.clock()

    def resume(self) -> None:
        if self._paused_at is not None:
            self.paused += self.clock() - self._paused_at
            self._paused_at = None

    def rates(self, state: State) -> tuple[float, float]:
        """``(samples per second, seconds per step)`` over the window."""
        elapsed = max(self.clock() - self.start - self.paused, 1e-9)
        return self.samples(state) / elapsed, elapsed / max(self.steps(state), 1)


class Throughput:
    """Post ``throughput/samples_per_s`` and ``throughput/step_time_s`` (host floats, means over the last
    ``log_every`` steps) to ``state.metrics`` every ``log_every`` steps and at epoch end.

    Time spent in evaluation (between ``eval_start`` and ``eval_end``) is left out. With ``synchronize``,
    device work is waited for at each window end (one sync per window) so the numbers are honest on
    accelerators. Add it to the ``prologue`` group so loggers see fresh values at the same step.

    >>> from trainforge.engine import Recipe
    >>> recipe = Recipe(lambda batch: None, [torch.zeros(4, 2)] * 3)
    >>> recipe.callbacks.add(Throughput(log_every=2), "prologue")
    >>> sorted(recipe.run(1).metrics)
    ['throughput/samples_per_s', 'throughput/step_time_s']
    """

    def __init__(self, log_every: int = 50, synchronize: bool = True, clock: Clock = time.perf_counter) -> None:
        if log_every < 1:
            raise ValueError(f"log_every must be a positive number of steps, got {log_every}")
        self.log_every = log_every
        self.synchronize = synchronize
        self.window = RateWindow(clock)

    def on_epoch_start(self, state: State) -> None:
        self.window.restart(state)

    def on_batch_end(self, state: State) -> None:
        if state.global_step % self.log_every == 0:
            self._post(state)

    def on_epoch_end(self, state: State) -> None:
        if self.window.steps(state):
            self._post(state)

    def on_eval_start(self, state: State) -> None:
        self.window.pause()

    def on_eval_end(self, state: State) -> None:
        self.window.resume()

    def _post(self, state: State) -> None:
        if self.synchronize:
            _synchronize(state.batch)
        samples_per_s, step_time_s = self.window.rates(state)
        state.metrics[SAMPLES_PER_S] = samples_per_s
        state.metrics[STEP_TIME_S] = step_time_s
        self.window.restart(state)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """``name=value`` pairs of the scalar metrics (counters and throughput left out); converting device
    tensors is a host sync, so call this at the print cadence only.

    >>> format_metrics({"train/loss": torch.tensor(0.123456), "lr": 0.001, "epoch": 1, "cm": torch.eye(2)})
    'train/loss=0.1235 lr=0.001'
    """
    parts = []
    for name, value in metrics.items():
        if name in COUNTERS or name.startswith("throughput/"):
            continue
        number = to_float(value)
        if number is not None:
            parts.append(f"{name}={number:.4g}")
    return " ".join(parts)


def _epoch_length(state: State) -> int | None:
    try:
        return len(state.owner.loader)
    except (AttributeError, TypeError):
        return None


class ConsoleLogger:
    """Print progress: a line every ``print_steps`` steps plus one per epoch, or (``print_steps=None``) a
    rich progress bar per epoch. Shows the metrics in ``state.metrics``, ``lr`` among them, and samples/s.

    The bar is refreshed at most every ``refresh_seconds`` (or every ``refresh_steps`` steps when given):
    metric values are read, a host sync, only then. Nothing is printed when this process is not rank 0.
    ``stream`` (line mode) or ``console`` (a ``rich.console.Console``) redirect the output; ``clock``
    replaces ``time.perf_counter`` (tests). Add it to the ``epilogue`` group so it sees every metric.

    >>> import io
    >>> from trainforge.engine import Recipe
    >>> out = io.StringIO()
    >>> recipe = Recipe(lambda batch: {"loss": batch.sum()}, [torch.ones(2, 1)] * 4)
    >>> post = type("Post", (), {"on_batch_end": lambda self, s: s.metrics.update(loss=s.outputs["loss"])})()
    >>> recipe.callbacks.add(post)
    >>> recipe.callbacks.add(ConsoleLogger(print_steps=2, stream=out), "epilogue")
    >>> _ = recipe.run(1)
    >>> print(out.getvalue(), end="")  # doctest: +ELLIPSIS
    epoch 1/1 step 2 | loss=2 | ... samples/s
    epoch 1/1 step 4 | loss=2 | ... samples/s
    epoch 1/1 done | loss=2 | ... samples/s
    """

    def __init__(
        self,
        print_steps: int | None = None,
        stream: TextIO | None = None,
        console: Any = None,
        refresh_seconds: float = 0.2,
        refresh_steps: int | None = None,
        clock: Clock = time.perf_counter,
        enabled: bool | None = None,
    ) -> None:
        if print_steps is not None and print_steps < 1:
            raise ValueError(f"print_steps must be a positive number of steps or None (bar), got {print_steps}")
        if refresh_steps is not None and refresh_steps < 1:
            raise ValueError(f"refresh_steps must be a positive number of steps or None, got {refresh_steps}")
        self.print_steps = print_steps
        self.stream = stream
        self.console = console
        self.refresh_seconds = refresh_seconds
        self.refresh_steps = refresh_steps
        self.clock = clock
        self.enabled = is_main_process() if enabled is None else enabled
        self.window = RateWindow(clock)  # since the last line or refresh
        self.epoch_window = RateWindow(clock)
        self._progress: Any = None
        self._task: Any = None
        self._last_refresh = 0.0

    # -- events ----------------------------------------------------------------------------------
    def on_fit_start(self, state: State) -> None:
        if self.enabled and self.print_steps is None:
            self._start_progress()

    def on_epoch_start(self, state: State) -> None:
        if not self.enabled:
            return
        self.window.restart(state)
        self.epoch_window.restart(state)
        if self._progress is not None:
            self._task = self._progress.add_task(
                f"epoch {state.epoch + 1}/{state.max_epochs}", total=_epoch_length(state), completed=state.epoch_step,
                info="",
            )
            self._last_refresh = self.clock()

    def on_batch_end(self, state: State) -> None:
        if not self.enabled:
            return
        if self.print_steps is not None:
            if state.global_step % self.print_steps == 0:
                self._print(f"epoch {state.epoch + 1}/{state.max_epochs} step {state.global_step}", state, self.window)
        elif self._task is not None:
            self._progress.update(self._task, completed=state.epoch_step)  # host-only bookkeeping
            if self._refresh_due(state):
                self._refresh(state, self.window)

    def on_epoch_end(self, state: State) -> None:
        if not self.enabled:
            return
        if self.print_steps is not None:
            self._print(f"epoch {state.epoch + 1}/{state.max_epochs} done", state, self.epoch_window)
        elif self._task is not None:
            self._refresh(state, self.epoch_window)

    def on_eval_start(self, state: State) -> None:
        self.window.pause()
        self.epoch_window.pause()

    def on_eval_end(self, state: State) -> None:
        self.window.resume()
        self.epoch_window.resume()

    def on_fit_end(self, state: State) -> None:
        self.close()

    def close(self) -> None:
        """Stop the progress display (also done at ``fit_end``)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None

    # -- output ----------------------------------------------------------------------------------
    def _line(self, where: str, state: State, window: RateWindow) -> str:
        parts = [where]
        metrics = format_metrics(state.metrics)
        if metrics:
            parts.append(metrics)
        if window.samples(state):
            parts.append(f"{window.rates(state)[0]:.4g} samples/s")
        return " | ".join(parts)

    def _print(self, where: str, state: State, window: RateWindow) -> None:
        print(self._line(where, state, window), file=self.stream or sys.stdout, flush=True)
        window.restart(state)

    def _refresh_due(self, state: State) -> bool:
        if self.refresh_steps is not None:
            return state.epoch_step % self.refresh_steps == 0
        return self.clock() - self._last_refresh >= self.refresh_seconds

    def _refresh(self, state: State, window: RateWindow) -> None:
        info = self._line("", state, window).lstrip(" |")
        self._progress.update(self._task, completed=state.epoch_step, info=info)
        self._progress.refresh()
        self._last_refresh = self.clock()
        if window is self.window:
            window.restart(state)

    def _start_progress(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Column

        console = self.console
        if console is None and self.stream is not None:
            console = Console(file=self.stream)
        self._progress = Progress(
            TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            # many metrics wrap onto more lines instead of squeezing the bar and the epoch out of the row
            TextColumn("{task.fields[info]}", table_column=Column(ratio=1, overflow="fold")),
            console=console,
            auto_refresh=False,  # refreshed by on_batch_end at its cadence: no background thread
        )
        self._progress.start()
