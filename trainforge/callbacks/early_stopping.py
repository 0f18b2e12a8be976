"""``EarlyStopping``: stop when a monitored metric has not improved by ``min_delta`` for ``patience``
checks — wired through the loop's ``should_stop``, so it actually fires (Kornia's never did)."""

from __future__ import annotations

import math
from typing import Any

from ..engine import State
from ..errors import ConfigError


class EarlyStopping:
    """Stop training when ``monitor`` stops improving.

    Checked at each epoch end, after evaluation. An improvement is ``value < best - min_delta``
    (``mode="min"``) or ``value > best + min_delta`` (``mode="max"``). With ``baseline``, a value must
    also beat the baseline to count. A NaN or inf value stops at once. A ``monitor`` that was never
    logged is an error at the first check, listing the metrics that exist.

    >>> from trainforge.engine import Recipe
    >>> import itertools
    >>> values = itertools.chain([1.0, 0.5, 0.6, 0.55, 0.7], itertools.repeat(0.9))
    >>> r = Recipe(lambda b: None, [0])
    >>> r.callbacks.add(type("Val", (), {"on_epoch_end": lambda self, s: s.metrics.update(val=next(values))})())
    >>> stopper = EarlyStopping("val", mode="min", patience=2)
    >>> r.callbacks.add(stopper)
    >>> r.run(20).epoch, stopper.stopped_epoch, stopper.best
    (4, 3, 0.5)
    """

    group = "middle"  # before ModelCheckpoint (epilogue), so the counters a checkpoint saves are current

    def __init__(
        self,
        monitor: str,
        mode: str = "min",
        patience: int = 3,
        min_delta: float = 0.0,
        baseline: float | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise ConfigError(f"EarlyStopping mode={mode!r}; expected 'min' or 'max'")
        if patience < 1:
            raise ConfigError(f"EarlyStopping patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise ConfigError(f"EarlyStopping min_delta must be >= 0 (a required improvement), got {min_delta}")
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.baseline = baseline
        self.best: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    @property
    def best_score(self) -> float | None:
        """The best value seen, as the metric is logged (Kornia's name; never negated for ``mode="max"``)."""
        return self.best

    def improved(self, value: float) -> bool:
        reference = self.best if self.best is not None else self.baseline
        if reference is None:
            return True
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def on_epoch_end(self, state: State) -> None:
        if self.monitor not in state.metrics:
            raise ConfigError(
                f"EarlyStopping monitors {self.monitor!r}, which was never logged; "
                f"logged metrics: {', '.join(sorted(state.metrics)) or 'none'}. "
                "Fix the monitor name (metric names look like 'valid/loss')."
            )
        value = float(state.metrics[self.monitor])
        if not math.isfinite(value):
            self._stop(state)
            return
        if self.improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self._stop(state)

    def _stop(self, state: State) -> None:
        self.stopped_epoch = state.epoch
        state.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait, self.stopped_epoch = state["best"], int(state["wait"]), state["stopped_epoch"]
