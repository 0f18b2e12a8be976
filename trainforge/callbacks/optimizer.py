"""``Optimizer``: the whole parameter update at accumulation boundaries — unscale, clip, step, zero,
schedule — in one callback so their order cannot be wired wrong."""

from __future__ import annotations

from typing import Any

import torch

from ..engine import State


class Optimizer:
    """Step ``optimizer`` every ``accumulation`` batches; the step function only calls ``backward``.

    At each boundary, in this order: unscale (when a ``GradScaler`` is given), divide the summed
    gradients by the number of accumulated batches (so accumulating ``k`` batches of ``b`` equals one
    batch of ``k*b`` with a mean loss), clip to ``clip_grad_norm``, step, ``zero_grad``, and step the
    scheduler when ``scheduler_interval="step"``. ``clip_algorithm="value"`` clamps each gradient element
    into ``[-clip_grad_norm, clip_grad_norm]`` instead (Lightning's ``gradient_clip_algorithm``). A partial
    accumulation left at the end of an epoch is stepped at ``epoch_end``. Posts ``lr`` (host float) and
    ``grad_norm`` (device tensor, when clipping the norm) to ``state.metrics`` and the step count to
    ``state.extra["optimizer_steps"]`` — no host sync.

    >>> import torch
    >>> from trainforge.engine import Recipe
    >>> w = torch.nn.Parameter(torch.ones(1))
    >>> opt = torch.optim.SGD([w], lr=0.5)
    >>> r = Recipe(lambda x: (w * x).sum().backward(), [torch.ones(1), torch.ones(1)])
    >>> r.callbacks.add(Optimizer(opt, accumulation=2))
    >>> _ = r.run(1)
    >>> w.item()  # one step with the mean gradient 1.0
    0.5
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        accumulation: int = 1,
        clip_grad_norm: float | None = None,
        scheduler: Any = None,
        scheduler_interval: str = "step",
        scaler: torch.amp.GradScaler | None = None,
        clip_algorithm: str = "norm",
    ) -> None:
        if accumulation < 1:
            raise ValueError(f"accumulation must be >= 1, got {accumulation}")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        if clip_grad_norm is not None and clip_grad_norm <= 0:
            raise ValueError(f"clip_grad_norm must be positive or None, got {clip_grad_norm}")
        if clip_algorithm not in ("norm", "value"):
            raise ValueError(f"clip_algorithm must be 'norm' or 'value', got {clip_algorithm!r}")
        self.clip_algorithm = clip_algorithm
        self.optimizer = optimizer
        self.accumulation = accumulation
        self.clip_grad_norm = clip_grad_norm
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.scaler = scaler
        self.pending = 0  # micro-batches whose gradients are summed but not yet applied
        self.steps = 0  # optimizer steps taken

    def on_fit_start(self, state: State) -> None:
        if self.pending == 0:
            self._zero_grad()

    def on_batch_end(self, state: State) -> None:
        self.pending += 1
        if self.pending == self.accumulation:
            self._update(state)

    def on_epoch_end(self, state: State) -> None:
        if self.pending:
            self._update(state)
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]

    def _update(self, state: State) -> None:
        scaler, optimizer = self.scaler, self.optimizer
        if scaler is not None:
            scaler.unscale_(optimizer)
        if self.pending > 1 or self.clip_grad_norm is not None:
            params = self._params()
            if self.pending > 1 and params:
                torch._foreach_mul_([p.grad for p in params], 1.0 / self.pending)
            if self.clip_grad_norm is not None and self.clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, self.clip_grad_norm)
            elif self.clip_grad_norm is not None:
                state.metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        self._zero_grad()
        self.pending = 0
        self.steps += 1
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        group = optimizer.param_groups[0]
        if "lr" in group:  # a custom optimizer built with defaults={} has no lr to report
            state.metrics["lr"] = group["lr"]
        state.extra["optimizer_steps"] = self.steps  # EMA and others update when this grows

    def _zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict(), "pending": self.pending, "steps": self.steps}
        if self.pending:  # mid-accumulation: the summed gradients are part of the state
            state["grads"] = [
                None if p.grad is None else p.grad.detach().clone()
                for group in self.optimizer.param_groups
                for p in group["params"]
            ]
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("scheduler", "scaler"):  # check everything before changing anything
            owner = getattr(self, name)
            if (owner is None) != (name not in state):
                what = "GradScaler (fp16 mixed precision)" if name == "scaler" else "learning-rate scheduler"
                fix = "the saved run's precision" if name == "scaler" else "the saved run's scheduler"
                raise KeyError(
                    f"the checkpoint {'holds' if name in state else 'has no'} {what} state but this run "
                    f"{'has no' if owner is None else 'has a'} {what.split(' (')[0]}; resume with {fix}"
                )
        self.optimizer.load_state_dict(state["optimizer"])
        self.pending = int(state["pending"])
        self.steps = int(state["steps"])
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        for param, grad in zip(params, state.get("grads") or []):
            param.grad = None if grad is None else grad.to(param.device).clone()
        for name in ("scheduler", "scaler"):
            owner = getattr(self, name)
            if owner is not None:
                owner.load_state_dict(state[name])
