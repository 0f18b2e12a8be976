"""Experiment config -> Python objects through the registries: the model, the joint loss, data sets, the
optimizers (each over the modules it names) and their schedules, callbacks, and the task trainer — the same
objects a user could build by hand. ``check_experiment`` does every check that needs no data first."""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, RegistryError
from ..registry import check_params, get_registry
from .schema import (
    Component,
    DataPair,
    ExperimentConfig,
    MetricSection,
    OptimizationPair,
    SchedulerSection,
)

#: Keys of ``task.params`` that build the model (``trainforge.models.build_model``'s arguments).
MODEL_KEYS = (
    "backbone_name", "backbone_params", "neck_name", "neck_params", "pooling_name", "pooling_params",
    "head_name", "head_params", "num_classes", "in_channels",
)
#: ``task.params`` keys TorchOk reads elsewhere (ONNX input shapes): accepted, not passed to the model.
TASK_EXTRA_KEYS = ("inputs",)
#: Arguments of the Trainer's constructor: what the build supplies, never ``task.params``.
_TRAINER_ARGS = ("model", "config", "train_data", "valid_data", "criterion", "optimizer", "scheduler", "callbacks")
_PRECISION = {32: "32", "32": "32", 16: "16-mixed", "16": "16-mixed", "16-mixed": "16-mixed",
              "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed"}
_NAMED_SCHEDULES = ("constant", "linear", "cosine", "polynomial")
#: TorchOk / Lightning callbacks that trainforge does differently: name -> (what happens, replacement or None).
CALLBACK_ALIASES: dict[str, tuple[str, str | None]] = {
    "FinalizeLogger": ("not needed: trainforge's loggers close themselves at the end of fit", None),
    "TQDMProgressBar": ("not needed: trainforge draws its own progress bar (trainer.progress_bar)", None),
    "LearningRateMonitor": ("not needed: the learning rate is logged as lr at every logging step", None),
}
#: Callback keys TorchOk/Lightning take that trainforge decides itself: key -> why it is ignored.
IGNORED_CALLBACK_KEYS = {
    "dirpath": "checkpoints always go to <run folder>/checkpoints",
    "save_weights_only": "checkpoints always hold the full training state; export weights with export_weights",
    "verbose": "trainforge always reports saved checkpoints",
}
FREEZE_ENTRY_KEYS = ("module_name", "epoch", "stages", "module_class", "bn_requires_grad", "bn_track_running_stats")


@dataclass
class Experiment:
    """What ``build_experiment`` made: the trainer ready to ``fit``, and the data of every phase."""

    config: ExperimentConfig
    trainer: Any
    data: dict[str, Any] = field(default_factory=dict)  # phase -> a Dataset, or {name: Dataset}
    notes: list[str] = field(default_factory=list)
    #: VALID / TEST -> what to evaluate: the data sets, with each one whose dataloader settings differ from
    #: the trainer's evaluation settings as a loader of its own (batch_size, num_workers, ...)
    eval_data: dict[str, Any] = field(default_factory=dict)


# -- the checks before any data is read ----------------------------------------------------------------
def check_experiment(cfg: ExperimentConfig, mode: str | None = None, notes: list[str] | None = None) -> list[str]:
    """Every check that needs neither data nor a model: required sections for ``mode``, component names in
    their registries, parameters against signatures, loss and metric mappings, scheduler monitors.
    Returns notes about accepted aliases and ignored keys (also printed when the experiment is built)."""
    notes = [] if notes is None else notes
    mode = mode or cfg.mode
    _check_sections(cfg, mode)
    _check_task(cfg)
    for phase in ("TRAIN", "VALID", "TEST", "PREDICT"):
        for i, pair in enumerate(getattr(cfg.data, phase) or []):
            _check_data_pair(pair, f"data.{phase}[{i}]", notes)
    if cfg.joint_loss is not None:
        _build_joint_loss(cfg)  # checks names, params, tags and mapping argument names; cheap
    metric_names = _check_metrics(cfg, notes)
    _rename_monitors(cfg, notes)
    _check_eval_loss_monitors(cfg)
    for i, pair in enumerate(cfg.optimization):
        _check_optimization(pair, i, metric_names)
    for i, callback in enumerate(cfg.callbacks):
        _check_callback(callback, i, metric_names, notes)
    if cfg.logger is not None:
        _check_logger(cfg, notes)
    if cfg.trainer.strategy is not None:
        notes.append(f"trainer.strategy={cfg.trainer.strategy!r} is ignored: launch with torchrun for several "
                     "processes; the same command runs on each")
    if cfg.trainer.num_sanity_val_steps:
        notes.append("trainer.num_sanity_val_steps is ignored: trainforge runs no sanity validation")
    if cfg.hydra:
        notes.append("hydra.* settings from the file are passed to Hydra, except run.dir/sweep.dir (run folders)")
    return notes


def _check_sections(cfg: ExperimentConfig, mode: str) -> None:
    if mode == "train":
        if not cfg.data.TRAIN:
            raise ConfigError("data.TRAIN is required to train: [{dataset: {name, params}, dataloader: {batch_size}}]")
        if len(cfg.data.TRAIN) > 1:
            raise ConfigError(f"data.TRAIN has {len(cfg.data.TRAIN)} pairs; training takes one (merge the data sets)")
        if cfg.joint_loss is None and not _has_default_loss(cfg.task.name):
            raise ConfigError("joint_loss is required to train: joint_loss: {losses: [{name: CrossEntropyLoss}]}")
        if not cfg.optimization:
            raise ConfigError("optimization is required to train: [{optimizer: {name: Adam, params: {lr: 0.001}}}]")
    elif mode == "test" and not cfg.data.TEST:
        raise ConfigError("data.TEST is required for trainforge test (or +mode=test): a list of dataset pairs")
    elif mode == "predict" and not cfg.data.PREDICT:
        raise ConfigError("data.PREDICT is required for trainforge predict (or +mode=predict)")
    if cfg.seed_params is not None and cfg.task.seed_params is not None:
        raise ConfigError("seed_params is given twice (top level and task.seed_params); keep one")


def _has_default_loss(task: str) -> bool:
    """True for a task trainer that brings its own loss (metric learning's margin heads, segmentation)."""
    try:
        return getattr(task_class(task), "default_loss", None) is not None
    except RegistryError:
        return False


def task_class(name: str) -> type:
    """The task trainer registered as ``name`` (``ClassificationTask``...); ``Trainer`` is the plain one."""
    if name == "Trainer":
        from ..trainer import Trainer

        return Trainer
    return get_registry("tasks").get(name)


def _task_keywords(cls: type) -> list[str]:
    signature = inspect.signature(cls)
    return [p.name for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _TRAINER_ARGS]


