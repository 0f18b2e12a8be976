"""``Classification`` (TrainAndTest plus loss, accuracy, confusion matrix, best / worst / most-confused
samples and input gradients) and ``CrossEntropyClassification`` (the step functions, optimizer, LR schedule
and mixed precision built in), as in Torchélie — compositions of the same engine and callbacks."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..callbacks import EpochMetricAvg, Optimizer
from ..engine import State
from ..errors import ConfigError
from .train_and_test import StepFn, TrainAndTest

OPTIMIZERS = ("AdamW", "SGD")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(input, target)`` of a batch: a tuple/list ``(x, y, ...)`` or a dict with ``input``/``target``.

    >>> split_batch((1, 2)), split_batch({"input": 1, "target": 2, "index": 0})
    ((1, 2), (1, 2))
    """
    if isinstance(batch, dict):
        try:
            return batch["input"], batch["target"]
        except KeyError:
            raise ConfigError(f"a classification batch needs 'input' and 'target', got keys {sorted(batch)}") from None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ConfigError(
        f"a classification batch is (input, target) or {{'input', 'target'}}, got {type(batch).__name__}"
    )


def _pred(state: State, who: str) -> torch.Tensor:
    pred = state.outputs.get("pred")
    if not isinstance(pred, torch.Tensor) or pred.dim() != 2:
        raise ConfigError(
            f"Classification: the {who} step function must return {{'loss': loss, 'pred': logits}} with pred "
            f"shaped (batch, classes); it returned {sorted(state.outputs)}"
        )
    return pred


