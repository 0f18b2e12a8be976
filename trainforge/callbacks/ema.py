"""``EMA``: an exponential moving average of a model's weights, updated after each optimizer step, that
evaluation can swap in and that is saved with checkpoints."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..engine import State
from ..errors import ConfigError

#: ``state.extra`` key holding the number of optimizer steps taken so far (an int on the host).
OPTIMIZER_STEPS = "optimizer_steps"


class EMA:
    """Keep ``shadow = decay * shadow + (1 - decay) * weights`` after every ``update_every`` optimizer steps.

    Parameters are averaged; buffers (BatchNorm running statistics, counters) are copied. With
    ``warmup`` the decay ramps up as ``min(decay, (1 + n) / (10 + n))``, ``n`` being the number of
    updates done before this one (0.1 at the first update), so early averages are not dominated by the
    random initial weights. Each update is two fused ``_foreach`` calls with a host float weight: no
    host sync, no per-tensor Python kernel launches.

    How it learns that an optimizer step happened: as a callback, at ``batch_end`` and ``epoch_end``
    (where a partial accumulation is flushed) it compares ``state.extra["optimizer_steps"]`` — the
    optimizer step count, posted by whoever steps the optimizer — with the count at its last update
    (an int compare). The ``Optimizer`` callback posts that count. Add the EMA *after* the callback
    that steps the optimizer (or it lags a batch) and *before* checkpointing (``epilogue``), so a
    checkpoint written at epoch end holds the update of the step flushed there. A loop without
    callbacks calls ``update()`` after each optimizer step instead; use one mechanism, not both.

    ``swap(model)`` (or ``apply_to``/``restore``) runs evaluation with the averaged weights and puts the
    raw ones back bit for bit; ``module`` is the averaged copy itself, in eval mode.

    >>> net = nn.Linear(1, 1, bias=False)
    >>> _ = nn.init.zeros_(net.weight)
    >>> ema = EMA(net, decay=0.5, warmup=False)
    >>> for value in (1.0, 3.0):  # two optimizer steps would change the weights like this
    ...     _ = nn.init.constant_(net.weight, value)
    ...     ema.update()
    >>> ema.module.weight.item()  # 0.5 * (0.5 * 0 + 0.5 * 1) + 0.5 * 3
    1.75
    >>> with ema.swap(net):
    ...     net.weight.item()
    1.75
    >>> net.weight.item()
    3.0
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True, update_every: int = 1) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1], got {decay!r}")
        if not isinstance(update_every, int) or update_every < 1:
            raise ConfigError(f"EMA update_every must be a positive number of optimizer steps, got {update_every!r}")
        self.model = model
        self.decay = decay
        self.warmup = warmup
        self.update_every = update_every
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0
        self.seen_optimizer_steps = 0  # optimizer step count at the last update
        self._backup: list[torch.Tensor] | None = None

    # -- the update --------------------------------------------------------------------------------
    def current_decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module | None = None) -> None:
        """Average ``model`` (default: the model given at construction) into the shadow once, now."""
        model = self.model if model is None else model
        shadow_params, shadow_buffers = self._tensors(self.module)
        params, buffers = self._tensors(model)
        if len(params) != len(shadow_params) or len(buffers) != len(shadow_buffers):
            raise ConfigError(
                f"EMA: the model has {len(params)} parameters and {len(buffers)} buffers but the average has "
                f"{len(shadow_params)} and {len(shadow_buffers)}; build the EMA from the model being trained"
            )
        if params and shadow_params[0].device != params[0].device:  # the model moved after the EMA was built
            self.module.to(params[0].device)
            shadow_params, shadow_buffers = self._tensors(self.module)
        weight = 1.0 - self.current_decay()
        if params:
            torch._foreach_lerp_(shadow_params, params, weight)
        if buffers:
            torch._foreach_copy_(shadow_buffers, buffers)
        self.num_updates += 1

    @staticmethod
    def _tensors(module: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return list(module.parameters()), list(module.buffers())

    @staticmethod
    def _all_tensors(module: nn.Module) -> list[torch.Tensor]:
        return [*module.parameters(), *module.buffers()]

    # -- callback hooks ------------------------------------------------------------------------------
    def on_batch_end(self, state: State) -> None:
        self._maybe_update(state)

    def on_epoch_end(self, state: State) -> None:
        self._maybe_update(state)
        if OPTIMIZER_STEPS not in state.extra and state.epoch_step > 0:
            raise ConfigError(
                f"EMA saw no state.extra[{OPTIMIZER_STEPS!r}] during a whole epoch, so it never updated. "
                "The callback that steps the optimizer must post its step count there; or call ema.update() "
                "after each optimizer step and do not add EMA as a callback."
            )

    def _maybe_update(self, state: State) -> None:
        steps = state.extra.get(OPTIMIZER_STEPS)
        if steps is not None and steps - self.seen_optimizer_steps >= self.update_every:
            self.update()
            self.seen_optimizer_steps = steps

    # -- evaluation with the averaged weights -------------------------------------------------------
    @torch.no_grad()
    def apply_to(self, model: nn.Module | None = None) -> None:
        """Copy the averaged weights and buffers into ``model``, keeping its own for ``restore``."""
        if self._backup is not None:
            raise RuntimeError("EMA weights are already applied; call restore() first")
        model = self.model if model is None else model
        targets = self._all_tensors(model)
        self._backup = [t.detach().clone() for t in targets]
        torch._foreach_copy_(targets, self._all_tensors(self.module))

    @torch.no_grad()
    def restore(self, model: nn.Module | None = None) -> None:
        """Put back the weights and buffers ``apply_to`` replaced, bit for bit."""
        if self._backup is None:
            raise RuntimeError("restore() without apply_to(): there are no raw weights to put back")
        model = self.model if model is None else model
        torch._foreach_copy_(self._all_tensors(model), self._backup)
        self._backup = None

    @contextmanager
    def swap(self, model: nn.Module | None = None) -> Iterator[nn.Module]:
        """``with ema.swap(model):`` runs the block with averaged weights in ``model``; raw ones after."""
        model = self.model if model is None else model
        self.apply_to(model)
        try:
            yield model
        finally:
            self.restore(model)

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and buffers (references, not copies), ``num_updates`` and the step count."""
        return {
            "shadow": self.module.state_dict(),
            "num_updates": self.num_updates,
            "seen_optimizer_steps": self.seen_optimizer_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["shadow"])
        self.num_updates = int(state["num_updates"])
        self.seen_optimizer_steps = int(state.get("seen_optimizer_steps", 0))
