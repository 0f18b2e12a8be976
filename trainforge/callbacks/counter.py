"""``Counter``: publishes the loop's progress counters as metrics so loggers show them."""

from __future__ import annotations

from ..engine import State


class Counter:
    """Copy ``epoch``, ``global_step`` and ``epoch_step`` into ``state.metrics`` each batch.

    The loop owns the counters (they are what a checkpoint resumes from); ``Counter`` only makes them
    visible. Add it to the ``prologue`` group so later callbacks see the current values.

    >>> from trainforge.engine import Recipe
    >>> r = Recipe(lambda b: None, [0, 1, 2])
    >>> r.callbacks.add(Counter(), "prologue")
    >>> r.run(1).metrics
    {'epoch': 0, 'global_step': 3, 'epoch_step': 3}
    """

    def on_batch_end(self, state: State) -> None:
        metrics = state.metrics
        metrics["epoch"] = state.epoch
        metrics["global_step"] = state.global_step
        metrics["epoch_step"] = state.epoch_step
