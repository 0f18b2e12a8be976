"""``StdoutLogger``: one line of metrics every N batches and at each epoch end, main process only."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import torch

from ..engine import State
from ..loggers.base import COUNTERS, is_main_process


def format_value(value: Any) -> str:
    """Format one metric for a log line; converts a device tensor to a float (a host sync)."""
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        return f"<{tuple(value.shape)}>"
    if hasattr(value, "item"):  # a device tensor or a RunningMean view: host sync, at log cadence
        value = value.item()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class StdoutLogger:
    """Print ``state.metrics`` every ``log_every`` batches (``-1``: epoch ends only) and at epoch end.

    Only rank 0 prints. Converting device tensors to floats is the only host sync, at this cadence.

    >>> import io
    >>> from trainforge.engine import Recipe
    >>> out = io.StringIO()
    >>> r = Recipe(lambda b: None, [0, 1])
    >>> r.callbacks.add(StdoutLogger(log_every=-1, prefix="Test", stream=out))
    >>> _ = r.run(1)
    >>> out.getvalue().startswith("Test | epoch 1/1")
    True
    """

    def __init__(self, log_every: int = 10, prefix: str = "", stream: TextIO | None = None) -> None:
        if log_every == 0 or log_every < -1:
            raise ValueError(f"log_every must be a positive number of batches or -1, got {log_every}")
        self.log_every = log_every
        self.prefix = f"{prefix} | " if prefix else ""
        self.stream = stream
        self.enabled = is_main_process()

    def on_batch_end(self, state: State) -> None:
        if self.enabled and self.log_every > 0 and state.global_step % self.log_every == 0:
            self._print(state, f"epoch {state.epoch + 1}/{state.max_epochs} step {state.global_step}")

    def on_epoch_end(self, state: State) -> None:
        if self.enabled:
            self._print(state, f"epoch {state.epoch + 1}/{state.max_epochs}")

    def _print(self, state: State, where: str) -> None:
        # counters (a Counter's epoch/global_step copies) are already in ``where``; tensors of many values
        # (a confusion matrix, an image grid) are for the other loggers, not a line of text
        items = " ".join(f"{k}={format_value(v)}" for k, v in state.metrics.items()
                         if k not in COUNTERS and not (isinstance(v, torch.Tensor) and v.numel() != 1))
        print(f"{self.prefix}{where} | {items}", file=self.stream or sys.stdout, flush=True)
