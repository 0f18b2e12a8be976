"""``EpochMetricAvg``: the running mean of a step output over an epoch, accumulated on the device."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..engine import State


class RunningMean:
    """The current epoch mean of an ``EpochMetricAvg``, computed only when read (``float()``/``item()``).

    Posting this view instead of ``sum / count`` keeps the per-batch cost at one in-place add: the
    division (and the host sync) happens at the logger's cadence.
    """

    __slots__ = ("_owner",)

    def __init__(self, owner: EpochMetricAvg) -> None:
        self._owner = owner

    def tensor(self) -> torch.Tensor:
        owner = self._owner
        return owner._sum / max(owner._count, 1)

    def item(self) -> float:
        return self.tensor().item()  # host sync, at the reader's cadence

    __float__ = item

    def __repr__(self) -> str:
        return f"RunningMean({self._owner.name!r})"


class EpochMetricAvg:
    """Average ``state.outputs[name]`` over the epoch and post it to ``state.metrics[alias or name]``.

    With ``weight`` (an outputs key holding the batch size) the mean is per sample, not per batch, so a
    short last batch counts for what it holds. Under torch.distributed the epoch mean is reduced
    across processes.

    The sum stays on the outputs' device (no host sync per batch). With ``post_each_batch`` a
    ``RunningMean`` view is posted, which loggers read at their cadence; at ``epoch_end`` the epoch mean is
    posted as a host float (one sync per epoch). The sum and count are saved in checkpoints, so a
    resumed epoch averages exactly like an uninterrupted one.

    With ``optional`` a step may leave ``name`` out (an evaluation that computes no loss, e.g. a torchvision
    detector in eval mode): an epoch where no batch has it posts nothing (not 0, not NaN), like any
    metric that was not computed. A key present for some batches of an epoch and absent for others is
    a bug in the step function: an error names the key and the first batch that differs.

    >>> import torch
    >>> from trainforge.engine import Recipe
    >>> r = Recipe(lambda x: {"loss": x}, [torch.tensor(1.0), torch.tensor(3.0)])
    >>> r.callbacks.add(EpochMetricAvg("loss", post_each_batch=False))
    >>> r.run(1).metrics["loss"]
    2.0
    >>> r = Recipe(lambda x: {"output": x}, [torch.tensor(1.0)])
    >>> r.callbacks.add(EpochMetricAvg("loss", post_each_batch=False, optional=True))
    >>> "loss" in r.run(1).metrics
    False
    """

    def __init__(
        self, name: str, post_each_batch: bool = True, alias: str | None = None, weight: str | None = None,
        optional: bool = False,
    ) -> None:
        self.name = name
        self.alias = alias or name
        self.post_each_batch = post_each_batch
        self.weight = weight
        self.optional = optional
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._missing = 0  # batches of this epoch without the key (only with optional)
        self._view = RunningMean(self)

    def on_epoch_start(self, state: State) -> None:
        if state.epoch_step == 0:  # a resumed epoch keeps the restored partial sum
            self._sum, self._count, self._missing = None, 0, 0

    def on_batch_end(self, state: State) -> None:
        outputs = state.outputs
        value = outputs.get(self.name) if isinstance(outputs, Mapping) else None
        if value is None or self._missing:
            self._check_presence(state, value is not None)
            if value is None:
                return
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(float(value))
        elif value.requires_grad:  # step outputs are usually detached already: no second detach per batch
            value = value.detach()
        weight = 1 if self.weight is None else int(state.outputs[self.weight])  # the batch size: a host int
        self._count += weight
        if self._sum is None:
            self._sum = value.float() * weight
        else:
            self._sum.add_(value, alpha=weight)  # one in-place kernel per batch
        if self.post_each_batch:
            state.metrics[self.alias] = self._view

    def _check_presence(self, state: State, present: bool) -> None:
        """A missing key is an error unless ``optional``; then it must be missing for every batch."""
        outputs = state.outputs
        returned = sorted(outputs) if isinstance(outputs, Mapping) else f"a {type(outputs).__name__}, not a dict"
        if not self.optional:
            raise KeyError(
                f"EpochMetricAvg({self.name!r}): the step function returned no {self.name!r}; it returned {returned}"
            )
        if present or self._sum is not None:
            before, now = ("no", "returned it") if present else ("", f"returned none (it returned {returned})")
            raise KeyError(
                f"EpochMetricAvg({self.name!r}): the step function returned {self.name!r} for some batches of this "
                f"epoch and not for others: the batches before batch {state.epoch_step} (counting from 1) had "
                f"{before + ' ' if before else ''}{self.name!r}, batch {state.epoch_step} {now}. Return it for every "
                "batch (computed) or for none (not computed: then it is not logged)"
            )
        self._missing += 1

    def on_epoch_end(self, state: State) -> None:
        if not self._count:
            return
        total, count = self._sum, self._count
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            pair = torch.stack([total.float(), torch.tensor(float(count), device=total.device)])
            torch.distributed.all_reduce(pair)
            total, count = pair[0], pair[1].item()
        state.metrics[self.alias] = total.item() / count  # host sync: once per epoch

    def state_dict(self) -> dict[str, Any]:
        total = None if self._sum is None else self._sum.detach().cpu()
        return {"sum": total, "count": self._count, "missing": self._missing}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sum = None if state["sum"] is None else state["sum"].clone()
        self._count = int(state["count"])
        self._missing = int(state.get("missing", 0))  # checkpoints before 0.2 have no "missing"
