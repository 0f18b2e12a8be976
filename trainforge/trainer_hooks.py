"""The Trainer's own callbacks — the parts of a run that are not stages: the non-finite guard, SIGTERM
preemption, test fault injection, metric logging, training metrics, scheduled evaluation — composed by
``Trainer`` in a fixed order (see ``trainer_setup.build_recipes``)."""

from __future__ import annotations

import contextlib
import math
import os
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .callbacks import Optimizer
from .engine import State
from .errors import CheckpointError, NonFiniteLossError

if TYPE_CHECKING:
    from .trainer import Trainer

PHASE_PREFIX = {"TRAIN": "train", "VALID": "valid", "TEST": "test", "PREDICT": "predict"}


def _metric_specs(metrics: Iterable[Any]) -> list[Any]:
    """Metric names (``"Accuracy"``) become specs (``{"name": "Accuracy"}``); dicts are copied and
    ``MetricSpec`` objects pass through.

    >>> _metric_specs(["Accuracy", {"name": "F1Score", "params": {"average": "macro"}}])
    [{'name': 'Accuracy'}, {'name': 'F1Score', 'params': {'average': 'macro'}}]
    """
    if isinstance(metrics, (str, Mapping)):
        metrics = [metrics]  # metrics="Accuracy" or a single spec
    return [{"name": m} if isinstance(m, str) else dict(m) if isinstance(m, Mapping) else m for m in metrics]