class Accuracy:
    """The epoch's accuracy from the step's ``pred`` and the batch's target, counted on the device (no host
    sync per batch); posted at epoch end (and as a running value every batch with ``post_each_batch``)."""

    def __init__(self, name: str = "accuracy", who: str = "training") -> None:
        self.name, self.who = name, who
        self.correct: torch.Tensor | None = None
        self.count = 0

    def on_epoch_start(self, state: State) -> None:
        if state.epoch_step == 0:
            self.correct, self.count = None, 0

    def on_batch_end(self, state: State) -> None:
        pred = _pred(state, self.who)
        _, target = split_batch(state.batch)
        hits = (pred.detach().argmax(1) == target).sum()
        self.correct = hits if self.correct is None else self.correct + hits
        self.count += int(target.shape[0])

    def on_epoch_end(self, state: State) -> None:
        if self.count:
            state.metrics[self.name] = self.correct.item() / self.count  # host sync: once per epoch

    def state_dict(self) -> dict[str, Any]:
        return {"correct": None if self.correct is None else self.correct.cpu(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.correct, self.count = state["correct"], int(state["count"])


class ClassificationInspector:
    """On the test loop: the confusion matrix, and the ``keep`` best, worst and most-confused samples of the
    test pass (by true-class probability; confused = least confident), selected on the device per batch.

    At the end of each test pass it posts ``confusion_matrix`` (``K x K`` int64, rows true class), image
    grids ``best``, ``worst``, ``confused`` (for the loggers' ``log_images``) and ``input_gradients``: the
    magnitude of d(true-class logit)/d(input) of the worst samples, where the model looks. With a run
    folder, the samples and matrix are written for the HTML report (``trainforge report RUN``)."""

    def __init__(self, model: nn.Module, classes: Sequence[str], keep: int = 16, run_dir: Path | None = None) -> None:
        self.model, self.classes, self.keep, self.run_dir = model, list(classes), keep, run_dir
        self._reset()

    def _reset(self) -> None:
        self.confusion: torch.Tensor | None = None
        self.kept: dict[str, dict[str, torch.Tensor]] = {}

    def on_epoch_start(self, state: State) -> None:
        self._reset()

    def on_batch_end(self, state: State) -> None:
        pred = _pred(state, "test").detach().float()
        x, y = split_batch(state.batch)
        k = len(self.classes)
        if pred.shape[1] != k:
            raise ConfigError(f"Classification: pred has {pred.shape[1]} classes but classes lists {k}")
        probs = pred.softmax(1)
        counts = torch.bincount(y * k + probs.argmax(1), minlength=k * k).reshape(k, k)
        self.confusion = counts if self.confusion is None else self.confusion + counts
        true = probs.gather(1, y[:, None])[:, 0]
        scores = {"best": true, "worst": -true, "confused": -probs.amax(1)}
        images = x if isinstance(x, torch.Tensor) and x.dim() == 4 else None
        for group, score in scores.items():
            new = {"score": score, "target": y, "probs": probs}
            if images is not None:
                new["images"] = images
            old = self.kept.get(group)
            merged = new if old is None else {name: torch.cat([old[name], new[name]]) for name in new}
            top = merged["score"].topk(min(self.keep, len(merged["score"]))).indices
            self.kept[group] = {name: value[top] for name, value in merged.items()}

    def on_epoch_end(self, state: State) -> None:
        if self.confusion is None:
            return
        state.metrics["confusion_matrix"] = self.confusion.cpu()
        for group, kept in self.kept.items():
            if "images" in kept:
                state.metrics[group] = _display(kept["images"])
        worst = self.kept.get("worst", {})
        if "images" in worst:
            state.metrics["input_gradients"] = self._input_gradients(worst["images"], worst["target"])
        if self.run_dir is not None:
            self._save_report_data()

    def _input_gradients(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():  # the test loop runs without gradients
            x = images.detach().clone().requires_grad_(True)
            logits = self.model(x)
            (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)  # no parameter .grad touched
        return _display(grad.abs())

    def _save_report_data(self) -> None:
        from ..loggers.base import is_main_process
        from ..report.data import save_classification_data

        if not is_main_process():
            return
        groups = [g for g in self.kept.values() if "images" in g]
        images = torch.cat([g["images"] for g in groups]) if groups else None
        targets = torch.cat([g["target"] for g in self.kept.values()])
        probs = torch.cat([g["probs"] for g in self.kept.values()])
        save_classification_data(self.run_dir, None if images is None else _display(images), targets, probs,
                                 self.classes, self.confusion)


def _display(images: torch.Tensor) -> torch.Tensor:
    """Each image scaled to [0, 1] for display, on the CPU."""
    images = images.detach().float().cpu()
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-8)


class Classification(TrainAndTest):
    """``TrainAndTest`` for classifiers: both step functions return ``{"loss": loss, "pred": logits}``, and
    the recipe logs loss and accuracy (train and test), the confusion matrix, image grids of the best,
    worst and most-confused test samples, and input gradients (see ``ClassificationInspector``). With
    ``checkpoint`` (a run folder) the best checkpoint is kept by ``key_best`` (default test accuracy) and
    the run's HTML report is written at the end. Add the optimizer yourself
    (``recipe.callbacks.add_callbacks([Optimizer(opt)])``), or use ``CrossEntropyClassification``.
    """

    def __init__(
        self,
        model: nn.Module,
        train_fn: StepFn,
        test_fn: StepFn,
        train_loader: Iterable[Any],
        test_loader: Iterable[Any],
        classes: Sequence[str],
        test_every: int | None = None,
        log_every: int = 10,
        checkpoint: str | os.PathLike[str] | None = None,
        key_best: str | None = "test/accuracy",
    ) -> None:
        if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) < 2:
            raise ConfigError(f"classes must be a list of at least 2 class names, got {classes!r:.80}")
        super().__init__(model, train_fn, test_fn, train_loader, test_loader, test_every=test_every,
                         log_every=log_every, checkpoint=checkpoint,
                         key_best=key_best if checkpoint is not None else None, best_mode="max")
        self.classes = list(classes)
        self.callbacks.add_callbacks([EpochMetricAvg("loss"), Accuracy()], "prologue")
        self.inspector = ClassificationInspector(model, self.classes, run_dir=self.run_dir)
        self.test_loop.callbacks.add_callbacks(
            [EpochMetricAvg("loss", post_each_batch=False), Accuracy(who="test"), self.inspector]
        )
        if self.run_dir is not None:
            self.callbacks.add(_Report(self.run_dir), "epilogue")


class _Report:
    """Write the run's HTML report at the end of ``run`` (a failure only warns: the run is kept)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_fit_end(self, state: State) -> None:
        import warnings

        from ..loggers.base import is_main_process

        if state.exception is not None or not is_main_process():
            return
        for callback in state.owner.callbacks:
            flush = getattr(callback, "flush", None)
            if callable(flush):
                flush()
        try:
            from ..report import build_report

            build_report(self.run_dir)
        except Exception as error:
            warnings.warn(f"the run report failed ({error!r}); retry with: trainforge report {self.run_dir}",
                          stacklevel=2)


class _Schedule:
    """Warmup then cosine decay over the whole run, sized when ``run(epochs)`` starts (Torchélie's recipes
    take the length up front; here ``run(n)`` decides it). The fraction of the run done is the state."""

    group = "prologue"

    def __init__(self, batches_per_epoch: int, warmup: float = 0.05) -> None:
        self.batches_per_epoch, self.warmup = batches_per_epoch, warmup
        self.total = 1
        self.scheduler: Any = None

    def on_fit_start(self, state: State) -> None:
        self.total = max(1, state.max_epochs * self.batches_per_epoch)
        scheduler = self.scheduler  # the current step's rate, now that the length is known
        for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * self.factor(scheduler.last_epoch)

    def factor(self, step: int) -> float:
        warm = max(1, int(self.warmup * self.total))
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, self.total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class CrossEntropyClassification(Classification):
    """A ``Classification`` recipe with everything built in: cross-entropy train and test steps, the
    optimizer (``"AdamW"`` with ``weight_decay``, or ``"SGD"`` with Nesterov momentum), a warmup + cosine
    LR schedule over the epochs ``run(n)`` asks for, and mixed precision (``"16-mixed"`` uses a
    GradScaler, so fp16 gradients do not underflow; ``"bf16-mixed"`` needs none).

    Five lines train a classifier::

        recipe = CrossEntropyClassification(model, train_loader, test_loader, classes)
        recipe.to("cuda")
        recipe.run(5)
    """

    def __init__(
        self,
        model: nn.Module,
        train_loader: Iterable[Any],
        test_loader: Iterable[Any],
        classes: Sequence[str],
        lr: float = 3e-3,
        optimizer: str = "AdamW",
        weight_decay: float = 0.05,
        precision: str = "32",
        **recipe_options: Any,
    ) -> None:
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision={precision!r}; expected one of {', '.join(PRECISIONS)}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ConfigError(f"lr must be a positive number, got {lr!r}")
        self.precision = precision
        self.autocast_dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
        self.scaler = None
        if precision == "16-mixed":
            self.scaler = torch.amp.GradScaler("cuda" if torch.cuda.is_available() else "cpu")
        super().__init__(model, self._train_step, self._test_step, train_loader, test_loader, classes,
                         **recipe_options)
        self.network = model  # a plain attribute: no registry lookup per step
        params = [p for p in model.parameters() if p.requires_grad]
        if optimizer == "SGD":
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        self.schedule = _Schedule(len(train_loader))  # type: ignore[arg-type]
        scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule.factor)
        self.schedule.scheduler = scheduler
        self.callbacks.add(self.schedule, "prologue")
        self.callbacks.add(Optimizer(self.optimizer, scheduler=scheduler, scaler=self.scaler), "prologue")

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.network
        if self.autocast_dtype is None:
            pred = model(x)
        else:
            with torch.autocast(x.device.type, dtype=self.autocast_dtype):
                pred = model(x)
        return pred, nn.functional.cross_entropy(pred.float(), y)

    def _train_step(self, batch: Any) -> dict[str, Any]:
        x, y = split_batch(batch)
        pred, loss = self._forward(x, y)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return {"loss": loss.detach(), "pred": pred.detach()}

    def _test_step(self, batch: Any) -> dict[str, Any]:
        x, y = split_batch(batch)
        pred, loss = self._forward(x, y)
        return {"loss": loss, "pred": pred}
