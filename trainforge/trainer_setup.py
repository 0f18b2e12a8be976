"""Building what a Trainer runs, once (``Trainer.setup``): the model on its device (wrapped, compiled,
EMA), the loaders, optimizer and schedule, the metrics, and the train and eval recipes with the
Trainer's own callbacks and the user's composed in a fixed order."""

from __future__ import annotations

import os
import sys
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from .callbacks import EpochMetricAvg, Optimizer, StdoutLogger
from .callbacks.checkpoint import ModelCheckpoint
from .callbacks.early_stopping import EarlyStopping
from .config_check import FirstBatchCheck
from .data import ResumableLoader
from .engine import Recipe
from .errors import ConfigError
from .loggers import Throughput
from .trainer_hooks import (
    _EvalBatchEvents,
    _Evaluation,
    _FaultInjection,
    _is_logger,
    _LogWriter,
    _metric_specs,
    _NonFiniteGuard,
    _Preemption,
    _TrainerStages,
    _TrainMetrics,
)
from .trainer_run import open_loggers
from .trainer_utils import DictBatches, NoOptimizer, batch_size_of, weak_method

if TYPE_CHECKING:
    from .trainer import Trainer


def prepare_model(trainer: Trainer) -> None:
    """The model on the runtime's device (channels_last, frozen batch norm), wrapped for DDP and compiled
    when asked (``trainer._model_fn``), and its EMA copy."""
    cfg, model = trainer.config, trainer.model
    trainer._freeze_bn = None
    if cfg.freeze_batchnorm:
        from .callbacks.freezing import FreezeBatchNorm

        trainer._freeze_bn = FreezeBatchNorm(model)  # eval mode + no grad, re-applied before each batch
    model.to(trainer.runtime.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    trainer._model_fn = trainer.runtime.wrap_model(model)
    if cfg.compile:
        trainer._model_fn = torch.compile(trainer._model_fn)
    if cfg.ema_decay is not None:
        from .callbacks.ema import EMA

        trainer.ema = EMA(model, decay=cfg.ema_decay)


def make_loader(trainer: Trainer, data: Any, train: bool) -> Any:
    """A ``ResumableLoader`` over a data set (sharded per rank, shuffled for training); a user's loader
    keeps its own order, its tuples made dicts."""
    if isinstance(data, DataLoader) or (not isinstance(data, Dataset) and hasattr(data, "__iter__")):
        return DictBatches(data)  # a user's loader: its own order; tuples become dicts per batch
    if not isinstance(data, Dataset):
        raise ConfigError(f"data must be a Dataset or a DataLoader, got {type(data).__name__}")
    cfg, rt = trainer.config, trainer.runtime
    return ResumableLoader(
        data,
        batch_size=cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size),
        shuffle=train,
        drop_last=cfg.drop_last and train,
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory and rt.device.type == "cuda",
        persistent_workers=cfg.persistent_workers,
        timeout=cfg.data_timeout,
        rank=rt.rank,
        world_size=rt.world_size,
        pad_to_equal=train,
        sampler=getattr(data, "sampler", None) if train else None,  # e.g. a class-balanced order
    )


def make_eval_loaders(trainer: Trainer, data: Any) -> dict[str | None, Any]:
    """Evaluation loaders by name: the first (or only) one is ``None``, the others their dict key."""
    if data is None:
        return {}
    if isinstance(data, Mapping):
        items = list(data.items())
        return {(None if i == 0 else str(k)): make_loader(trainer, v, train=False) for i, (k, v) in enumerate(items)}
    return {None: make_loader(trainer, data, train=False)}


def build_optimization(trainer: Trainer) -> None:
    """The optimizer and schedule the config names, where none were passed in."""
    cfg = trainer.config
    from .optim import build_optimizer, build_scheduler, count_optimizer_steps, has_learning_rate

    if trainer.optimizer is None:
        trainer.optimizer = build_optimizer(
            cfg.optimizer, trainer.model, lr=cfg.lr, weight_decay=cfg.weight_decay, **cfg.optimizer_params
        )
    if trainer.scheduler is None and cfg.scheduler is not None and not has_learning_rate(trainer.optimizer):
        warnings.warn(
            f"{type(trainer.optimizer).__name__} has no 'lr' in its param groups (defaults={{}}), so the "
            f"schedule {cfg.scheduler!r} cannot change it: training without a schedule (scheduler=None "
            "silences this)", UserWarning, stacklevel=3,
        )
    elif trainer.scheduler is None and cfg.scheduler is not None:
        epochs_steps = count_optimizer_steps(len(trainer.train_loader), cfg.max_epochs, cfg.accumulate_grad_batches)
        if cfg.scheduler_interval == "epoch":
            epochs_steps = cfg.max_epochs
        trainer.scheduler = build_scheduler(
            cfg.scheduler,
            trainer.optimizer,
            total_steps=epochs_steps,
            warmup_steps=cfg.warmup_steps,
            warmup_ratio=cfg.warmup_ratio,
            **cfg.scheduler_params,
        )


