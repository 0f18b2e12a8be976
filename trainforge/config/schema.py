"""The experiment schema: TorchOk's sections as typed dataclasses, each field with its default and help in
one place, and ``parse_experiment`` that checks a plain dict against them (unknown keys, wrong types,
missing required values), naming the dotted key path and the fix."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import ConfigError

REQUIRED = dataclasses.MISSING
PHASES = ("TRAIN", "VALID", "TEST", "PREDICT")
MODES = ("train", "test", "predict")


def _field(default: Any, help: str, choices: tuple[Any, ...] | None = None) -> Any:
    meta = {"help": help, "choices": choices}
    if default is REQUIRED:
        return field(metadata=meta)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda d=default: dataclasses.replace(d), metadata=meta)
    return field(default=default, metadata=meta)


# -- components ------------------------------------------------------------------------------------------
@dataclass
class Component:
    """A component looked up by name in a registry, built with ``params``."""

    name: str = _field(REQUIRED, "registered name of the component (trainforge ls REGISTRY lists them)")
    params: dict = _field({}, "keyword arguments of the component, checked against its signature")


@dataclass
class SeedParams:
    """Seeds of python, numpy, torch and of the data loader workers (TorchOk's seed_params)."""

    seed: int = _field(42, "seed of python, numpy, torch, the data order and the per-sample augmentation")
    workers: bool = _field(
        True, "seed the loader workers too (always done: every sample is seeded from (seed, epoch, index))"
    )


@dataclass
class TaskSection:
    """The task trainer and its model (TorchOk's ``task``)."""

    name: str = _field(REQUIRED, "task trainer: ClassificationTask, SegmentationTask, ... (trainforge ls tasks)")
    params: dict = _field(
        {}, "model parts (backbone_name, backbone_params, neck_name, pooling_name, head_name, head_params, "
        "num_classes, in_channels, inputs) and the task's own keyword arguments"
    )
    load_checkpoint: dict | None = _field(
        None, "pretrained weights: {base_path, overrides: {module prefix: path}, exclude_keys, strict, relative}"
    )
    compute_loss_on_valid: bool = _field(True, "compute the loss on the validation data too")
    seed_params: SeedParams | None = _field(None, "seeds, also accepted at the top level (one place only)")


# -- data ------------------------------------------------------------------------------------------------
@dataclass
class DatasetSection:
    """A data set by name, with albumentations ``transform`` (always) and ``augment`` (random) lists."""

    name: str = _field(REQUIRED, "registered data set (trainforge ls datasets)")
    params: dict = _field({}, "keyword arguments of the data set, checked against its signature")
    transform: list[Component] = _field(
        [], "transforms applied to every sample, after augment (trainforge ls transforms)"
    )
    augment: list[Component] = _field([], "random augmentations applied before transform, training data only")


@dataclass
class DataloaderSection:
    """How a data set is batched (the keys of ``torch.utils.data.DataLoader`` that trainforge honours)."""

    batch_size: int = _field(32, "samples per batch (per process)")
    num_workers: int = _field(0, "loader worker processes")
    shuffle: bool | None = _field(None, "None: shuffle training data only; the training data are always shuffled")
    drop_last: bool = _field(False, "drop the last partial training batch (evaluation never drops samples)")
    pin_memory: bool = _field(True, "pin host memory (CUDA only)")
    persistent_workers: bool = _field(False, "keep workers alive between epochs")
    timeout: float = _field(60.0, "seconds a worker may take for one batch (0: no limit)")


@dataclass
class DataPair:
    """One data set with its loader."""

    dataset: DatasetSection = _field(REQUIRED, "the data set: {name, params, transform, augment}")
    dataloader: DataloaderSection = _field(DataloaderSection(), "batch size, workers, drop_last, ...")
    sampler: Component | None = _field(None, "a registered sampler (trainforge ls samplers)")
    name: str | None = _field(None, "name of an extra evaluation set, in its metric names (valid_<name>/...)")
    limit: int | None = _field(None, "use only the first N samples (quick runs: data.TRAIN.0.limit=256)")


@dataclass
class DataSection:
    """Data per phase: each a list of dataset + dataloader pairs; TRAIN takes one."""

    TRAIN: list[DataPair] | None = _field(None, "training data (one pair)")
    VALID: list[DataPair] | None = _field(None, "validation data, evaluated every epoch (one or more pairs)")
    TEST: list[DataPair] | None = _field(None, "test data, for trainforge test (one or more pairs)")
    PREDICT: list[DataPair] | None = _field(None, "data to predict, for trainforge predict")


# -- losses, optimization, metrics -------------------------------------------------------------------------
@dataclass
class LossTerm:
    """One loss term of the joint loss."""

    name: str = _field(REQUIRED, "a torch.nn or registered loss (trainforge ls losses)")
    tag: str | None = _field(
        None, "name of the term in logs (loss/<tag>) and in the task's losses; default: snake name"
    )
    weight: float = _field(1.0, "multiplier of the term")
    mapping: dict[str, str] | None = _field(
        None, "loss argument -> step output or batch key, e.g. {input: output, target: target}"
    )
    params: dict = _field({}, "keyword arguments of the loss")


@dataclass
class JointLossSection:
    """The weighted sum of loss terms (TorchOk's ``joint_loss``)."""

    losses: list[LossTerm] = _field(REQUIRED, "the loss terms: [{name, tag, weight, mapping, params}]")
    normalize_weights: bool = _field(True, "divide the weights by their sum (TorchOk's default)")


@dataclass
class ParamGroupRule:
    """Learning-rate and weight-decay multipliers for the parameters whose names match ``pattern``."""

    pattern: str = _field(REQUIRED, "shell pattern on parameter names, e.g. 'backbone.*' or '*.bias'")
    lr_mult: float = _field(1.0, "learning rate = optimizer lr * lr_mult")
    weight_decay_mult: float = _field(1.0, "weight decay = optimizer weight_decay * weight_decay_mult")
    layers: str = _field(
        "any", "which layers' parameters the rule takes: any, norm (normalisation layers), depthwise (depth-wise "
        "convolutions: in_channels == groups) or other (neither)", ("any", "norm", "depthwise", "other"),
    )
    required: bool = _field(True, "an error when the rule matches no parameter (false: a rule that may not apply)")


@dataclass
class OptimizerSection:
    name: str = _field(REQUIRED, "a torch.optim or timm optimizer (trainforge ls optimizers)")
    params: dict = _field({}, "keyword arguments: lr (required), weight_decay, betas, momentum, ...")


@dataclass
class SchedulerStepping:
    """When the scheduler steps (TorchOk's ``pl_params``)."""

    interval: str | None = _field(
        None, "step or epoch; None: step for constant/linear/cosine/polynomial, epoch for torch classes",
        ("step", "epoch", None),
    )
    frequency: int = _field(1, "step the scheduler every this many intervals")
    monitor: str | None = _field(None, "metric a ReduceLROnPlateau schedule reads, e.g. valid/loss (checked at start)")


@dataclass
class SchedulerSection:
    name: str = _field(
        REQUIRED, "a schedule: constant, linear, cosine, polynomial or a torch class (trainforge ls schedulers)"
    )
    params: dict = _field({}, "keyword arguments: warmup_steps, warmup_ratio, min_lr_ratio, gamma, ...")
    pl_params: SchedulerStepping = _field(SchedulerStepping(), "interval (step | epoch), frequency, monitor")


@dataclass
class OptimizationPair:
    """An optimizer, the modules whose parameters it owns, and its scheduler."""

    optimizer: OptimizerSection = _field(REQUIRED, "{name, params}")
    scheduler: SchedulerSection | None = _field(None, "{name, params, pl_params}; none: constant learning rate")
    modules: list[str] | None = _field(
        None, "module names (model.named_modules()) whose parameters this optimizer gets; None: all not taken"
    )
    param_groups: list[ParamGroupRule] = _field([], "lr / weight-decay multipliers by parameter-name pattern")
    no_decay_norm_and_bias: bool = _field(False, "no weight decay on normalisation layers and biases")


@dataclass
class MetricSection:
    """A torchmetrics metric (or a registered one) by name."""

    name: str = _field(REQUIRED, "a metric class (trainforge ls metrics)")
    params: dict = _field({}, "keyword arguments; task and num_classes default from the task")
    mapping: dict[str, str] | None = _field(None, "update argument -> step output or batch key; default preds: output")
    phases: list[str] | None = _field(None, "phases it runs in (TRAIN, VALID, TEST); default all three")
    tag: str | None = _field(None, "display name in logs (valid/<tag>); default: the snake-case class name")
    val_dataloader_idxs: list[int] | None = _field(
        None, "TorchOk's: accepted and logged; every metric runs on every VALID set (valid_<name>/...)"
    )


@dataclass
class LoggerSection:
    """Where metrics go besides metrics.jsonl (always written): TensorBoard, MLflow, ..."""

    name: str = _field("TensorBoardLogger", "TensorBoardLogger, MLflowLogger, JsonlLogger, ... (trainforge ls loggers)")
    params: dict = _field({}, "keyword arguments of the logger")
    log_dir: str | None = _field(None, "TorchOk's log root; the run folder follows trainforge's rule instead (logged)")
    experiment_name: str | None = _field(None, "experiment name: runs/<experiment_name>/<timestamp>")
    timestamp: str | None = _field(None, "TorchOk's timestamp folder; trainforge names run folders itself (logged)")


@dataclass
class TrainerSection:
    """Training settings: Lightning's names where TorchOk configs use them, trainforge's otherwise."""

    max_epochs: int = _field(10, "number of training epochs")
    accelerator: str = _field(
        "auto", "auto (a GPU when there is one), cpu, gpu or cuda", ("auto", "cpu", "gpu", "cuda")
    )
    devices: int | str | list | None = _field(None, "GPU index, 'auto', or a list with one index")
    precision: int | str = _field(
        32, "32, 16 / 16-mixed (fp16 autocast + GradScaler), bf16 / bf16-mixed",
        (32, 16, "32", "16", "16-mixed", "bf16", "bf16-mixed"),
    )
    log_every_n_steps: int = _field(50, "write training metrics every this many steps")
    gradient_clip_val: float | None = _field(None, "clip the global gradient norm to this value")
    gradient_clip_algorithm: str = _field(
        "norm", "how gradient_clip_val clips: norm (global L2 norm) or value (each element into [-val, val])",
        ("norm", "value"),
    )
    accumulate_grad_batches: int = _field(1, "sum gradients over this many batches per optimizer step")
    deterministic: bool = _field(False, "torch.use_deterministic_algorithms(True), cudnn deterministic")
    limit_train_batches: int | None = _field(None, "use only this many training batches per epoch (quick runs)")
    limit_val_batches: int | None = _field(None, "use only this many batches of each evaluation set (quick runs)")
    num_sanity_val_steps: int | None = _field(None, "Lightning's sanity check; trainforge runs none (accepted, logged)")
    strategy: str | None = _field(None, "Lightning's strategy (ddp...): one command runs under torchrun (accepted, "
                                  "logged)")
    eval_strategy: str = _field("epoch", "when to evaluate: epoch, steps or no", ("epoch", "steps", "no"))
    eval_steps: int | None = _field(None, "evaluate every this many steps with eval_strategy=steps")
    ema_decay: float | None = _field(None, "keep an EMA of the weights; evaluation uses it")
    compile: bool = _field(False, "torch.compile the model")
    channels_last: bool = _field(False, "channels_last memory format")
    print_steps: int | None = _field(None, "print one line every this many steps; None: a progress bar per epoch")
    progress_bar: bool = _field(True, "a live progress bar per epoch on a terminal")
    report: bool = _field(True, "write the HTML report into <run>/report")
    non_finite: str = _field("raise", "on a NaN/inf loss: raise or skip the batch", ("raise", "skip"))
    freeze_batchnorm: bool = _field(False, "keep BatchNorm layers in eval mode with frozen parameters")
    load_best_model_at_end: bool = _field(False, "load the best checkpoint's weights after fit (needs a monitor)")


@dataclass
class ExperimentConfig:
    """One experiment: TorchOk's sections. ``task`` and ``data`` are required; so are ``joint_loss`` and
    ``optimization`` for training."""

    task: TaskSection = _field(REQUIRED, "the task trainer and model: {name, params}")
    data: DataSection = _field(REQUIRED, "data per phase: {TRAIN: [...], VALID: [...], TEST: [...], PREDICT: [...]}")
    trainer: TrainerSection = _field(TrainerSection(), "max_epochs, accelerator, precision, ...")
    optimization: list[OptimizationPair] = _field([], "optimizer / scheduler pairs (required to train)")
    joint_loss: JointLossSection | None = _field(
        None, "the loss terms (required to train, unless the task has its own: ClassificationTask, MarginLearnTask...)"
    )
    metrics: list[MetricSection] = _field([], "metrics by name: [{name, params, mapping, phases, tag}]")
    callbacks: list[Component] = _field([], "callbacks by name: [{name, params}] (trainforge ls callbacks)")
    logger: LoggerSection | None = _field(None, "a logger besides metrics.jsonl: {name, params}")
    resume_path: str | None = _field(None, "a checkpoint or run folder to resume training from")
    seed_params: SeedParams | None = _field(None, "{seed, workers}")
    mode: str = _field("train", "what the command does: train, test or predict (TorchOk's +mode=...)", MODES)
    hydra: dict | None = _field(None, "Hydra's own settings; trainforge sets run.dir and sweep.dir (logged)")


#: Keys of TorchOk's older configs (its own test configs) and where they live now: (section class, key) -> fix.
LEGACY_KEYS: dict[tuple[str, str], str] = {
    ("ExperimentConfig", "log_dir"): "TorchOk's old top-level log_dir is logger.log_dir now; trainforge puts runs in "
    "runs/<experiment_name>/<time> (delete the key, or pass hydra.run.dir=DIR)",
    ("ExperimentConfig", "experiment_name"): "TorchOk's old top-level experiment_name moved to "
    "logger.experiment_name",
    ("ExperimentConfig", "checkpoint"): "TorchOk's old checkpoint section is a callback now: callbacks: "
    "[{name: ModelCheckpoint, params: {monitor, mode, save_top_k, save_last}}]",
    ("ExperimentConfig", "structure"): "TorchOk's old structure section is task.params now (backbone_name, ...)",
}


# -- parsing -----------------------------------------------------------------------------------------------
def parse_experiment(values: Any, source: str = "config") -> ExperimentConfig:
    """Check a plain dict against the schema and return the typed ``ExperimentConfig``.

    >>> cfg = parse_experiment({"task": {"name": "ClassificationTask"}, "data": {}})
    >>> cfg.trainer.max_epochs, cfg.task.params
    (10, {})
    >>> parse_experiment({"task": {"name": "ClassificationTask"}, "data": {"TRIAN": []}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: config: data has no key 'TRIAN'; did you mean 'TRAIN'? ...
    """
    _refuse_targets(values, "", source)
    return parse(ExperimentConfig, values, "", source)


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-dict form of a parsed config (every default filled in); ``parse_experiment`` of it is equal.

    >>> cfg = parse_experiment({"task": {"name": "ClassificationTask"}, "data": {}})
    >>> parse_experiment(to_dict(cfg)) == cfg
    True
    """
    return dataclasses.asdict(config)


def _refuse_targets(value: Any, path: str, source: str) -> None:
    """Hydra's ``_target_`` builds any importable callable; trainforge builds only registered names, so a
    ``_target_`` anywhere is refused before anything is looked up (RELIABILITY B16)."""
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if key in ("_target_", "_partial_", "_args_", "_recursive_", "_convert_"):
                raise ConfigError(
                    f"{source}: {child}: trainforge builds components by registered name, never by import path "
                    f"(Hydra's {key}); write name: <registered name> and params: {{...}} (trainforge ls lists names)"
                )
            _refuse_targets(item, child, source)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _refuse_targets(item, f"{path}[{i}]", source)


def parse(kind: Any, value: Any, path: str, source: str = "config") -> Any:
    """``value`` checked against the type ``kind`` (a schema dataclass, ``list[X]``, ``dict[str, X]``,
    ``X | None``, ``int``...); a ``ConfigError`` names ``path``."""
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return parse(option, value, path, source)
            except ConfigError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        raise _type_error(kind, value, path, source)
    if dataclasses.is_dataclass(kind):
        return _parse_dataclass(kind, value, path, source)
    if origin is list or kind is list:
        if not isinstance(value, (list, tuple)):
            raise _type_error(kind, value, path, source)
        (item,) = typing.get_args(kind) or (Any,)
        return [parse(item, v, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise _type_error(kind, value, path, source)
        _, item = typing.get_args(kind) or (str, Any)
        for key in value:
            if not isinstance(key, str):
                raise ConfigError(f"{source}: {path} has a key {key!r} of type {type(key).__name__}; keys are strings")
        return {k: parse(item, v, f"{path}.{k}", source) for k, v in value.items()}
    if kind is Any:
        return value
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{source}: {path}={value!r} must be a finite number")
            return float(value)
        raise _type_error(kind, value, path, source)
    if kind is int and isinstance(value, bool):
        raise _type_error(kind, value, path, source)
    if isinstance(value, kind):
        return value
    raise _type_error(kind, value, path, source)


def _parse_dataclass(kind: type, value: Any, path: str, source: str) -> Any:
    label = path or "the top level"
    if not isinstance(value, dict):
        raise ConfigError(
            f"{source}: {label} must be a mapping of {kind.__name__} keys ({', '.join(_names(kind))}), "
            f"got {type(value).__name__} {_short(value)}"
        )
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = [key for key in value if key not in fields]
    if unknown:
        where = f"{path} has" if path else "the config has"
        problems = []
        for key in unknown:
            legacy = LEGACY_KEYS.get((kind.__name__, key))
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f": {legacy}" if legacy else f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{where} no key {key!r}{hint}")
        raise ConfigError(f"{source}: {'; '.join(problems)} (keys: {', '.join(fields)})")
    hints = typing.get_type_hints(kind)
    built = {}
    for name, f in fields.items():
        child = f"{path}.{name}" if path else name
        if name not in value:
            if f.default is REQUIRED and f.default_factory is REQUIRED:
                raise ConfigError(f"{source}: {child} is required: {f.metadata['help']}")
            continue
        built[name] = parse(hints[name], value[name], child, source)
        choices = f.metadata.get("choices")
        if choices and built[name] not in choices:
            allowed = ", ".join("null" if c is None else str(c) for c in choices)
            raise ConfigError(f"{source}: {child}={built[name]!r} is not allowed; expected one of {allowed}")
    return kind(**built)


def _names(kind: type) -> list[str]:
    return [f.name for f in dataclasses.fields(kind)]


def _type_error(kind: Any, value: Any, path: str, source: str) -> ConfigError:
    return ConfigError(f"{source}: {path}={_short(value)} has type {type(value).__name__}; expected {_describe(kind)}")


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    if kind is type(None):
        return "null"
    if dataclasses.is_dataclass(kind):
        return f"a mapping with keys {', '.join(_names(kind))}"
    if origin is list or kind is list:
        args = typing.get_args(kind)
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict or kind is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(kind: type = ExperimentConfig, prefix: str = "") -> str:
    """Every key of the schema with its default and help, one per line (``trainforge config schema``)."""
    lines = []
    hints = typing.get_type_hints(kind)
    for f in dataclasses.fields(kind):
        key = f"{prefix}{f.name}"
        inner = _inner_dataclass(hints[f.name])
        if f.default is not REQUIRED:
            default = repr(f.default)
        elif f.default_factory is not REQUIRED:
            default = "" if inner else repr(f.default_factory())
        else:
            default = "(required)"
        lines.append(f"{key}: {default}  # {f.metadata['help']}".replace(":   #", ":  #"))
        if inner is not None:
            lines.append(describe(inner, f"{key}{'[]' if _is_list(hints[f.name]) else ''}.").rstrip())
    return "\n".join(lines) + "\n"


def _inner_dataclass(kind: Any) -> type | None:
    for arg in (kind, *typing.get_args(kind)):
        if dataclasses.is_dataclass(arg):
            return arg
        for sub in typing.get_args(arg):
            if dataclasses.is_dataclass(sub):
                return sub
    return None


def _is_list(kind: Any) -> bool:
    return any(typing.get_origin(a) is list for a in (kind, *typing.get_args(kind)))