class _NonFiniteGuard:
    """Stops (or skips) on a NaN/inf loss or gradient, naming the step, epoch, loss (and its terms when
    the criterion returns them) and the batch's sample indices.

    On the CPU the loss check is a plain memory read per step, made before ``backward``, so a bad step
    never reaches the optimizer; the gradients are checked before each optimizer step by one foreach
    kernel (``torch._foreach_norm``) whose result is read. On a GPU a read is a host sync, so under
    ``raise`` the first bad step is recorded on the device and checked every ``log_every_n_steps``
    steps, at epoch end and before each checkpoint, and the error names that step (``skip`` must know
    at once, so it syncs every step). With a ``GradScaler`` (fp16) non-finite gradients are the
    scaler's business: it skips that step and lowers the scale. Checkpoints check the weights first, so
    non-finite weights are never saved.
    """

    def __init__(self, policy: str, device_type: str = "cpu") -> None:
        self.policy = policy
        self.device_type = device_type
        self.deferred = device_type != "cpu" and policy == "raise"
        if not self.deferred:
            self.on_batch_end = None  # nothing recorded on a device to check: no per-step hook
        self.state: State | None = None
        self.skipped = 0
        self.scaler: Any = None
        self.every = 50
        self._check_grads = False  # decided at fit start, once the scaler is known
        self._first_bad: torch.Tensor | None = None  # device scalar: first bad step, 0 while none
        self._recent: dict[int, tuple[Any, torch.Tensor, dict[str, torch.Tensor] | None]] = {}
        self._groups: Any = None
        self._num_groups = 0
        self._params: list[torch.Tensor] = []

    def on_fit_start(self, state: State) -> None:
        self.state = state
        for callback in state.owner.callbacks if state.owner is not None else ():
            if isinstance(callback, Optimizer):
                self.scaler = callback.scaler
            elif isinstance(callback, _LogWriter):
                self.every = callback.every
        self._check_grads = self.device_type == "cpu" and self.scaler is None
        self._groups = None  # parameters are looked up again: the optimizer may have changed

    def on_batch_end(self, state: State) -> None:
        if self._first_bad is not None and state.global_step % self.every == 0:
            self.raise_if_bad()

    def on_epoch_end(self, state: State) -> None:
        self.raise_if_bad()

    def check(self, loss: torch.Tensor, batch: dict[str, Any], terms: dict[str, torch.Tensor] | None = None) -> bool:
        """True when the batch must be skipped; raises under the ``raise`` policy."""
        if self.deferred:
            self._record(loss, batch, terms)
            return False
        if math.isfinite(loss.item()):  # on the CPU a plain read: no kernel, no sync
            return False
        if self.policy == "skip":
            self.skipped += 1
            warnings.warn(f"skipping batch at step {self.state.global_step + 1}: loss is {loss.item()}", stacklevel=2)
            return True
        self._raise(self.state.global_step + 1, self.state.epoch + 1, loss.item(), batch.get("index"), terms)
        return False

    def _record(self, loss: torch.Tensor, batch: dict[str, Any], terms: dict[str, torch.Tensor] | None) -> None:
        """Remember this step on the device without a host sync; ``raise_if_bad`` reads it later."""
        step = self.state.global_step + 1
        if self._first_bad is None:
            self._first_bad = torch.zeros((), dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss.detach()) & (self._first_bad == 0)
        self._first_bad = torch.where(bad, step, self._first_bad)
        detached = None if terms is None else {k: v.detach() for k, v in terms.items()}
        self._recent[step] = (self.state.epoch + 1, batch.get("index"), loss.detach(), detached)

    def raise_if_bad(self) -> None:
        """Raise for the first non-finite loss recorded on the device since the last check (one host sync)."""
        if self._first_bad is None:
            return
        step = int(self._first_bad)
        recent, self._recent = self._recent, {}
        if step:
            epoch, indices, loss, terms = recent[step]
            self._raise(step, epoch, loss.item(), indices, terms)

    @staticmethod
    def _raise(step: int, epoch: int, value: float, indices: Any, terms: dict[str, torch.Tensor] | None) -> None:
        shown = indices.tolist() if isinstance(indices, torch.Tensor) else indices
        parts = ", ".join(f"{name}={float(term.detach()):.6g}" for name, term in terms.items()) if terms else ""
        raise NonFiniteLossError(
            f"loss is {value} at step {step} (epoch {epoch}){f'; loss terms: {parts}' if parts else ''}; "
            f"batch sample indices: {shown}. No checkpoint with non-finite weights was written. "
            "Lower the learning rate, enable gradient_clip_val, check the data at those indices, "
            "or set non_finite='skip'."
        )

    def check_grads(self, optimizer: Any, batch: dict[str, Any]) -> None:
        """Before an optimizer step on the CPU: every gradient must be finite (a NaN only in the backward
        pass leaves the loss finite). Under ``skip`` the step's gradients are dropped instead."""
        if not self._check_grads:
            return  # a GPU (checked with the weights at checkpoints) or a GradScaler, which skips bad steps
        groups = optimizer.param_groups
        if groups is not self._groups or len(groups) != self._num_groups:  # a group added (FreezeUnfreeze)
            self._groups, self._num_groups = groups, len(groups)
            self._params = [p for group in groups for p in group["params"]]
        grads = [grad for p in self._params if (grad := p.grad) is not None]
        if not grads:
            return
        # one foreach kernel: NaN and inf propagate into the norms (on the CPU the read is a memory read,
        # not a device sync); the 2-norm is the fastest on the CPU but overflows for finite gradients
        # above ~1e19, so a non-finite result is confirmed with the largest magnitude, which cannot
        norm = torch.stack(torch._foreach_norm(grads)).sum()
        if math.isfinite(norm.item()):
            return
        if math.isfinite(torch.stack(torch._foreach_norm(grads, math.inf)).amax().item()):
            return  # large but finite gradients
        state = self.state
        where = f"at step {state.global_step + 1} (epoch {state.epoch + 1})"
        if self.policy == "skip":
            self.skipped += 1
            optimizer.zero_grad(set_to_none=True)
            warnings.warn(f"skipping the optimizer step {where}: gradients are non-finite", stacklevel=2)
            return
        raise NonFiniteLossError(
            f"gradients are non-finite (norm {norm.item()}) {where} although the loss is finite; batch sample "
            f"indices: {batch['index'].tolist()}. No checkpoint with non-finite weights was written. "
            "Run with torch.autograd.set_detect_anomaly(True) to find the op."
        )

    def assert_finite_weights(self, model: nn.Module) -> None:
        """Refuse to checkpoint non-finite weights (one host sync, at checkpoint time only); a bad loss
        recorded on the device is reported first, with its step."""
        from .checkpoint import assert_finite

        self.raise_if_bad()
        try:
            assert_finite(model.state_dict())
        except CheckpointError as error:
            raise NonFiniteLossError(
                f"model weights: {error}. The checkpoint was not written and the last good checkpoint is kept; "
                "lower the learning rate or enable gradient_clip_val."
            ) from None