def build_recipes(trainer: Trainer) -> None:
    """The eval recipe (loss averages, eval batch events) and the train recipe with every callback in its
    fixed order: prologue (freezing, first-batch check, guard, optimizer, EMA, averages, metrics,
    evaluation, stages), the user's, the defaults (early stopping, checkpoints, logs), preemption."""
    cfg = trainer.config
    trainer._eval_phase, trainer._eval_loader_name = "VALID", None
    trainer._last_non_scalars: dict[str, Any] = {}
    trainer._eval_recipe = Recipe(weak_method(trainer, "evaluate_step"), [])
    trainer._eval_recipe.device = None if trainer.runtime.device.type == "cpu" else trainer.runtime.device
    # optional: an evaluation that computes no loss (detectors in eval mode) logs none, not NaN
    trainer._eval_loss_avg = EpochMetricAvg("loss", post_each_batch=False, weight="num_samples", optional=True)
    trainer._eval_recipe.callbacks.add(trainer._eval_loss_avg)
    # a joint loss's terms: train/loss/<tag>, valid/loss/<tag> (per-sample means, like the loss)
    tags = getattr(trainer.criterion, "tags", None) if getattr(type(trainer.criterion), "takes_dicts", False) else None
    tags = [str(tag) for tag in tags] if isinstance(tags, (list, tuple)) else []
    trainer._eval_term_avgs = {tag: EpochMetricAvg(f"loss/{tag}", post_each_batch=False, weight="num_samples",
                                                      optional=True)
                               for tag in tags}
    for average in trainer._eval_term_avgs.values():
        trainer._eval_recipe.callbacks.add(average)
    trainer._eval_recipe.callbacks.add(_EvalBatchEvents(trainer))

    trainer.recipe = recipe = Recipe(
        weak_method(trainer, "train_step"),
        trainer.train_loader if trainer.train_loader is not None else [],
        batch_size_fn=batch_size_of,
    )
    trainer._batches_per_epoch = len(trainer.train_loader) if trainer.train_loader is not None else 0
    # batches come from our loaders on the host; moving them is only needed for an accelerator
    recipe.device = None if trainer.runtime.device.type == "cpu" else trainer.runtime.device
    recipe.state.extra["save_state"] = weak_method(trainer, "_checkpoint_state")
    recipe.register("model", trainer.model)
    trainer._guard = _NonFiniteGuard(cfg.non_finite, trainer.runtime.device.type)
    if trainer.train_loader is not None:
        build_optimization(trainer)
    trainer._optimizer_cb = Optimizer(
        trainer.optimizer if trainer.optimizer is not None else NoOptimizer(),
        accumulation=cfg.accumulate_grad_batches,
        clip_grad_norm=cfg.gradient_clip_val,
        clip_algorithm=cfg.gradient_clip_algorithm,
        scheduler=trainer.scheduler,
        scheduler_interval=cfg.scheduler_interval,
        scaler=trainer.runtime.scaler,
    )
    early = [c for c in trainer.callbacks if getattr(c, "group", None) == "prologue"]
    for callback in early:  # e.g. FreezeUnfreeze: its state must load before the optimizer's
        recipe.callbacks.add(callback)
    if trainer._freeze_bn is not None:
        recipe.callbacks.add(trainer._freeze_bn, "prologue")
    if trainer.train_loader is not None:  # the model, labels and loss against the first batch, once
        recipe.callbacks.add(FirstBatchCheck(trainer), "prologue")
    recipe.callbacks.add(trainer._guard, "prologue")
    recipe.callbacks.add(trainer._optimizer_cb, "prologue")
    if trainer.ema is not None:
        recipe.callbacks.add(trainer.ema, "prologue")
    recipe.callbacks.add(EpochMetricAvg("loss", alias="train/loss", weight="num_samples"), "prologue")
    for tag in trainer._eval_term_avgs:
        recipe.callbacks.add(EpochMetricAvg(f"loss/{tag}", alias=f"train/loss/{tag}", weight="num_samples"),
                             "prologue")
    recipe.callbacks.add(_TrainMetrics(trainer, trainer._last_non_scalars), "prologue")
    recipe.callbacks.add(Throughput(log_every=cfg.log_every_n_steps), "prologue")
    if cfg.eval_strategy != "no" and trainer._eval_loaders:
        recipe.callbacks.add(_Evaluation(trainer), "prologue")
    recipe.callbacks.add(_TrainerStages(trainer), "prologue")
    for callback in trainer.callbacks:  # loggers are called by _LogWriter, not as recipe callbacks
        if not any(callback is c for c in early) and not _is_logger(callback):
            recipe.callbacks.add(callback)
    for callback in default_callbacks(trainer):  # early stopping joins the middle: before any checkpoint
        recipe.callbacks.add(callback, getattr(callback, "group", "epilogue"))
    trainer._preemption = _Preemption(trainer)
    recipe.callbacks.add(trainer._preemption, "epilogue")
    fault = os.environ.get("TRAINFORGE_FAULT", "")
    if fault.startswith(("kill_after_step:", "kill_after_epoch:", "sigterm_after_step:", "sigint_after_step:")):
        recipe.callbacks.add(_FaultInjection(fault), "epilogue")  # tests only: deterministic kill points