def _check_task(cfg: ExperimentConfig) -> None:
    cls = _wrap_registry_error("task.name", lambda: task_class(cfg.task.name))
    accepted = [*MODEL_KEYS, *TASK_EXTRA_KEYS, *_task_keywords(cls)]
    if "input_size" in cfg.task.params and "input_size" not in accepted:
        raise ConfigError("task.params.input_size is TorchOk's old name: write inputs: [{shape: [C, H, W], "
                          "dtype: float32}]")
    _check_keys(cfg.task.params, accepted, "task.params")
    if hasattr(cls, "config_problems"):  # a task that checks its own params (ONNXTask: the file, its names)
        problems = cls.config_problems(cfg)
        if problems:
            raise ConfigError("; ".join(problems))
        return
    for part in ("backbone", "neck", "pooling", "head"):
        name = cfg.task.params.get(f"{part}_name")
        params = cfg.task.params.get(f"{part}_params")
        if params is not None and not isinstance(params, Mapping):
            raise ConfigError(f"task.params.{part}_params must be a mapping, got {type(params).__name__}")
        if name is None:
            if params:
                raise ConfigError(f"task.params.{part}_params is given without task.params.{part}_name")
            continue
        registry = get_registry(_PART_REGISTRIES[part])
        target = _wrap_registry_error(f"task.params.{part}_name", lambda r=registry, n=name: r.get(n))
        if params and part != "backbone":  # a backbone's params go to the library (timm) that checks them
            _check_signature(target, dict(params), f"task.params.{part}_params", skip=("in_channels",))
    if cfg.task.load_checkpoint is not None:
        from ..pretrained import check_load_checkpoint_options

        check_load_checkpoint_options(_load_checkpoint_options(cfg.task.load_checkpoint), "task.load_checkpoint")


def _load_checkpoint_options(options: dict[str, Any]) -> dict[str, Any]:
    from ..pretrained import TORCHOK_NAMES

    return {TORCHOK_NAMES.get(k, k): v for k, v in options.items()}


def _check_data_pair(pair: DataPair, where: str, notes: list[str]) -> None:
    cls = _wrap_registry_error(f"{where}.dataset.name", lambda: dataset_class(pair.dataset.name))
    params = dataset_params(cls, pair.dataset.params, f"{where}.dataset.params", notes)
    _check_signature(cls, params, f"{where}.dataset.params", skip=("transform", "augment"))
    for key in ("transform", "augment"):
        for j, item in enumerate(getattr(pair.dataset, key)):
            _check_transform(item, f"{where}.dataset.{key}[{j}]")
    if pair.sampler is not None:
        sampler = _wrap_registry_error(f"{where}.sampler.name", lambda: get_registry("samplers").get(pair.sampler.name))
        _check_signature(sampler, pair.sampler.params, f"{where}.sampler.params", skip=("dataset", "data_source"))
    loader = pair.dataloader
    for key in ("batch_size",):
        if getattr(loader, key) < 1:
            raise ConfigError(f"{where}.dataloader.{key} must be >= 1, got {getattr(loader, key)}")
    if loader.num_workers < 0:
        raise ConfigError(f"{where}.dataloader.num_workers must be >= 0, got {loader.num_workers}")
    if pair.dataloader.drop_last and not where.startswith("data.TRAIN"):
        notes.append(f"{where}.dataloader.drop_last is ignored: evaluation never drops samples (the metrics cover "
                     "every sample)")
    if pair.limit is not None and pair.limit < 1:
        raise ConfigError(f"{where}.limit must be a positive number of samples, got {pair.limit}")


def _check_transform(item: Component, where: str) -> None:
    target = _wrap_registry_error(f"{where}.name", lambda: get_registry("transforms").get(item.name))
    params = dict(item.params)
    for key in ("transforms",):  # compositions (OneOf, Compose) hold a list of components
        if isinstance(params.get(key), list):
            for k, sub in enumerate(params[key]):
                from .schema import parse

                _check_transform(parse(Component, sub, f"{where}.params.{key}[{k}]"), f"{where}.params.{key}[{k}]")
            params.pop(key)
    _check_signature(target, params, f"{where}.params", skip=("transforms",))


def _check_metrics(cfg: ExperimentConfig, notes: list[str]) -> set[str]:
    """The metric names the run will log (``valid/accuracy``...), after checking each metric."""
    from ..metrics.build import snake_name
    from ..metrics.manager import normalize_phase

    names = {"train/loss", "valid/loss", "lr"}
    for i, metric in enumerate(cfg.metrics):
        where = f"metrics[{i}]"
        cls = _wrap_registry_error(f"{where}.name", lambda m=metric: get_registry("metrics").get(m.name))
        _check_signature(cls, metric.params, f"{where}.params")
        instance = _build_metric(cls, metric, _num_classes(cfg), where)
        if metric.mapping is not None:
            update = inspect.signature(type(instance).update).parameters
            if not any(p.kind is p.VAR_KEYWORD or p.kind is p.VAR_POSITIONAL for p in update.values()):
                _check_keys(metric.mapping, [p for p in update if p != "self"], f"{where}.mapping")
        phases = metric.phases or ["TRAIN", "VALID", "TEST"]
        for j, phase in enumerate(phases):
            try:
                normalize_phase(phase)
            except ConfigError:
                raise ConfigError(
                    f"{where}.phases[{j}]={phase!r} is not a phase; expected TRAIN, VALID, TEST or PREDICT"
                ) from None
        if metric.val_dataloader_idxs is not None:
            notes.append(f"{where}.val_dataloader_idxs is ignored: every metric runs on every VALID set")
        display = metric.tag or snake_name(metric.name)
        names.update(f"{p.lower()}/{display}" for p in phases)
    if not cfg.metrics and _has_own_metrics(cfg.task.name):
        names.add(TASK_METRICS)  # known once the task has its model: Trainer.setup checks monitors against them
    for pair in (cfg.data.VALID or [])[1:]:
        if pair.name:
            names.update(n.replace("valid/", f"valid_{pair.name}/") for n in list(names) if n.startswith("valid/"))
    return names


#: Stands for the metrics a task brings itself (ObjectDetectionTask's ``detection/map_50``...) in the set of
#: logged names: their names depend on the model, so a monitor of them is checked when the trainer sets up.
TASK_METRICS = "<the task's own metrics>"


def _has_own_metrics(task: str) -> bool:
    from ..tasks.base import Task

    try:
        cls = task_class(task)
    except RegistryError:
        return False
    return isinstance(cls, type) and issubclass(cls, Task) and cls.task_metrics is not Task.task_metrics


def _num_classes(cfg: ExperimentConfig) -> Any:
    """``task.params.num_classes``, else its head's (TorchOk's ArcFace configs), else what the task reads from
    its own params (ONNXTask: the file)."""
    count = cfg.task.params.get("num_classes")
    head = cfg.task.params.get("head_params")
    if count is None and isinstance(head, Mapping):
        count = head.get("num_classes")
    if count is None:
        reader = getattr(task_class(cfg.task.name), "num_classes_from_params", None)
        count = reader(cfg.task.params) if reader is not None else None
    return count


def _rename_monitors(cfg: ExperimentConfig, notes: list[str]) -> None:
    """TorchOk names logged metrics by class (``valid/F1Score``), trainforge in snake case (``valid/f1_score``):
    a monitor written TorchOk's way is read as ours, with a note."""
    from ..metrics.build import snake_name

    renames = {}
    for metric in cfg.metrics:
        for phase in ("train", "valid", "test"):
            renames[f"{phase}/{metric.name}"] = f"{phase}/{metric.tag or snake_name(metric.name)}"
    renames = {k: v for k, v in renames.items() if k != v}

    def rename(value: Any, where: str) -> Any:
        if isinstance(value, str) and value in renames:
            notes.append(f"{where}={value!r} is read as {renames[value]!r} (trainforge's metric names)")
            return renames[value]
        return value

    for i, callback in enumerate(cfg.callbacks):
        if "monitor" in callback.params:
            callback.params["monitor"] = rename(callback.params["monitor"], f"callbacks[{i}].params.monitor")
    for i, pair in enumerate(cfg.optimization):
        if pair.scheduler is not None:
            stepping = pair.scheduler.pl_params
            stepping.monitor = rename(stepping.monitor, f"optimization[{i}].scheduler.pl_params.monitor")