@contextlib.contextmanager
def _sigterm_flag(preemption: _Preemption) -> Iterator[None]:
    """While training, SIGTERM and SIGINT (Ctrl-C) only set a flag; the loop stops cleanly at the next
    batch end. A second Ctrl-C raises ``KeyboardInterrupt`` at once (the user insists)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and preemption.signum == signal.SIGINT:
            raise KeyboardInterrupt
        preemption.request(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Preemption:
    """On SIGTERM or SIGINT: finish the current step, write ``checkpoints/last``, print the call that
    resumes, exit with 128 + the signal number (143 for SIGTERM, 130 for SIGINT).

    Alone, the signal handler sets ``state.should_stop``, which the loop reads after every step anyway:
    nothing runs per step. Under torch.distributed every rank must stop at the same step, so the flag
    is agreed across ranks (a max all-reduce) every ``log_every_n_steps`` steps instead. ``finish``
    runs after the loop: it writes the checkpoint and exits when the run was stopped for the signal.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = weakref.proxy(trainer)  # the trainer holds this callback: no cycle back
        self.requested = False  # a signal arrived (on this rank)
        self.signum: int | None = None
        self.stopping = False  # the loop was told to stop for it (agreed by every rank)
        self.distributed = trainer.runtime.distributed
        self.every = trainer.config.log_every_n_steps
        if not self.distributed:
            self.on_batch_end = None

    def request(self, signum: int | None = None) -> None:
        """The signal handler: only sets flags (the loop stops cleanly after the current step)."""
        import signal

        self.requested = True
        self.signum = signal.SIGTERM if signum is None else signum
        if not self.distributed:
            self.stopping = True
            self.trainer.recipe.state.should_stop = True

    def on_fit_start(self, state: State) -> None:
        if self.stopping:  # a signal after the handler was installed, before ``run`` cleared should_stop
            state.should_stop = True

    def on_batch_end(self, state: State) -> None:
        if state.global_step % self.every == 0 and self.trainer.runtime.any_rank(self.requested):
            self.stopping = state.should_stop = True

    def finish(self, state: State) -> None:
        """After the loop: when it stopped for a signal before its last epoch, write ``last``, print how
        to resume and exit with 128 + the signal number."""
        import signal

        if not self.stopping or state.epoch >= state.max_epochs:
            return
        signum = self.signum or signal.SIGTERM  # a rank told by the others has no signal of its own
        trainer = self.trainer
        checkpoint = getattr(trainer, "checkpoint_callback", None)
        if checkpoint is not None:
            path = checkpoint.write_last(state)
        else:  # checkpoints are off, but stopping must not lose the run: `last` alone
            path = self._write_last(state)
        # every rank says why it stops (a rank's log may be all the user reads)
        where = f"wrote {path}" if path is not None else "rank 0 writes the checkpoint"
        print(
            f"{signal.Signals(signum).name}: stopped after step {state.global_step}; {where}. Resume with: "
            f"trainer.fit(resume_from={str(trainer.run_dir)!r}) (a Trainer built like this one)"
            f"{_cli_resume_command(trainer.run_dir)}",
            flush=True,
        )
        raise SystemExit(128 + signum)

    def _write_last(self, state: State) -> Any:
        from .checkpoint import save_checkpoint

        if not self.trainer.runtime.is_main:
            return None
        metadata = {"global_step": state.global_step, "epoch": state.progress()["epoch"],
                    "run_id": state.extra.get("run_id")}  # fmt: skip
        payload = state.extra.get("save_state", self.trainer.state_dict)()
        return save_checkpoint(self.trainer.run_dir / "checkpoints" / "last", payload, metadata)


def _cli_resume_command(run_dir: Any) -> str:
    """``; or: trainforge train ... resume_path=<run>`` when this process is ``trainforge train``."""
    import shlex
    import sys

    argv = sys.argv
    if not (argv and os.path.basename(argv[0]) == "trainforge" and "train" in argv[1:2]):
        return ""
    args = [a for a in argv[1:] if not a.startswith("resume_path=")]
    return f"; or run: {shlex.join(['trainforge', *args, f'resume_path={run_dir}'])}"


class _FaultInjection:
    """Test hook (``TRAINFORGE_FAULT``): SIGKILL or SIGTERM this process at an exact point, after every
    other callback of that event (so a checkpoint due at that step is already written)."""

    def __init__(self, spec: str) -> None:
        kind, _, value = spec.partition(":")
        self.kind, self.at = kind, int(value)

    def on_batch_end(self, state: State) -> None:
        import signal

        if self.kind == "kill_after_step" and state.global_step == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "sigterm_after_step" and state.global_step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        if self.kind == "sigint_after_step" and state.global_step == self.at:
            os.kill(os.getpid(), signal.SIGINT)

    def on_epoch_end(self, state: State) -> None:
        import signal

        if self.kind == "kill_after_epoch" and state.epoch + 1 == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