def default_callbacks(trainer: Trainer) -> list[Any]:
    """Early stopping, the checkpoint policy (the user's ``ModelCheckpoint`` or ``config.checkpoint``),
    skipped-file counts, the log writer and the console output; opens the loggers."""
    from .loggers import ConsoleLogger

    cfg = trainer.config
    callbacks: list[Any] = []
    if cfg.early_stopping:
        callbacks.append(EarlyStopping(**cfg.early_stopping))
    user_checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if user_checkpoint is not None:  # the user's policy replaces config.checkpoint, never adds a second
        if user_checkpoint.dirpath is None:
            user_checkpoint.dirpath = trainer.run_dir / "checkpoints"
        trainer.checkpoint_callback = user_checkpoint
    elif cfg.checkpoint is not None:
        trainer.checkpoint_callback = ModelCheckpoint(trainer.run_dir / "checkpoints", **cfg.checkpoint)
        callbacks.append(trainer.checkpoint_callback)
    main = trainer.runtime.is_main  # only rank 0 writes files and prints
    open_loggers(trainer)
    if getattr(trainer.train_loader, "tracks_skips", False):  # on_bad_file="skip": counts into the logs
        from .data.loaders import SkippedFilesLog

        callbacks.append(SkippedFilesLog(trainer.train_loader, trainer.run_dir if main else None))
    callbacks.append(_LogWriter(trainer, _eval_phase_of(trainer)))
    if cfg.print_steps is not None:
        callbacks.append(ConsoleLogger(print_steps=cfg.print_steps, enabled=main))
    elif cfg.progress_bar and sys.stdout.isatty():
        callbacks.append(ConsoleLogger(enabled=main))  # a live bar per epoch
    elif cfg.progress_bar:  # a log file or a pipe: lines at the logging cadence read better than a bar
        callbacks.append(ConsoleLogger(print_steps=cfg.log_every_n_steps, enabled=main))
    else:
        callbacks.append(StdoutLogger(log_every=-1))
    return callbacks


def check_class_names(trainer: Trainer, count: int | None) -> None:
    """A list of class names must have one name per model output."""
    names = trainer.class_names
    if names is None or count is None or len(names) == count:
        return
    raise ConfigError(
        f"class_names has {len(names)} names (from {trainer._class_names_source or 'trainer.class_names'}) "
        f"but the model outputs {count} classes; pass class_names with {count} names, or change the "
        "model's number of outputs"
    )


def build_metrics(trainer: Trainer, outputs: dict[str, Any]) -> Any:
    """The ``MetricsManager`` of ``config.metrics``, its class count read from the first outputs."""
    from .metrics import MetricsManager

    output = outputs.get("output")
    num_classes = None
    if isinstance(output, torch.Tensor) and output.dim() >= 2:  # (N, C) scores or (N, C, H, W) maps
        num_classes = int(output.shape[1] if output.dim() == 4 else output.shape[-1])
    check_class_names(trainer, num_classes)
    manager = MetricsManager(_metric_specs(trainer.config.metrics), num_classes=num_classes)
    return manager.to(trainer.runtime.device)


def _eval_phase_of(trainer: Trainer) -> Callable[[], str]:
    """The phase of the trainer's current (or last) evaluation, read through a weak reference: the
    trainer holds the callback this is given to."""
    ref = weakref.ref(trainer)
    return lambda: ref()._eval_phase
