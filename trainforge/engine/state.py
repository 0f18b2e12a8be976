"""The shared state a Recipe's callbacks read and write, and what it holds at each event."""

from __future__ import annotations

import weakref
from typing import Any


class State:
    """What the loop knows, shared with every callback.

    Progress (owned by the loop, saved in checkpoints):

    - ``epoch``: index of the epoch in progress (0-based); after ``run(n)`` returns normally, ``n``.
    - ``global_step``: batches completed over the whole run.
    - ``epoch_step``: batches completed in the current epoch. At ``batch_start`` it is the index of the
      batch about to run; at ``batch_end`` it already counts that batch.
    - ``max_epochs``: the total ``run`` was asked for.
    - ``epoch_complete``: True while ``epoch_end`` hooks run.
    - ``samples``: samples in the batches completed over the whole run (the recipe's ``batch_size_fn``
      counts them), so throughput needs no per-batch bookkeeping in callbacks.

    Per batch: ``batch`` (already on the recipe's device) and ``batch_size`` (its samples) from
    ``batch_start`` on, and ``outputs``, the dict the step function returned (``{}`` for ``None``),
    from ``batch_end`` on. They are replaced each batch, never copied to the host.

    ``metrics``: values ready to be logged. Callbacks may post device tensors here during an epoch
    (no host sync); loggers convert them to floats at their own cadence, and epoch-end values are
    host floats.

    ``should_stop``: set it to end the run after the current batch; ``fit_end`` still fires.
    ``exception``: the exception being raised, at the ``exception`` event. ``owner``: the recipe.
    ``extra``: a free dict for callbacks to talk through.

    >>> s = State()
    >>> (s.epoch, s.global_step, s.epoch_step, s.should_stop)
    (0, 0, 0, False)
    """

    __slots__ = (
        "_owner",
        "batch",
        "batch_size",
        "epoch",
        "epoch_complete",
        "epoch_step",
        "exception",
        "extra",
        "global_step",
        "max_epochs",
        "metrics",
        "outputs",
        "samples",
        "should_stop",
    )

    def __init__(self, owner: Any = None) -> None:
        self.owner = owner
        self.epoch = 0
        self.global_step = 0
        self.epoch_step = 0
        self.samples = 0
        self.batch_size = 0
        self.epoch_complete = False
        self.max_epochs = 0
        self.batch: Any = None
        self.outputs: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.should_stop = False
        self.exception: BaseException | None = None
        self.extra: dict[str, Any] = {}

    @property
    def owner(self) -> Any:
        """The recipe that runs this state, held weakly: the recipe holds its state, and a strong reference
        back would keep both (and all they reference) alive in a reference cycle after the run."""
        owner = self._owner
        return owner() if isinstance(owner, weakref.ref) else owner

    @owner.setter
    def owner(self, owner: Any) -> None:
        try:
            self._owner = None if owner is None else weakref.ref(owner)
        except TypeError:  # an owner that cannot be weakly referenced is held as it is
            self._owner = owner

    def progress(self) -> dict[str, int]:
        """The counters a checkpoint needs to resume at the next batch. During ``epoch_end`` the epoch
        counts as done, so a checkpoint written there resumes at the start of the next epoch (and
        does not replay ``epoch_end``)."""
        if self.epoch_complete:
            return {"epoch": self.epoch + 1, "global_step": self.global_step, "epoch_step": 0, "samples": self.samples}
        return {"epoch": self.epoch, "global_step": self.global_step, "epoch_step": self.epoch_step,
                "samples": self.samples}

    def load_progress(self, progress: dict[str, int]) -> None:
        self.epoch = int(progress["epoch"])
        self.global_step = int(progress["global_step"])
        self.epoch_step = int(progress["epoch_step"])
        self.samples = int(progress.get("samples", 0))  # checkpoints of 0.1.0 do not count samples

    def __repr__(self) -> str:
        return (
            f"State(epoch={self.epoch}, global_step={self.global_step}, epoch_step={self.epoch_step}, "
            f"metrics={sorted(self.metrics)}, should_stop={self.should_stop})"
        )