class _LogWriter:
    """Writes metrics to the run's loggers (JSONL always, TensorBoard when enabled, any ``Logger`` passed
    in ``callbacks``): training values every ``log_every_n_steps`` (the host sync happens here, at that
    cadence) and at epoch end, each evaluation's values at its end; a grid of training inputs (the batch
    at the first logging point), and each evaluation's non-scalar metrics as figures (confusion
    matrices, per-class bars, curves), titled with the weights evaluated.

    The learning rate goes to TensorBoard at every optimizer step, so a warm-up is visible whatever the
    logging cadence: it is a host float already (no sync), kept in a list per step and written at the
    cadence with the steps it belongs to."""

    def __init__(self, trainer: Trainer, eval_phase: Callable[[], str]) -> None:
        self.trainer = weakref.proxy(trainer)  # the trainer holds this callback: no cycle back
        self.eval_phase = eval_phase  # the phase (``VALID``, ``TEST``...) of the evaluation that just ended
        self.every = trainer.config.log_every_n_steps
        self.images_logged = False
        self._lr_steps: list[tuple[int, float]] = []
        self._lr_loggers: list[Any] | None = None  # decided at the first step: the loggers are built by then
        self._optimizer_steps = 0

    def _flush_lr(self) -> None:
        pending, self._lr_steps = self._lr_steps, []
        for logger in self._lr_loggers or ():
            for step, lr in pending:
                logger.log_metrics({"lr": lr}, step=step, phase="train")

    def _record_lr(self, state: State) -> None:
        if self._lr_loggers is None:
            from .loggers import TensorBoardLogger

            self._lr_loggers = [x for x in self.trainer.loggers if isinstance(x, TensorBoardLogger)]
        steps = state.extra.get("optimizer_steps", 0)
        if self._lr_loggers and steps != self._optimizer_steps:  # accumulating: only when the optimizer stepped
            self._optimizer_steps = steps
            lr = state.metrics.get("lr")  # an optimizer built without an lr reports none
            if lr is not None:
                self._lr_steps.append((state.global_step, lr))

    def _log(self, state: State, names: Iterable[str], phase: str) -> None:
        metrics = {k: state.metrics[k] for k in names if k in state.metrics}
        if metrics:
            per_step = self._lr_loggers or ()
            without_lr = {k: v for k, v in metrics.items() if k != "lr"} if per_step and "lr" in metrics else metrics
            for logger in self.trainer.loggers:
                shown = without_lr if any(logger is x for x in per_step) else metrics  # lr: written per step
                if shown:
                    logger.log_metrics(shown, step=state.global_step, phase=phase, epoch=state.epoch)

    def _log_images(self, state: State) -> None:
        """A grid of up to 16 training inputs, once per run, at the first logging point (not per step)."""
        self.images_logged = True
        if not self.trainer.runtime.is_main:
            return
        x = state.batch.get("input") if isinstance(state.batch, dict) else None
        if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] in (1, 3):
            images = x[:16].detach().float().cpu()
            low, high = images.amin(), images.amax()
            for logger in self.trainer.loggers:
                logger.log_images("inputs/train", (images - low) / (high - low).clamp_min(1e-8), state.global_step)

    def on_batch_end(self, state: State) -> None:
        if self._lr_loggers is None or self._lr_loggers:
            self._record_lr(state)
        if state.global_step % self.every == 0:
            if not self.images_logged:
                self._log_images(state)
            self._flush_lr()
            self._log(state, [k for k in state.metrics if not _is_eval_name(k)], "train")

    def on_eval_end(self, state: State) -> None:
        results = state.extra.get("eval_metrics", {})
        self._log(state, [k for k in state.metrics if k in results], PHASE_PREFIX[self.eval_phase()])
        if not (self.trainer.runtime.is_main and self.trainer.loggers):
            return
        from .report.plots import figures_collected, metric_figure

        weights = "EMA weights" if self.trainer.ema is not None else "current weights"
        with figures_collected():
            for name, value in state.extra.get("non_scalar_metrics", {}).items():
                title = f"{name} · {weights}, step {state.global_step}"
                figure = metric_figure(name, value, self.trainer.class_names, title=title)  # once per evaluation
                if figure is not None:
                    for logger in self.trainer.loggers:
                        logger.log_figure(name, figure, state.global_step)

    def on_epoch_end(self, state: State) -> None:
        if not self.images_logged:
            self._log_images(state)
        self._flush_lr()
        self._log(state, [k for k in state.metrics if not _is_eval_name(k)], "train")

    def on_fit_end(self, state: State) -> None:
        self._flush_lr()