def _build_metric(cls: type, metric: MetricSection, num_classes: Any, where: str) -> Any:
    """One instance, to check the parameters (torchmetrics validates them when built) and to read the
    argument names of the concrete class's ``update`` (``Accuracy`` builds a ``MulticlassAccuracy``)."""
    from ..metrics.build import resolve_params

    try:
        return cls(**resolve_params(cls, dict(metric.params), num_classes if isinstance(num_classes, int) else None))
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.params: {metric.name} rejects them: {error}") from None


def _check_eval_loss_monitors(cfg: ExperimentConfig) -> None:
    """A task whose evaluation computes no loss at all (``ObjectDetectionTask.eval_loss_missing``, a class
    attribute) logs no ``valid/loss``: a scheduler or callback monitor of one is refused here, before a run
    folder exists, with the reason and the monitor to use."""
    from ..config_check import is_eval_loss

    try:
        why = getattr(task_class(cfg.task.name), "eval_loss_missing", None)
    except RegistryError:
        return  # _check_task names the unknown task
    if not isinstance(why, str):  # None, or a property: known once the trainer is built
        return
    monitors = [(f"optimization[{i}].scheduler.pl_params.monitor", pair.scheduler.pl_params.monitor)
                for i, pair in enumerate(cfg.optimization) if pair.scheduler is not None]
    monitors += [(f"callbacks[{i}].params.monitor", callback.params.get("monitor"))
                 for i, callback in enumerate(cfg.callbacks)]
    for where, monitor in monitors:
        if isinstance(monitor, str) and is_eval_loss(monitor):
            raise ConfigError(f"{where}={monitor!r} is not a metric this run logs ({cfg.task.name}): {why}")


def _check_monitor(monitor: str | None, names: set[str], where: str) -> None:
    if monitor is not None and not isinstance(monitor, str):
        raise ConfigError(f"{where}={monitor!r} must be a metric name such as valid/loss")
    if monitor is not None and TASK_METRICS in names and monitor.split("/")[0].split("_")[0] in ("valid", "test"):
        return  # one of the task's own metrics: checked against them when the trainer sets up
    if monitor is not None and monitor not in names:
        import difflib

        close = difflib.get_close_matches(monitor, sorted(names), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{where}={monitor!r} is not a metric this run logs{hint} (logged: "
            f"{', '.join(sorted(n for n in names if n != TASK_METRICS))})"
        )


def _check_optimization(pair: OptimizationPair, index: int, metric_names: set[str]) -> None:
    where = f"optimization[{index}]"
    cls = _wrap_registry_error(f"{where}.optimizer.name", lambda: get_registry("optimizers").get(pair.optimizer.name))
    params = dict(pair.optimizer.params)
    if "lr" not in params:
        raise ConfigError(
            f"{where}.optimizer.params.lr is required, e.g. optimizer: {{name: Adam, params: {{lr: 0.001}}}}"
        )
    lr = params["lr"]
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"{where}.optimizer.params.lr must be a positive number, got {params['lr']!r}")
    if pair.optimizer.name.lower() in _torch_optimizer_names():
        _check_signature(cls, params, f"{where}.optimizer.params", skip=("params",))
    for j, rule in enumerate(pair.param_groups):
        for key in ("lr_mult", "weight_decay_mult"):
            if getattr(rule, key) < 0:
                raise ConfigError(f"{where}.param_groups[{j}].{key} must be >= 0, got {getattr(rule, key)}")
    if pair.scheduler is not None:
        _check_scheduler(pair.scheduler, f"{where}.scheduler", metric_names)


def _torch_optimizer_names() -> set[str]:
    from ..optim.optimizers import _torch_optimizers

    return set(_torch_optimizers())


def _check_scheduler(section: SchedulerSection, where: str, metric_names: set[str]) -> None:
    from ..optim import build_scheduler, scheduler_needs_metric

    _wrap_registry_error(f"{where}.name", lambda: get_registry("schedulers").get(section.name))
    probe = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)  # builds it once: every argument checked
    try:
        scheduler = build_scheduler(section.name, probe, total_steps=100, **section.params)
    except ConfigError as error:
        raise ConfigError(f"{where}.params: {error}") from None
    stepping = section.pl_params
    if stepping.frequency < 1:
        raise ConfigError(f"{where}.pl_params.frequency must be >= 1, got {stepping.frequency}")
    if scheduler_needs_metric(scheduler):
        if stepping.monitor is None:
            raise ConfigError(f"{where}.pl_params.monitor is required by {section.name}, e.g. monitor: valid/loss")
        if stepping.interval == "step":
            raise ConfigError(f"{where}.pl_params.interval: {section.name} steps after evaluation; use epoch")
        _check_monitor(stepping.monitor, metric_names, f"{where}.pl_params.monitor")


def _check_callback(callback: Component, index: int, metric_names: set[str], notes: list[str]) -> None:
    where = f"callbacks[{index}]"
    name = callback.name
    if name in CALLBACK_ALIASES:
        what, replacement = CALLBACK_ALIASES[name]
        notes.append(f"{where}.name={name!r}: {what}")
        if replacement is None:
            return
        name = replacement
    cls = _wrap_registry_error(f"{where}.name", lambda: get_registry("callbacks").get(name))
    params = dict(callback.params)
    for key in list(params):
        if key in IGNORED_CALLBACK_KEYS:
            notes.append(f"{where}.params.{key} is ignored: {IGNORED_CALLBACK_KEYS[key]}")
            params.pop(key)
    if name == "FreezeUnfreeze" and "freeze_modules" in params:
        _check_keys(params, ["freeze_modules"], f"{where}.params")
        entries = params["freeze_modules"]
        if not isinstance(entries, list):
            raise ConfigError(f"{where}.params.freeze_modules must be a list of {{module_name, epoch, ...}}")
        for j, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or "module_name" not in entry:
                raise ConfigError(f"{where}.params.freeze_modules[{j}] needs module_name (\"\" for the whole model)")
            _check_keys(entry, FREEZE_ENTRY_KEYS, f"{where}.params.freeze_modules[{j}]")
        return
    _check_signature(cls, params, f"{where}.params", skip=("model", "optimizer", "dirpath", "scheduler"))
    for key in ("monitor",):
        if key in params:
            _check_monitor(params[key], metric_names, f"{where}.params.{key}")


def _check_logger(cfg: ExperimentConfig, notes: list[str]) -> None:
    logger = cfg.logger
    cls = _wrap_registry_error("logger.name", lambda: get_registry("loggers").get(logger.name))
    _check_signature(cls, logger.params, "logger.params", skip=("log_dir", "path", "enabled"))
    if logger.log_dir is not None:
        notes.append("logger.log_dir is ignored: run folders are runs/<experiment_name>/<timestamp> "
                     "(set hydra.run.dir=... on the command line to choose one)")
    if logger.timestamp is not None:
        notes.append("logger.timestamp is ignored: trainforge names run folders by time itself")


