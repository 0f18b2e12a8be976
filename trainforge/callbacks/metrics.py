"""``EpochMetricAvg``: the running mean of a step output over an epoch, accumulated on the device."""

from __future__ import annotations

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

    >>> import torch
    >>> from trainforge.engine import Recipe
    >>> r = Recipe(lambda x: {"loss": x}, [torch.tensor(1.0), torch.tensor(3.0)])
    >>> r.callbacks.add(EpochMetricAvg("loss", post_each_batch=False))
    >>> r.run(1).metrics["loss"]
    2.0
    """

    def __init__(
        self, name: str, post_each_batch: bool = True, alias: str | None = None, weight: str | None = None
    ) -> None:
        self.name = name
        self.alias = alias or name
        self.post_each_batch = post_each_batch
        self.weight = weight
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._view = RunningMean(self)

    def on_epoch_start(self, state: State) -> None:
        if state.epoch_step == 0:  # a resumed epoch keeps the restored partial sum
            self._sum, self._count = None, 0

    def on_batch_end(self, state: State) -> None:
        try:
            value = state.outputs[self.name]
        except KeyError:
            raise KeyError(
                f"EpochMetricAvg({self.name!r}): the step function returned no {self.name!r}; "
                f"it returned {sorted(state.outputs)}"
            ) from None
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
        return {"sum": total, "count": self._count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sum = None if state["sum"] is None else state["sum"].clone()
        self._count = int(state["count"])