def _is_logger(obj: Any) -> bool:
    """True for an object with every ``Logger`` method (``log_metrics``, ``log_hyperparams``, ...)."""
    from .loggers.base import Logger

    return isinstance(obj, Logger)


def _is_eval_name(name: str) -> bool:
    """``valid/...``, ``valid_<loader>/...``, ``test/...``: posted by ``evaluate``, logged at ``eval_end``."""
    head, sep, _ = name.partition("/")
    return bool(sep) and head.split("_", 1)[0] in ("valid", "test", "predict")


class _EvalBatchEvents:
    """On the eval recipe: fires ``eval_batch_start``/``eval_batch_end`` on the trainer's callbacks."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = weakref.proxy(trainer)  # the trainer holds this callback: no cycle back

    def on_batch_start(self, state: State) -> None:
        self.trainer.recipe.callbacks.fire("eval_batch_start", state)

    def on_batch_end(self, state: State) -> None:
        self.trainer.recipe.callbacks.fire("eval_batch_end", state)


class _TrainMetrics:
    """Training metrics (``train/...``): reset at each epoch start, computed over the epoch so far every
    ``log_every_n_steps`` steps and at epoch end (host floats; the only host syncs, and under DDP the
    only cross-rank reductions, which every rank reaches at the same step). Their running state is saved
    in checkpoints so a resumed epoch counts the same samples."""

    def __init__(self, trainer: Trainer, non_scalars: dict[str, Any]) -> None:
        self.trainer = weakref.proxy(trainer)  # the trainer holds this callback: no cycle back
        self.non_scalars = non_scalars  # the trainer's latest non-scalar values by prefix: ``train`` is ours
        self.every = trainer.config.log_every_n_steps
        if not trainer.config.metrics:
            self.on_batch_end = None  # no training metrics to compute at the cadence

    def on_epoch_start(self, state: State) -> None:
        manager = self.trainer.metrics_manager
        if manager is not None and state.epoch_step == 0:
            manager.reset("TRAIN")
            for name in manager.names("TRAIN"):  # last epoch's values must not be logged as this epoch's
                state.metrics.pop(name, None)

    def on_batch_end(self, state: State) -> None:
        if state.global_step % self.every == 0:
            self._post(state)

    def on_epoch_end(self, state: State) -> None:
        self._post(state)

    def _post(self, state: State) -> None:
        manager = self.trainer.metrics_manager
        if manager is not None and manager.names("TRAIN"):
            computed = manager.compute("TRAIN")
            state.metrics.update(manager.scalars(computed))
            self.non_scalars["train"] = manager.non_scalars(computed)

    def state_dict(self) -> dict[str, Any]:
        manager = self.trainer.metrics_manager
        return {"manager": None if manager is None else manager.state_dict(),
                "num_classes": None if manager is None else manager.num_classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["manager"] is None:
            return
        trainer = self.trainer
        if trainer.metrics_manager is None:
            from .metrics import MetricsManager

            manager = MetricsManager(_metric_specs(trainer.config.metrics), num_classes=state["num_classes"])
            trainer.metrics_manager = manager.to(trainer.runtime.device)
        trainer.metrics_manager.load_state_dict(state["manager"])


class _Evaluation:
    """Runs ``trainer.evaluate()`` at each epoch end, or every ``eval_steps`` training steps."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = weakref.proxy(trainer)  # the trainer holds this callback: no cycle back
        cfg = trainer.config
        self.every = cfg.eval_steps if cfg.eval_strategy == "steps" else None
        if self.every is None:
            self.on_batch_end = None  # evaluation at epoch ends only: no per-step hook

    def on_batch_end(self, state: State) -> None:
        if self.every is not None and state.global_step % self.every == 0:
            self.trainer.evaluate()

    def on_epoch_end(self, state: State) -> None:
        if self.every is None:
            self.trainer.evaluate()


class _TrainerStages:
    """Calls the trainer's ``on_epoch_end`` and ``on_checkpoint`` stages at their events."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = weakref.proxy(trainer)  # the trainer holds this callback: no cycle back

    def on_epoch_end(self, state: State) -> None:
        self.trainer.on_epoch_end(state)

    def on_checkpoint(self, state: State) -> None:
        self.trainer.on_checkpoint(state)