# -- building -----------------------------------------------------------------------------------------
def build_experiment(
    cfg: ExperimentConfig, run_dir: str | os.PathLike[str], mode: str | None = None, name: str = "experiment",
    notes: list[str] | None = None,
) -> Experiment:
    """Build the trainer of ``cfg`` writing into ``run_dir`` — after ``check_experiment``, so a broken
    config fails before any data is read.

    Objects are built in the order a user would: model (with forever-frozen parts), loss, optimizers over
    the modules each names, data sets, schedules sized by the training loader, callbacks, the task trainer.
    """
    mode = mode or cfg.mode
    notes = check_experiment(cfg, mode, list(notes or []))  # notes: e.g. TorchOk names read as ours
    if mode != "train" and cfg.resume_path is not None and cfg.task.load_checkpoint is None:
        notes.append(f"{mode} uses {evaluation_checkpoint(cfg.resume_path)[1]}")
    elif mode != "train" and cfg.task.load_checkpoint is None and "backbone_name" in cfg.task.params:
        pretrained = (cfg.task.params.get("backbone_params") or {}).get("pretrained")
        notes.append(f"{mode} uses the model as built from task.params ({'pretrained backbone, ' if pretrained else ''}"
                     "nothing trained loaded): pass +resume_path=<run folder> for a trained run's best checkpoint")
    for note in notes:
        print(f"trainforge: note: {note}", file=sys.stderr)
    seed = (cfg.seed_params or cfg.task.seed_params or _default_seed()).seed
    torch.manual_seed(seed)  # the model's initial weights follow the experiment's seed
    cls = task_class(cfg.task.name)
    model = cls.model_from_params(cfg.task.params) if hasattr(cls, "model_from_params") else build_model(cfg)
    forever = _freeze_entries(cfg, model)
    holder: dict[str, Any] = {}  # the first optimizer and schedule, built after the freezes below
    unfreezes = _scheduled_unfreezes(cfg, model, lambda: holder["optimizer"], lambda: holder.get("scheduler"))
    if unfreezes and forever:
        unfreezes.append(KeepFrozen(forever))
    criterion = _build_joint_loss(cfg) if cfg.joint_loss is not None else None
    training_config = to_training_config(cfg, run_dir, mode, name)
    data = {phase: _build_phase(cfg, phase) for phase in ("TRAIN", "VALID", "TEST", "PREDICT")
            if getattr(cfg.data, phase) and (phase != "TRAIN" or mode == "train")
            and (phase != "PREDICT" or mode == "predict")}  # test reads no PREDICT files (onnx_infer has both)
    eval_data = {phase: _own_loaders(cfg, phase, data[phase], training_config) for phase in ("VALID", "TEST")
                 if phase in data}
    optimizers: list[tuple[Any, Any, str]] = []
    extra_callbacks: list[Any] = []
    if mode == "train":
        from ..callbacks import Optimizer

        optimizers = _build_optimizers(cfg, model, data["TRAIN"], training_config)
        extra_callbacks += _plateau_callbacks(optimizers)
        # a metric-driven schedule steps in PlateauStep, never in the Optimizer callback
        optimizers = [(o, None if s is not None and _needs_metric(s) else s, i, p) for o, s, i, p in optimizers]
        for optimizer, scheduler, interval, _ in optimizers[1:]:  # the Trainer steps the first itself
            extra_callbacks.append(Optimizer(optimizer, accumulation=training_config.accumulate_grad_batches,
                                             clip_grad_norm=training_config.gradient_clip_val,
                                             clip_algorithm=training_config.gradient_clip_algorithm,
                                             scheduler=scheduler, scheduler_interval=interval))
    first = optimizers[0] if optimizers else (None, None, "step", None)
    training_config = dataclasses.replace(training_config, scheduler_interval=first[2])
    holder["optimizer"], holder["scheduler"] = first[0], first[1]
    if unfreezes and first[0] is None:
        unfreezes = []  # test / predict: nothing is trained, nothing to unfreeze
    callbacks = [*unfreezes, *_build_callbacks(cfg, model, first[0]), *extra_callbacks]
    if not cfg.task.compute_loss_on_valid and "compute_loss_on_valid" not in _task_keywords(cls) \
            and getattr(model, "takes_target", False):
        # TorchOk trains ArcFace representations with its ClassificationTask, validated by retrieval
        notes.append(f"task.name={cfg.task.name!r} with a margin head and compute_loss_on_valid=false is read as "
                     f"MarginLearnTask (validation metrics read its embeddings; no loss on held-out classes)")
        print(f"trainforge: note: {notes[-1]}", file=sys.stderr)
        cls = task_class("MarginLearnTask")
    task_kwargs = {k: v for k, v in cfg.task.params.items() if k in _task_keywords(cls)}
    if "compute_loss_on_valid" in _task_keywords(cls):
        task_kwargs.setdefault("compute_loss_on_valid", cfg.task.compute_loss_on_valid)
    elif not cfg.task.compute_loss_on_valid:
        raise ConfigError(f"task.compute_loss_on_valid=false is not supported by {cls.__name__}; remove it")
    trainer = cls(
        model, training_config, train_data=data.get("TRAIN"), valid_data=eval_data.get("VALID"), criterion=criterion,
        optimizer=first[0], scheduler=first[1], callbacks=callbacks, **task_kwargs,
    )
    classes = getattr(data.get("TRAIN") or data.get("VALID") or data.get("TEST"), "classes", None)
    if classes is not None:
        trainer.class_names = [str(c) for c in classes]
    return Experiment(cfg, trainer, data, notes, eval_data)


def _own_loaders(cfg: ExperimentConfig, phase: str, data: Any, tc: Any) -> Any:
    """``data`` of ``phase`` with each data set whose ``dataloader`` section differs from the trainer's
    evaluation settings (``eval_batch_size``: the first VALID set's; ``num_workers``...: the main phase's)
    replaced by a loader with its own settings, so every VALID / TEST set keeps its batch size."""
    from ..data import ResumableLoader

    pairs: list[DataPair] = getattr(cfg.data, phase)
    items = data if isinstance(data, dict) else {"only": data}
    device_is_gpu = tc.device != "cpu" and torch.cuda.is_available()
    out = {}
    for (name, dataset), pair in zip(items.items(), pairs):
        loader = pair.dataloader
        settings = (loader.batch_size, loader.num_workers, loader.pin_memory, loader.persistent_workers,
                    loader.timeout)
        trainer_settings = (tc.eval_batch_size or tc.batch_size, tc.num_workers, tc.pin_memory,
                            tc.persistent_workers, tc.data_timeout)
        if settings == trainer_settings:
            out[name] = dataset
            continue
        out[name] = ResumableLoader(
            dataset, batch_size=loader.batch_size, shuffle=False, seed=tc.seed, num_workers=loader.num_workers,
            pin_memory=loader.pin_memory and device_is_gpu, persistent_workers=loader.persistent_workers,
            timeout=loader.timeout, rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")), pad_to_equal=False,
        )
    return out if isinstance(data, dict) else out["only"]


def _default_seed() -> Any:
    from .schema import SeedParams

    return SeedParams()


def build_model(cfg: ExperimentConfig) -> nn.Module:
    """The model of ``task.params`` through ``trainforge.models.build_model``."""
    params = {k: v for k, v in cfg.task.params.items() if k in MODEL_KEYS}
    if "backbone_name" not in params:
        raise ConfigError(
            "task.params.backbone_name is required, e.g. backbone_name: resnet18 (trainforge ls backbones)"
        )
    from ..models import build_model as build

    try:
        return build(**params)
    except RegistryError as error:
        raise ConfigError(f"task.params: {error}") from None
    except (TypeError, ValueError) as error:  # a library's own check of backbone_params (timm)
        raise ConfigError(f"task.params: {error}") from error


