"""``TrainingConfig``: every Trainer setting in one typed dataclass, each field with its default and
help text in one place; YAML round-trip and validation with errors that name the key."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

PRECISIONS = ("32", "16-mixed", "bf16-mixed")
EVAL_STRATEGIES = ("epoch", "steps", "no")
NON_FINITE_POLICIES = ("raise", "skip")


def _field(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    meta = {"help": help, "choices": choices}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainingConfig:
    """Settings of a ``Trainer`` run. Every field has a default; ``help(TrainingConfig)`` or
    ``trainforge config defaults`` lists them with their help text.

    >>> cfg = TrainingConfig(max_epochs=3, lr=0.01)
    >>> TrainingConfig.from_yaml_string(cfg.to_yaml()) == cfg
    True
    >>> TrainingConfig.from_dict({"max_epoch": 3})
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: TrainingConfig has no key 'max_epoch'; did you mean 'max_epochs'?
    """

    # -- run and output ----------------------------------------------------------------------------
    output_dir: str | None = _field(None, "run folder; None: runs/<experiment_name>/<timestamp>")
    experiment_name: str = _field("default", "name of the experiment, used in the default run folder")
    overwrite: bool = _field(
        False,
        "start a fresh run in an output_dir that holds another run: its checkpoints, metrics, logs and report are "
        "moved into <output_dir>/overwritten-<time>/ (nothing is deleted); False: such a run is refused",
    )
    seed: int = _field(42, "seed of every random generator (python, numpy, torch, data order, augmentation)")
    deterministic: bool = _field(False, "torch.use_deterministic_algorithms(True) and cudnn deterministic")
    # -- data ----------------------------------------------------------------------------------
    data_path: str | None = _field(None, "folder of the data set, for trainers that read one")
    image_size: int | None = _field(None, "side of the square images the model expects, for trainers that resize")
    batch_size: int = _field(32, "training batch size per process")
    eval_batch_size: int | None = _field(None, "evaluation batch size; None: batch_size")
    num_workers: int = _field(0, "DataLoader worker processes")
    pin_memory: bool = _field(True, "pin host memory for faster copies (used only on CUDA)")
    drop_last: bool = _field(False, "drop the last partial training batch (evaluation never drops samples)")
    persistent_workers: bool = _field(False, "keep DataLoader workers alive between epochs")
    data_timeout: float = _field(60.0, "seconds a worker may take for one batch before the run fails (0: none)")
    # -- schedule ------------------------------------------------------------------------------
    max_epochs: int = _field(10, "number of training epochs in total (a resumed run continues to it)")
    eval_strategy: str = _field("epoch", "when to evaluate: every epoch, every eval_steps, or no", EVAL_STRATEGIES)
    eval_steps: int | None = _field(None, "evaluate every this many training steps (eval_strategy='steps')")
    # -- optimization ----------------------------------------------------------------------------
    loss: str = _field("CrossEntropyLoss", "loss by name: any torch.nn loss or a registered trainforge loss")
    loss_params: dict = _field({}, "keyword arguments of the loss")
    optimizer: str = _field("AdamW", "optimizer by name: any torch.optim or timm optimizer")
    optimizer_params: dict = _field({}, "extra keyword arguments of the optimizer (betas, momentum, ...)")
    lr: float = _field(1e-3, "learning rate (peak learning rate when warming up)")
    weight_decay: float = _field(0.0, "weight decay of the optimizer")
    scheduler: str | None = _field(
        "cosine", "lr schedule: constant, linear, cosine, polynomial, or a torch.optim.lr_scheduler class name"
    )
    scheduler_params: dict = _field({}, "keyword arguments of the schedule (e.g. power, min_lr_ratio, step_size)")
    scheduler_interval: str = _field("step", "step the schedule every optimizer step or every epoch", ("step", "epoch"))
    warmup_steps: int = _field(0, "linear warmup length in optimizer steps")
    warmup_ratio: float = _field(0.0, "linear warmup length as a fraction of all optimizer steps")
    accumulate_grad_batches: int = _field(1, "sum gradients over this many batches per optimizer step")
    gradient_clip_val: float | None = _field(None, "clip the global gradient norm to this value (None: no clip)")
    gradient_clip_algorithm: str = _field(
        "norm", "how gradient_clip_val clips (Lightning's): norm (the global L2 norm, clip_grad_norm_) or value "
        "(each gradient element into [-val, val], clip_grad_value_)", ("norm", "value"),
    )
    ema_decay: float | None = _field(None, "keep an exponential moving average of the weights; eval uses it")
    freeze_batchnorm: bool = _field(False, "keep BatchNorm layers in eval mode with frozen parameters")
    # -- hardware and speed -----------------------------------------------------------------------
    device: str | None = _field(None, "None: first GPU else CPU; 'cpu'; 'cuda:N'; 'cuda': all GPUs (distributed)")
    precision: str = _field("32", "32, 16-mixed (fp16 autocast + GradScaler) or bf16-mixed", PRECISIONS)
    compile: bool = _field(False, "torch.compile the model")
    channels_last: bool = _field(False, "use channels_last memory format for the model and image batches")
    # -- metrics, logging, checkpoints ------------------------------------------------------------
    metrics: list = _field(["Accuracy"], "torchmetrics by name, or dicts {name, params, mapping, phases}")
    print_steps: int | None = _field(None, "print one line every this many steps; None: a progress bar per epoch")
    progress_bar: bool = _field(
        True, "a live bar per epoch when print_steps is None (on a terminal; lines every log_every_n_steps otherwise)"
    )
    log_every_n_steps: int = _field(50, "write training metrics to the logs every this many steps")
    tensorboard: bool | dict | None = _field(
        True,
        "write TensorBoard event files into <run>/tensorboard; {'log_dir': DIR} for another folder (relative: "
        "inside the run folder); False or None: off",
    )
    report: bool = _field(True, "write the HTML run report into <run>/report at the end of fit")
    checkpoint: dict | None = _field(
        {"monitor": None, "mode": "min", "save_top_k": 1, "save_last": True, "every_n_epochs": 1},
        "checkpoint policy (ModelCheckpoint arguments); None disables checkpoints",
    )
    early_stopping: dict | None = _field(
        None, "EarlyStopping arguments {monitor, mode, patience, min_delta, baseline}; None disables it"
    )
    load_best_model_at_end: bool = _field(False, "after fit, load the best checkpoint's weights (needs monitor)")
    non_finite: str = _field("raise", "on a NaN/inf loss: raise an error, or skip that batch", NON_FINITE_POLICIES)
    # -- fine-tuning -------------------------------------------------------------------------------
    load_checkpoint: dict | None = _field(
        None,
        "pretrained weights (TorchOk's load_checkpoint): {base_path, overrides: {module prefix: path}, exclude_keys, "
        "strict, relative}; loaded at setup before the optimizer exists, never on top of a resumed run",
    )

    def __post_init__(self) -> None:
        self.validate()

    # -- validation ------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check types, choices and ranges; raise ``ConfigError`` naming the key."""
        hints = typing.get_type_hints(type(self))
        ours = _PRECISION_SPELLINGS.get(str(self.precision).lower())
        if ours is not None and self.precision != ours:
            raise ConfigError(f"precision={self.precision!r} is another framework's spelling; use {ours!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, hints[f.name])
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"{f.name}={value!r} is not allowed; expected one of {', '.join(choices)}")
        from .run_folder import check_component, check_name_template  # path rules live with the run folder

        check_component("experiment_name", self.experiment_name)  # runs/<experiment_name>/...: one name
        if isinstance(self.checkpoint, dict) and "filename" in self.checkpoint:
            from .config_check import check_filename_template

            check_filename_template(self.checkpoint["filename"])  # placeholders first, with the close match
            check_name_template("checkpoint.filename", self.checkpoint["filename"])
        for key in ("batch_size", "max_epochs", "accumulate_grad_batches", "log_every_n_steps", "eval_batch_size",
                    "eval_steps", "print_steps", "image_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("num_workers", "warmup_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be in [0, 2**63), got {self.seed}")
        if not (math.isfinite(self.data_timeout) and self.data_timeout >= 0):
            raise ConfigError(f"data_timeout must be >= 0 seconds (0: no limit), got {self.data_timeout}")
        if not (math.isfinite(self.lr) and self.lr >= 0):  # lr=0 is allowed, as torch allows it (a frozen probe)
            raise ConfigError(f"lr must be a finite number >= 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.eval_strategy == "steps" and not self.eval_steps:
            raise ConfigError("eval_strategy='steps' needs eval_steps, a positive number of training steps")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.gradient_clip_val is not None and not self.gradient_clip_val > 0:
            raise ConfigError(f"gradient_clip_val must be positive or None, got {self.gradient_clip_val}")
        if self.load_checkpoint is not None:
            from .pretrained import check_load_checkpoint_options  # late: keeps this module free of torch

            check_load_checkpoint_options(self.load_checkpoint)
        _check_tensorboard(self.tensorboard)
        if self.checkpoint is not None or self.early_stopping is not None:
            from .config_check import check_callback_options  # late: keeps this module free of torch

            check_callback_options(self)
        if self.load_best_model_at_end and not (self.checkpoint or {}).get("monitor"):
            raise ConfigError(
                "load_best_model_at_end needs checkpoint.monitor, e.g. checkpoint={'monitor': 'valid/loss'}"
            )

    # -- dict / YAML -----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "TrainingConfig") -> TrainingConfig:
        """Build from a mapping; unknown keys raise with close-match suggestions and, for the names other
        frameworks use (``epoch_num``, ``num_epochs``, ``learning_rate``...), our spelling. Towhee's
        sectioned YAML layout (``train:``, ``learning:``, ``callback:``...) is read too; every key it has that
        we do not is named in one error."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        layout, flat = _towhee_layout(values, names)
        if layout is not None:
            _check_towhee_keys(cls, flat, names, source, layout)
            values = {key.rsplit(".", 1)[-1]: value for key, value in flat.items()}
        unknown = [key for key in values if key not in names]
        if unknown:
            raise ConfigError(_unknown_keys_message(unknown, names, source))
        try:
            return cls(**values)
        except ConfigError as error:
            if source == cls.__name__:
                raise
            raise ConfigError(f"{source}: {error}") from None  # name the file the bad value came from

    @classmethod
    def load_from_yaml(cls, path: str | Path) -> TrainingConfig:
        """Towhee's name for ``from_yaml``: reads our flat layout and Towhee's sectioned one."""
        return cls.from_yaml(path)

    def save_to_yaml(self, path: str | Path) -> None:
        """Towhee's name for ``save_yaml``."""
        self.save_yaml(path)

    def tensorboard_dir(self, run_dir: str | Path) -> Path | None:
        """The TensorBoard folder of a run in ``run_dir``, or None when TensorBoard is off.

        >>> TrainingConfig(tensorboard={"log_dir": "tb"}).tensorboard_dir("runs/a")
        PosixPath('runs/a/tb')
        >>> TrainingConfig().tensorboard_dir("runs/a"), TrainingConfig(tensorboard=None).tensorboard_dir("runs/a")
        (PosixPath('runs/a/tensorboard'), None)
        """
        value = self.tensorboard
        if value is None or value is False:
            return None
        log_dir = value.get("log_dir") if isinstance(value, dict) else None
        return Path(run_dir) / (log_dir if log_dir is not None else "tensorboard")  # an absolute log_dir wins

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        from .yaml_io import dump_yaml

        return dump_yaml(self.to_dict())

    @classmethod
    def from_yaml_string(cls, text: str, source: str = "<string>") -> TrainingConfig:
        """Parse YAML text with the safe loader (``trainforge.yaml_io``: YAML 1.2 numbers, no duplicate keys)."""
        from .yaml_io import load_yaml_text

        values = load_yaml_text(text, source=source)
        return cls.from_dict(_settings_or_error(values, source), source=source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainingConfig:
        """Read a YAML file of settings (errors name the file, the line and the key)."""
        from .yaml_io import load_yaml

        values = load_yaml(path)
        return cls.from_dict(_settings_or_error(values, str(path)), source=str(path))

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    @classmethod
    def describe(cls) -> str:
        """One line per field: name, type, default and help (``trainforge config defaults``)."""
        lines = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            choices = f.metadata.get("choices")
            extra = f" (one of: {', '.join(choices)})" if choices else ""
            lines.append(f"{f.name}: {default!r}\n    {f.metadata['help']}{extra}")
        return "\n".join(lines)


def _settings_or_error(values: Any, source: str) -> Any:
    """An empty document (an empty file, or only comments) is an error, not a run on every default:
    it is more often the wrong file or a truncated one than a choice.

    >>> _settings_or_error(None, "train.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: train.yaml holds no settings (it is empty or only comments); ...
    """
    if values is None:
        raise ConfigError(
            f"{source} holds no settings (it is empty or only comments); write the ones to change, e.g. "
            "'max_epochs: 10', or use TrainingConfig() for every default"
        )
    return values


#: Keys other frameworks' users write, with ours: key -> (our key or None, whose name it is, how to say it).
FOREIGN_KEYS: dict[str, tuple[str | None, str, str | None]] = {
    "epoch_num": ("max_epochs", "Towhee's", None),
    "val_batch_size": ("eval_batch_size", "Towhee's", None),
    "per_gpu_train_batch_size": ("batch_size", "Towhee's", None),
    "per_gpu_eval_batch_size": ("eval_batch_size", "Towhee's", None),
    "dataloader_drop_last": ("drop_last", "Towhee's", None),
    "dataloader_num_workers": ("num_workers", "Towhee's", None),
    "dataloader_pin_memory": ("pin_memory", "Towhee's", None),
    "gradient_accumulation_num": ("accumulate_grad_batches", "Towhee's", None),
    "device_str": ("device", "Towhee's", None),
    "n_gpu": ("device", "Towhee's", "use device='cuda' (every GPU), 'cuda:N' (one) or 'cpu'"),
    "freeze_bn": ("freeze_batchnorm", "Towhee's", None),
    "metric": ("metrics", "Towhee's", "use 'metrics', a list: metrics=['Accuracy']"),
    "lr_scheduler_type": ("scheduler", "Towhee's", None),
    "model_checkpoint": ("checkpoint", "Towhee's", None),
    "max_norm_grad": ("gradient_clip_val", "Towhee's", None),
    "overwrite_output_dir": ("overwrite", "Towhee's", None),
    "logging_dir": ("tensorboard", "Towhee's", "use tensorboard={'log_dir': DIR}"),
    "logging_steps": ("log_every_n_steps", "Towhee's and Hugging Face's", None),
    "resume_from_checkpoint": (None, "Towhee's and Hugging Face's", "pass resume_from=PATH to Trainer.fit"),
    "use_adafactor": ("optimizer", "Towhee's", "use optimizer='adafactor'"),
    "adam_beta1": ("optimizer_params", "Towhee's and Hugging Face's", "use optimizer_params={'betas': [b1, b2]}"),
    "adam_beta2": ("optimizer_params", "Towhee's and Hugging Face's", "use optimizer_params={'betas': [b1, b2]}"),
    "adam_epsilon": ("optimizer_params", "Towhee's and Hugging Face's", "use optimizer_params={'eps': ...}"),
    "call_back_list": (None, "Towhee's", "pass callbacks=[...] to Trainer"),
    "logging_strategy": ("log_every_n_steps", "Towhee's and Hugging Face's",
                         "metrics are logged every log_every_n_steps steps and at each epoch end"),
    "saving_strategy": ("checkpoint", "Towhee's", "use checkpoint={'every_n_epochs': N} or {'every_n_steps': N}"),
    "saving_steps": ("checkpoint", "Towhee's", "use checkpoint={'every_n_steps': N}"),
    "saving_total_limit": ("checkpoint", "Towhee's", "use checkpoint={'save_top_k': N}"),
    "greater_is_better": ("checkpoint", "Towhee's", "use checkpoint={'mode': 'max'}"),
    "report_to": (None, "Towhee's and Hugging Face's", "pass loggers in callbacks=[...] (TensorBoard is on)"),
    "disable_tqdm": ("progress_bar", "Towhee's", "use progress_bar=False"),
    "no_cuda": ("device", "Towhee's", "use device='cpu'"),
    "num_epochs": ("max_epochs", "Kornia's", None),
    "output_path": ("output_dir", "Kornia's", None),
    "seed_params": ("seed", "TorchOk's", "use seed=N (DataLoader workers are always seeded from it)"),
    "max_steps": ("max_epochs", "Lightning's and Towhee's", "trainforge trains whole epochs: use 'max_epochs'"),
    "val_check_interval": ("eval_steps", "Lightning's", "use eval_strategy='steps' with eval_steps=N"),
    "check_val_every_n_epoch": ("eval_strategy", "Lightning's", "use eval_strategy='epoch' or 'steps' with eval_steps"),
    "gpus": ("device", "Lightning's", "use device='cuda' (every GPU), 'cuda:N' (one) or 'cpu'"),
    "devices": ("device", "Lightning's", "use device='cuda' (every GPU), 'cuda:N' (one) or 'cpu'"),
    "accelerator": ("device", "Lightning's", "use device='cuda', 'cuda:N' or 'cpu'"),
    "enable_progress_bar": ("progress_bar", "Lightning's", None),
    "enable_checkpointing": ("checkpoint", "Lightning's", "checkpoint=None turns checkpoints off"),
    "default_root_dir": ("output_dir", "Lightning's", None),
    "learning_rate": ("lr", "Lightning's and Hugging Face's", None),
    "num_train_epochs": ("max_epochs", "Hugging Face's", None),
    "gradient_accumulation_steps": ("accumulate_grad_batches", "Hugging Face's", None),
    "per_device_train_batch_size": ("batch_size", "Hugging Face's", None),
    "per_device_eval_batch_size": ("eval_batch_size", "Hugging Face's", None),
    "evaluation_strategy": ("eval_strategy", "Hugging Face's", None),
    "max_grad_norm": ("gradient_clip_val", "Hugging Face's", None),
    "fp16": ("precision", "Hugging Face's", "use precision='16-mixed'"),
    "bf16": ("precision", "Hugging Face's", "use precision='bf16-mixed'"),
    "amp": ("precision", "timm's", "use precision='16-mixed' or 'bf16-mixed'"),
    "epochs": ("max_epochs", "Keras's and timm's", None),
    "sched": ("scheduler", "timm's", None),
    "lr_scheduler": ("scheduler", "Lightning's", None),
    "workers": ("num_workers", "timm's", None),
    "warmup_epochs": ("warmup_steps", "timm's", "use warmup_steps (optimizer steps) or warmup_ratio"),
}

#: Lightning's and timm's precision spellings, with ours.
_PRECISION_SPELLINGS = {"16": "16-mixed", "fp16": "16-mixed", "16-true": "16-mixed", "amp": "16-mixed",
                        "bf16": "bf16-mixed", "bf16-true": "bf16-mixed", "32-true": "32", "fp32": "32", "32": "32"}

#: Towhee's YAML sections (``TrainingConfig.save_to_yaml`` writes its settings under these).
TOWHEE_SECTIONS = ("train", "learning", "callback", "device", "logging", "metrics")


def _key_hint(key: Any, names: list[str]) -> str:
    """What to say after "has no key K": the framework it comes from and our spelling, or a close match."""
    entry = FOREIGN_KEYS.get(str(key))
    if entry is not None:
        ours, whose, how = entry
        if how is None and ours not in names:
            how = "trainforge has no such setting"
        return f" ({whose} name); {how or f'use {ours!r}'}"
    close = difflib.get_close_matches(str(key), names, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_keys_message(keys: list[Any], names: list[str], source: str) -> str:
    if len(keys) == 1:
        hint = _key_hint(keys[0], names) or f"; valid keys: {', '.join(names)}"
        return f"{source} has no key {keys[0]!r}{hint}"
    lines = [f"- {key!r}{_key_hint(key, names) or ': no such setting'}" for key in keys]
    return f"{source} has no keys {', '.join(repr(k) for k in keys)}:\n" + "\n".join(lines) + (
        "\n(trainforge config defaults lists every setting)"
    )


def _checked_init(init: Any) -> Any:
    """The dataclass ``__init__`` with the unknown-key help of ``from_dict`` first, instead of Python's bare
    ``TypeError: unexpected keyword argument``."""

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        names = [f.name for f in dataclasses.fields(self)]
        unknown = [key for key in kwargs if key not in names]
        if unknown:
            raise ConfigError(_unknown_keys_message(unknown, names, type(self).__name__))
        init(self, *args, **kwargs)

    return __init__


TrainingConfig.__init__ = _checked_init(TrainingConfig.__init__)  # type: ignore[method-assign]


def _towhee_layout(values: dict[str, Any], names: list[str]) -> tuple[str | None, dict[str, Any]]:
    """``(layout, {"section.key": value})`` when ``values`` is Towhee's sectioned layout: "sections" (keys
    under section names) or "old" (keys under ``section.args``); ``(None, {})`` for our flat layout."""
    if not values or not all(k in TOWHEE_SECTIONS and isinstance(v, (dict, type(None))) for k, v in values.items()):
        return None, {}
    if all(k in names for k in values) and not any(isinstance(v, dict) and "args" in v for v in values.values()):
        return None, {}  # e.g. {"device": None, "metrics": None}: our own keys
    old = any(isinstance(v, dict) and set(v) == {"args"} for v in values.values())
    flat: dict[str, Any] = {}
    for section, content in values.items():
        if old and isinstance(content, dict) and set(content) == {"args"}:
            section, content = f"{section}.args", content["args"]
        for key, value in (content or {}).items():
            flat[f"{section}.{key}"] = value
    return ("old" if old else "sections"), flat


def _check_towhee_keys(cls: type, flat: dict[str, Any], names: list[str], source: str, layout: str) -> None:
    """One error naming every key of a Towhee layout that we do not have (with our spelling) and every
    known key with a value of the wrong type; the old ``section.args`` layout is always an error."""
    hints = typing.get_type_hints(cls)
    problems = []
    for path, value in flat.items():
        key = path.rsplit(".", 1)[-1]
        if key not in names:
            problems.append(f"- {path}{_key_hint(key, names) or ': trainforge has no such setting'}")
            continue
        try:
            _check_type(key, value, hints[key])
            if key == "tensorboard":
                _check_tensorboard(value)
        except ConfigError as error:
            named = " (write the name as a string and the arguments in <key>_params)" if (
                isinstance(value, dict) and "name_" in value) else ""
            problems.append(f"- {path}: {error}{named}")
    if layout == "old":
        problems.insert(0, "- this is Towhee's old layout (settings under '<section>.args'); trainforge reads "
                           "one flat mapping of its own setting names")
    if problems:
        raise ConfigError(
            f"{source} is a Towhee config; fix these keys (trainforge config defaults lists every setting):\n"
            + "\n".join(problems)
        )


def _check_tensorboard(value: Any) -> None:
    if not isinstance(value, dict):
        return
    unknown = sorted(set(value) - {"log_dir"})
    if unknown:
        raise ConfigError(
            f"tensorboard has no key(s) {unknown}; accepted: log_dir (e.g. tensorboard={{'log_dir': 'tb'}})"
        )
    log_dir = value.get("log_dir")
    if log_dir is None:
        return
    if not isinstance(log_dir, str) or not log_dir.strip():
        raise ConfigError(f"tensorboard.log_dir={log_dir!r}: expected a folder path (a non-empty string) or None")
    path = Path(log_dir)
    if not path.is_absolute() and ".." in path.parts:
        raise ConfigError(
            f"tensorboard.log_dir={log_dir!r} leaves the run folder: a relative log_dir stays inside it; "
            "give an absolute path to write elsewhere"
        )


def _check_type(name: str, value: Any, hint: Any) -> None:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in allowed:
        if kind is type(None):
            if value is None:
                return
            continue
        kind = typing.get_origin(kind) or kind
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if kind is int and isinstance(value, bool):
            continue
        if isinstance(value, kind):
            return
    expected = " or ".join("None" if k is type(None) else getattr(k, "__name__", str(k)) for k in allowed)
    hint = " (YAML writes None as null or ~)" if value in ("None", "none") and type(None) in allowed else ""
    raise ConfigError(f"{name}={value!r} has type {type(value).__name__}; expected {expected}{hint}")