def _build_joint_loss(cfg: ExperimentConfig) -> nn.Module:
    from ..losses import JointLoss

    terms = []
    for term in cfg.joint_loss.losses:
        entry = {"name": term.name, "weight": term.weight, "params": dict(term.params)}
        if term.tag is not None:
            entry["tag"] = term.tag
        if term.mapping is not None:
            entry["mapping"] = dict(term.mapping)
        terms.append(entry)
    for i, term in enumerate(cfg.joint_loss.losses):
        _wrap_registry_error(f"joint_loss.losses[{i}].name", lambda t=term: get_registry("losses").get(t.name))
    try:
        return JointLoss(terms, normalize_weights=cfg.joint_loss.normalize_weights)
    except ConfigError as error:
        raise ConfigError(str(error).replace("loss ", "joint_loss: loss ", 1) if "joint_loss" not in str(error)
                          else str(error)) from None


def to_training_config(
    cfg: ExperimentConfig, run_dir: str | os.PathLike[str], mode: str = "train", name: str = "experiment"
) -> Any:
    """The ``TrainingConfig`` of an experiment: trainer settings, the loader settings of its first data
    set, metrics, seeds, checkpoint and early-stopping policies from the callbacks."""
    from ..training_config import TrainingConfig

    t = cfg.trainer
    main_phase = {"train": "TRAIN", "test": "TEST", "predict": "PREDICT"}[mode]
    main = (getattr(cfg.data, main_phase) or [DataPair(dataset=None)])[0]  # type: ignore[arg-type]
    evaluation = (cfg.data.VALID or getattr(cfg.data, main_phase) or [main])[0]
    seeds = cfg.seed_params or cfg.task.seed_params or _default_seed()
    values: dict[str, Any] = {
        "output_dir": str(run_dir),
        "experiment_name": cfg.logger.experiment_name if cfg.logger and cfg.logger.experiment_name else name,
        "seed": seeds.seed,
        "deterministic": t.deterministic,
        "batch_size": main.dataloader.batch_size,
        "eval_batch_size": evaluation.dataloader.batch_size,
        "num_workers": main.dataloader.num_workers,
        "pin_memory": main.dataloader.pin_memory,
        "drop_last": main.dataloader.drop_last,
        "persistent_workers": main.dataloader.persistent_workers,
        "data_timeout": main.dataloader.timeout,
        "max_epochs": t.max_epochs,
        "eval_strategy": t.eval_strategy,
        "eval_steps": t.eval_steps,
        "scheduler": None,  # built here and handed over, sized by the training loader
        "accumulate_grad_batches": t.accumulate_grad_batches,
        "gradient_clip_val": t.gradient_clip_val,
        "gradient_clip_algorithm": t.gradient_clip_algorithm,
        "ema_decay": t.ema_decay,
        "freeze_batchnorm": t.freeze_batchnorm,
        "device": _device(t.accelerator, t.devices),
        "precision": _PRECISION[t.precision],
        "compile": t.compile,
        "channels_last": t.channels_last,
        "print_steps": t.print_steps,
        "progress_bar": t.progress_bar,
        "log_every_n_steps": t.log_every_n_steps,
        "tensorboard": cfg.logger is not None and cfg.logger.name in ("TensorBoardLogger", "tensorboard"),
        "report": t.report,
        "non_finite": t.non_finite,
        "load_best_model_at_end": t.load_best_model_at_end,
    }
    if cfg.metrics:  # none: the task's own metrics (TrainingConfig's default lets the task choose)
        values["metrics"] = [_metric_spec(m, _num_classes(cfg)) for m in cfg.metrics]
    if cfg.task.load_checkpoint is not None:
        values["load_checkpoint"] = _load_checkpoint_options(cfg.task.load_checkpoint)
    elif mode != "train" and cfg.resume_path is not None:  # test / predict the weights of a trained run
        values["load_checkpoint"] = {"base_path": str(evaluation_checkpoint(cfg.resume_path)[0])}
    for callback in cfg.callbacks:
        name = CALLBACK_ALIASES.get(callback.name, (None, callback.name))[1]
        params = {k: v for k, v in callback.params.items() if k not in IGNORED_CALLBACK_KEYS}
        if name in ("ModelCheckpoint", "ModelCheckpointWithOnnx"):  # the latter also runs as a callback (ONNX)
            params = {k: v for k, v in params.items() if k not in ("export_to_onnx", "onnx_params", "remove_head")}
            values["checkpoint"] = {"monitor": None, "mode": "min", "save_top_k": 1, "save_last": True, **params}
        elif name == "EarlyStopping":
            values["early_stopping"] = params
        elif name == "EMA":
            values["ema_decay"] = params.get("decay", 0.999)
        elif name == "FreezeBatchNorm":
            values["freeze_batchnorm"] = True
    try:
        return TrainingConfig(**values)
    except ConfigError as error:
        raise ConfigError(f"trainer: {error}") from None


def evaluation_checkpoint(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The weights ``trainforge test|predict`` uses for ``resume_path=path``, and a line saying which: of a
    run folder (or its ``checkpoints/``), the best checkpoint by the monitored metric when it kept one
    (Lightning's ``ckpt_path="best"``), else the newest; a checkpoint itself, as given.

    >>> import json, tempfile, torch
    >>> from trainforge.checkpoint import save_checkpoint
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = (run / "config.yaml").write_text(json.dumps({"checkpoint": {"monitor": "valid/accuracy", "mode": "max"}}))
    >>> for step, score in ((10, 0.9), (20, 0.7)):
    ...     meta = {"global_step": step, "monitor": "valid/accuracy", "score": score}
    ...     _ = save_checkpoint(run / "checkpoints" / f"step{step}", {"w": torch.ones(1)}, meta)
    >>> found, why = evaluation_checkpoint(run)
    >>> found.name, why.split(": ", 1)[1]
    ('step10', 'the best checkpoint by valid/accuracy (max): step10 (valid/accuracy=0.9000), not the newest step20')
    """
    from ..checkpoint import find_resume_checkpoint, read_manifest

    folder = Path(path)
    where = f"resume_path={str(path)!r}"
    if not folder.exists():
        raise ConfigError(f"{where} does not exist; give a run folder or a checkpoint")
    if (folder / "MANIFEST.json").exists() or folder.is_file():
        return folder, f"{where}: the checkpoint given ({folder.name})"
    run = folder if (folder / "checkpoints").is_dir() else folder.parent
    checkpoints = folder / "checkpoints" if (folder / "checkpoints").is_dir() else folder
    newest = find_resume_checkpoint(checkpoints)
    if newest is None:
        raise ConfigError(f"{where}: {checkpoints} holds no intact checkpoint")
    mode = _checkpoint_mode(run / "config.yaml")
    scored = []
    for candidate in sorted(p for p in checkpoints.iterdir() if p.is_dir() and (p / "MANIFEST.json").exists()):
        if candidate.name == "last" or ".tmp-" in candidate.name or ".old-" in candidate.name:
            continue  # last: the resume point, a link to the newest save, not a kept best
        try:
            meta = read_manifest(candidate)["metadata"]
        except Exception:  # a broken manifest: find_resume_checkpoint has warned about it
            continue
        score = meta.get("score")
        if meta.get("monitor") and isinstance(score, (int, float)) and math.isfinite(score):
            scored.append((float(score), candidate, str(meta["monitor"])))
    if not scored or (mode is None and len(scored) > 1):
        why = "no checkpoint kept by a monitored metric" if not scored else "the monitor's mode is unknown"
        return newest, f"{where}: the newest checkpoint {newest.name} ({why})"
    score, best, monitor = (max if mode == "max" else min)(scored, key=lambda item: item[0])
    if best.resolve() == newest.resolve() or (newest.name == "last" and _same_files(best, newest)):
        return best, f"{where}: the best checkpoint by {monitor} ({mode}): {best.name} ({monitor}={score:.4f}), " \
            "also the newest"
    return best, (f"{where}: the best checkpoint by {monitor} ({mode}): {best.name} ({monitor}={score:.4f}), not the "
                  f"newest {newest.name}")


def _checkpoint_mode(config_file: Path) -> str | None:
    """``checkpoint.mode`` of a run's ``config.yaml`` (what the trainer wrote), or None."""
    import yaml

    try:
        values = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    policy = values.get("checkpoint") if isinstance(values, dict) else None
    mode = policy.get("mode", "min") if isinstance(policy, dict) else None
    return mode if mode in ("min", "max") else None


def _same_files(a: Path, b: Path) -> bool:
    try:
        return (a / "MANIFEST.json").read_bytes() == (b / "MANIFEST.json").read_bytes()
    except OSError:
        return False


def _device(accelerator: str, devices: Any) -> str | None:
    if accelerator == "cpu":
        return "cpu"
    if accelerator == "auto" and devices in (None, "auto"):
        return None
    if isinstance(devices, list):
        if len(devices) != 1:
            raise ConfigError(f"trainer.devices={devices}: one process uses one device; launch with torchrun for more")
        devices = devices[0]
    if devices in (None, "auto", 1):
        return "cuda"
    if isinstance(devices, int):
        return f"cuda:{devices}"
    raise ConfigError(f"trainer.devices={devices!r}: expected a GPU index, a one-element list or 'auto'")


def _metric_spec(metric: MetricSection, num_classes: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": metric.name, "params": dict(metric.params)}
    if isinstance(num_classes, int) and "num_classes" not in spec["params"] \
            and spec["params"].get("task", "multiclass") == "multiclass":
        # the class count the config states (a margin head's, say) where the model's outputs may not show it
        try:
            accepted = inspect.signature(get_registry("metrics").get(metric.name)).parameters
        except (TypeError, ValueError):
            accepted = {}
        if "num_classes" in accepted:
            spec["params"]["num_classes"] = num_classes
    if metric.mapping is not None:
        spec["mapping"] = dict(metric.mapping)
    if metric.phases is not None:
        spec["phases"] = list(metric.phases)
    if metric.tag is not None:
        spec["alias"] = metric.tag
    return spec


# -- data -------------------------------------------------------------------------------------------------
def dataset_class(name: str) -> Any:
    """The data set class registered as ``name``."""
    return get_registry("datasets").get(name)


#: TorchOk's data-set keys that trainforge's data sets spell differently or decide themselves.
DATASET_PARAM_ALIASES: dict[str, tuple[str | None, str]] = {
    "data_folder": ("root", "read as root"),
    "input_dtype": (None, "ignored: images are float32 in [0, 1]; trainer.precision sets mixed precision"),
    "bbox_dtype": (None, "ignored: boxes are float32 xyxy pixels; trainer.precision sets mixed precision"),
    "download": (None, "ignored: nothing downloads; the files must already be in root"),
    "lazy_init": (None, "ignored: images are read when a sample is asked for"),
}


def dataset_params(cls: Any, params: Mapping[str, Any], where: str, notes: list[str] | None = None) -> dict:
    """``params`` with TorchOk's aliases applied where ``cls`` does not take the key itself."""
    try:
        accepted = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return dict(params)
    out = {}
    for key, value in params.items():
        if key in DATASET_PARAM_ALIASES and key not in accepted:
            target, why = DATASET_PARAM_ALIASES[key]
            if notes is not None:
                notes.append(f"{where}.{key} is {why}")
            if target is not None and target in accepted and target not in params:
                out[target] = value
            continue
        out[key] = value
    return out


_PART_REGISTRIES = {"backbone": "backbones", "neck": "necks", "pooling": "poolings", "head": "heads"}


def _build_phase(cfg: ExperimentConfig, phase: str) -> Any:
    pairs: list[DataPair] = getattr(cfg.data, phase)
    limit_batches = {"TRAIN": cfg.trainer.limit_train_batches, "VALID": cfg.trainer.limit_val_batches}.get(phase)
    built = {}
    for i, pair in enumerate(pairs):
        name = pair.name or (str(i) if i else phase.lower())
        if name in built:
            raise ConfigError(f"data.{phase}[{i}].name={name!r} is used twice; give each data set its own name")
        dataset = build_dataset(pair, f"data.{phase}[{i}]", train=phase == "TRAIN")
        limit = pair.limit
        if limit_batches is not None:
            limit = min(limit or 10**18, limit_batches * pair.dataloader.batch_size)
        if limit is not None and limit < len(dataset):
            classes = getattr(dataset, "classes", None)
            dataset = torch.utils.data.Subset(dataset, range(limit))
            if classes is not None:
                dataset.classes = classes
        built[name] = dataset
    if phase == "TRAIN" or len(built) == 1:
        return next(iter(built.values()))
    return built


def build_dataset(pair: DataPair, where: str, train: bool = False) -> Any:
    """The data set of one pair, with its transform and (training data only) augment pipelines."""
    cls = dataset_class(pair.dataset.name)
    transform = build_transforms(pair.dataset.transform, f"{where}.dataset.transform")
    augment = build_transforms(pair.dataset.augment, f"{where}.dataset.augment")
    params = dataset_params(cls, pair.dataset.params, f"{where}.dataset.params")
    accepted = inspect.signature(cls).parameters
    for key, value in (("transform", transform), ("augment", augment)):
        if key in accepted:
            params[key] = value
        elif value is not None:
            raise ConfigError(f"{where}.dataset.{key}: {pair.dataset.name} takes no {key}; remove the list")
    try:
        return cls(**params)
    except ConfigError:
        raise
    except (TypeError, ValueError, OSError) as error:
        raise ConfigError(f"{where}.dataset: {pair.dataset.name}({_show(params)}) failed: {error}") from error


def build_transforms(items: list[Component], where: str) -> Any:
    """An albumentations ``Compose`` of the named transforms (nested ``transforms`` lists built too); None
    for an empty list."""
    if not items:
        return None
    import albumentations as A

    return A.Compose([_build_transform(item, f"{where}[{i}]") for i, item in enumerate(items)])


def _build_transform(item: Component, where: str) -> Any:
    from .schema import parse

    params = dict(item.params)
    if isinstance(params.get("transforms"), list):
        params["transforms"] = [
            _build_transform(parse(Component, sub, f"{where}.params.transforms[{k}]"),
                             f"{where}.params.transforms[{k}]")
            for k, sub in enumerate(params["transforms"])
        ]
    target = get_registry("transforms").get(item.name)
    try:
        return target(**params)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {item.name}({_show(params)}) failed: {error}") from error


def _show(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items() if k not in ("transform", "augment"))


# -- optimization -------------------------------------------------------------------------------------------
def _build_optimizers(cfg: ExperimentConfig, model: nn.Module, train: Any, tc: Any) -> list[tuple[Any, Any, str, Any]]:
    """One ``(optimizer, scheduler, interval, pair)`` per optimization pair: each optimizer gets only the
    parameters of the modules it names; a parameter named by two optimizers is an error."""
    from ..optim import build_optimizer, count_optimizer_steps

    owner: dict[int, int] = {}
    named = dict(model.named_parameters())
    claimed: list[list[str]] = []
    for i, pair in enumerate(cfg.optimization):
        names = _parameters_of(model, pair.modules, f"optimization[{i}].modules")
        for name in names:
            if id(named[name]) in owner:
                raise ConfigError(
                    f"optimization[{i}].modules and optimization[{owner[id(named[name])]}].modules both take "
                    f"parameter {name!r}; each parameter belongs to one optimizer"
                )
            owner[id(named[name])] = i
        claimed.append(names)
    unnamed = [i for i, pair in enumerate(cfg.optimization) if pair.modules is None]
    if len(unnamed) > 1:
        raise ConfigError(f"optimization{unnamed} name no modules; all but one optimizer must list its modules")
    batches = _batches_per_epoch(train, tc)
    built = []
    for i, (pair, names) in enumerate(zip(cfg.optimization, claimed)):
        if pair.modules is None:  # all parameters no other optimizer takes
            names = [n for n, p in named.items() if id(p) not in owner or owner[id(p)] == i]
        groups = _param_groups(model, names, pair, f"optimization[{i}]")
        if not groups:
            raise ConfigError(f"optimization[{i}] has no trainable parameters (modules={pair.modules}; all frozen?)")
        params = dict(pair.optimizer.params)
        lr = params.pop("lr")
        optimizer = build_optimizer(pair.optimizer.name, groups, lr=lr, **params)
        scheduler, interval = None, "step"
        if pair.scheduler is not None:
            interval = pair.scheduler.pl_params.interval or (
                "step" if pair.scheduler.name.lower() in _NAMED_SCHEDULES else "epoch")
            total = count_optimizer_steps(batches, tc.max_epochs, tc.accumulate_grad_batches)
            scheduler = _build_scheduler(pair.scheduler, optimizer, total if interval == "step" else tc.max_epochs)
        built.append((optimizer, scheduler, interval, pair))
    return built


def _build_scheduler(section: SchedulerSection, optimizer: Any, total_steps: int) -> Any:
    from ..optim import build_scheduler

    frequency = section.pl_params.frequency
    scheduler = build_scheduler(section.name, optimizer, total_steps=max(1, math.ceil(total_steps / frequency)),
                                **section.params)
    return scheduler if frequency == 1 else EveryN(scheduler, frequency)


class EveryN:
    """Steps ``scheduler`` once every ``frequency`` calls (TorchOk's ``pl_params.frequency``); resumable."""

    def __init__(self, scheduler: Any, frequency: int) -> None:
        self.scheduler, self.frequency, self.calls = scheduler, frequency, 0

    def step(self, *args: Any) -> None:
        self.calls += 1
        if self.calls % self.frequency == 0:
            self.scheduler.step(*args)

    def get_last_lr(self) -> list[float]:
        return self.scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])
        self.scheduler.load_state_dict(state["scheduler"])


def _needs_metric(scheduler: Any) -> bool:
    from ..optim import scheduler_needs_metric

    return scheduler_needs_metric(getattr(scheduler, "scheduler", scheduler))


class PlateauStep:
    """Steps a metric-driven schedule (``ReduceLROnPlateau``) at epoch end with the monitored value."""

    group = "middle"

    def __init__(self, scheduler: Any, monitor: str) -> None:
        self.scheduler, self.monitor = scheduler, monitor

    def on_epoch_end(self, state: Any) -> None:
        value = state.metrics.get(self.monitor)
        if value is None:
            raise ConfigError(
                f"pl_params.monitor={self.monitor!r} was not logged this epoch; "
                f"logged: {', '.join(sorted(state.metrics))}"
            )
        self.scheduler.step(float(value))

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def _plateau_callbacks(optimizers: list[tuple[Any, Any, str, Any]]) -> list[Any]:
    return [PlateauStep(scheduler, pair.scheduler.pl_params.monitor)
            for _, scheduler, _, pair in optimizers if scheduler is not None and _needs_metric(scheduler)]


def _batches_per_epoch(train: Any, tc: Any) -> int:
    from ..data import ResumableLoader

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    loader = ResumableLoader(train, batch_size=tc.batch_size, shuffle=True, drop_last=tc.drop_last, seed=tc.seed,
                             rank=rank, world_size=world)
    return len(loader)


def _parameters_of(model: nn.Module, modules: list[str] | None, where: str) -> list[str]:
    if modules is None:
        return []
    known = dict(model.named_modules())
    names: list[str] = []
    for j, module in enumerate(modules):
        if module not in known:
            import difflib

            top = [n for n in known if n and "." not in n]
            close = difflib.get_close_matches(module, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{where}[{j}]={module!r} is not a module of the model{hint} (top level: {', '.join(top)})"
            )
        prefix = f"{module}." if module else ""
        names += [prefix + n for n, _ in known[module].named_parameters()]
    return names


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def _layer_parameters(model: nn.Module, chosen: Callable[[nn.Module], bool]) -> set[str]:
    return {f"{m}.{p}" if m else p for m, module in model.named_modules() if chosen(module)
            for p, _ in module.named_parameters(recurse=False)}


def _param_groups(model: nn.Module, names: list[str], pair: OptimizationPair, where: str) -> list[dict[str, Any]]:
    """Parameter groups by rule: the first ``param_groups`` rule whose ``layers`` and ``pattern`` match sets
    lr and weight-decay multipliers; ``no_decay_norm_and_bias`` removes decay from norm layers and biases."""
    params = dict(model.named_parameters())
    norm_params = _layer_parameters(model, lambda module: isinstance(module, _NORMS))
    depthwise_params = _layer_parameters(model, lambda module: isinstance(module, nn.Conv2d)
                                         and module.in_channels == module.groups)
    kinds = {"norm": norm_params, "depthwise": depthwise_params}
    lr = pair.optimizer.params["lr"]
    decay = pair.optimizer.params.get("weight_decay")
    groups: dict[tuple[float, float | None], list[Any]] = {}
    used = [False] * len(pair.param_groups)
    for name in names:
        param = params[name]
        if not param.requires_grad:
            continue
        lr_mult, wd_mult = 1.0, 1.0
        for j, rule in enumerate(pair.param_groups):
            if rule.layers == "other":
                if name in norm_params or name in depthwise_params:
                    continue
            elif rule.layers != "any" and name not in kinds[rule.layers]:
                continue
            if fnmatch.fnmatchcase(name, rule.pattern):
                lr_mult, wd_mult, used[j] = rule.lr_mult, rule.weight_decay_mult, True
                break
        if pair.no_decay_norm_and_bias and (name in norm_params or name.endswith(".bias") or name == "bias"):
            wd_mult = 0.0
        key = (lr * lr_mult, None if decay is None and wd_mult == 1.0 else (decay or 0.0) * wd_mult)
        groups.setdefault(key, []).append(param)
    for j, was_used in enumerate(used):
        if not was_used and pair.param_groups[j].required:
            raise ConfigError(
                f"{where}.param_groups[{j}].pattern={pair.param_groups[j].pattern!r} matches no parameter of this "
                f"optimizer (e.g. {', '.join(names[:3])})"
            )
    out = []
    for (group_lr, group_decay), group_params in groups.items():
        group: dict[str, Any] = {"params": group_params, "lr": group_lr}
        if group_decay is not None:
            group["weight_decay"] = group_decay
        out.append(group)
    return out


# -- callbacks -----------------------------------------------------------------------------------------------
def _build_callbacks(cfg: ExperimentConfig, model: nn.Module, optimizer: Any) -> list[Any]:
    """Callback objects; ModelCheckpoint, EarlyStopping, EMA and FreezeBatchNorm become Trainer settings
    (``to_training_config``), TorchOk's freeze lists become ``FreezeUnfreeze`` callbacks."""
    built: list[Any] = []
    for i, callback in enumerate(cfg.callbacks):
        name = CALLBACK_ALIASES.get(callback.name, (None, callback.name))[1]
        if name in (None, "ModelCheckpoint", "EarlyStopping", "EMA", "FreezeBatchNorm"):
            continue
        params = {k: v for k, v in callback.params.items() if k not in IGNORED_CALLBACK_KEYS}
        if name == "FreezeUnfreeze" and "freeze_modules" in params:
            continue  # built before the optimizers (_scheduled_unfreezes)
        cls = get_registry("callbacks").get(name)
        accepted = inspect.signature(cls).parameters
        context = {"model": model, "optimizer": optimizer}
        params.update({k: v for k, v in context.items() if k in accepted and k not in params})
        try:
            built.append(cls(**params))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"callbacks[{i}] ({callback.name}): {error}") from error
    if cfg.logger is not None and cfg.logger.name not in ("TensorBoardLogger", "tensorboard"):
        built.append(_build_logger(cfg))
    return built


def _build_logger(cfg: ExperimentConfig) -> Any:
    cls = get_registry("loggers").get(cfg.logger.name)
    try:
        return cls(**cfg.logger.params)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"logger ({cfg.logger.name}): {error}") from error


def _freeze_lists(cfg: ExperimentConfig) -> list[tuple[str, list[Any]]]:
    return [(f"callbacks[{i}].params.freeze_modules", c.params["freeze_modules"]) for i, c in enumerate(cfg.callbacks)
            if c.name == "FreezeUnfreeze" and "freeze_modules" in c.params]


def _freeze_entries(cfg: ExperimentConfig, model: nn.Module) -> list[nn.Module]:
    """Apply TorchOk's forever-freezes (entries without ``epoch``) before any optimizer is built; returns
    the frozen modules."""
    frozen: list[nn.Module] = []
    for where, entries in _freeze_lists(cfg):
        for j, entry in enumerate(entries):
            if entry.get("epoch") is None:
                for module in _freeze_targets(model, entry, f"{where}[{j}]"):
                    _freeze(module, entry)
                    frozen.append(module)
    return frozen


def _freeze_targets(model: nn.Module, entry: Mapping[str, Any], where: str) -> list[nn.Module]:
    name = entry["module_name"]
    if not isinstance(name, str):
        raise ConfigError(f"{where}.module_name={name!r} must be a module name (\"\" for the whole model)")
    try:
        root = model.get_submodule(name) if name else model
    except AttributeError:
        top = ", ".join(n for n, _ in model.named_children())
        raise ConfigError(f"{where}.module_name={name!r} is not a module of the model (top level: {top})") from None
    modules = [root]
    stages = entry.get("stages")
    if stages is not None:
        found = stage_modules(root)
        if not isinstance(stages, int) or isinstance(stages, bool) or not 0 <= stages < len(found):
            raise ConfigError(f"{where}.stages={stages!r}: expected 0..{len(found) - 1} (the stem and N stages "
                              f"of {name or 'the model'!r})")
        modules = [m for stage in found[: stages + 1] for m in stage]
    wanted = entry.get("module_class")
    if wanted is not None:
        modules = [m for top in modules for m in top.modules() if any(c.__name__ == wanted for c in type(m).__mro__)]
        if not modules:
            raise ConfigError(f"{where}.module_class={wanted!r} matches no module under {name!r}")
    return modules


def stage_modules(root: nn.Module) -> list[list[nn.Module]]:
    """The stages of a backbone, stem first: a ``stages`` list (trainforge's backbones), timm's
    ``feature_info`` (each stage ends at a feature module: resnet's act1 | layer1 | ...), or the children.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    >>> [len(stage) for stage in stage_modules(net)]
    [1, 1, 1]
    """
    listed = getattr(root, "stages", None)
    if isinstance(listed, (nn.ModuleList, nn.Sequential)):
        return [[stage] for stage in listed]
    for holder in (root, *root.children()):
        info = getattr(holder, "feature_info", None)
        dicts = getattr(info, "info", info)  # timm's FeatureInfo: every stage, not only the ones it returns
        if isinstance(dicts, list) and dicts and all(isinstance(d, dict) and "module" in d for d in dicts):
            ends = {d["module"] for d in dicts}
            stages, current = [], []
            for path, child in _stage_units(holder, ends):
                current.append(child)
                if path in ends:
                    stages.append(current)
                    current = []
            if stages:
                return stages
    return [[child] for child in root.children()]


def _stage_units(holder: nn.Module, ends: set[str], prefix: str = "") -> Any:
    """``(path, module)`` in order, opening the containers a stage ends inside (efficientnet's ``blocks.2``)."""
    for name, child in holder.named_children():
        path = prefix + name
        if any(end.startswith(path + ".") for end in ends):
            yield from _stage_units(child, ends, path + ".")
        else:
            yield path, child


def _freeze(module: nn.Module, entry: Mapping[str, Any]) -> None:
    requires_grad = bool(entry.get("bn_requires_grad", False)) if entry.get("module_class") else False
    module.requires_grad_(requires_grad)
    if entry.get("bn_track_running_stats") is False:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.track_running_stats = False


class KeepFrozen:
    """Keeps TorchOk's forever-frozen modules frozen after a scheduled unfreeze of a module around them."""

    group = "prologue"

    def __init__(self, modules: list[nn.Module]) -> None:
        self.frozen = [p for m in modules for p in m.parameters() if not p.requires_grad]

    def on_epoch_start(self, state: Any) -> None:
        for param in self.frozen:
            param.requires_grad_(False)


def _scheduled_unfreezes(cfg: ExperimentConfig, model: nn.Module, optimizer: Callable[[], Any],
                         scheduler: Callable[[], Any]) -> list[Any]:
    """``FreezeUnfreeze`` callbacks for TorchOk's entries with an ``epoch`` (they freeze now, before the
    optimizer exists, and hand their parameters to the first optimizer at that epoch)."""
    from ..callbacks import FreezeUnfreeze

    built = []
    for where, entries in _freeze_lists(cfg):
        for j, entry in enumerate(entries):
            epoch = entry.get("epoch")
            if epoch is None:
                continue
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                raise ConfigError(f"{where}[{j}].epoch must be an integer >= 0, got {epoch!r}")
            _freeze_targets(model, entry, f"{where}[{j}]")  # names checked with the key path
            built.append(FreezeUnfreeze(model, optimizer, modules=[entry["module_name"]], unfreeze_at_epoch=epoch,
                                        scheduler=scheduler))
    return built


# -- helpers -------------------------------------------------------------------------------------------------
def _wrap_registry_error(where: str, fetch: Callable[[], Any]) -> Any:
    try:
        return fetch()
    except RegistryError as error:
        raise ConfigError(f"{where}: {error}") from None


def _check_keys(values: Mapping[str, Any], accepted: list[str] | tuple[str, ...], where: str) -> None:
    import difflib

    for key in values:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), list(accepted), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where} has no key {key!r}{hint} (accepted: {', '.join(accepted)})")


def _check_signature(target: Any, params: Mapping[str, Any], where: str, skip: tuple[str, ...] = ()) -> None:
    for key in skip:
        if key in params:
            raise ConfigError(f"{where}.{key} is set by trainforge; remove it")
    check_params(target, dict(params), where)

