"""``TrainingConfig``: every Trainer setting in one typed dataclass, each field with its default and
help text in one place; YAML round-trip and validation with errors that name the key."""

from __future__ import annotations

import dataclasses
import difflib
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
    tensorboard: bool = _field(True, "write TensorBoard event files into <run>/tensorboard")
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
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, hints[f.name])
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"{f.name}={value!r} is not allowed; expected one of {', '.join(choices)}")
        from .run_folder import check_component, check_name_template  # path rules live with the run folder

        check_component("experiment_name", self.experiment_name)  # runs/<experiment_name>/...: one name
        if isinstance(self.checkpoint, dict) and "filename" in self.checkpoint:
            check_name_template("checkpoint.filename", self.checkpoint["filename"])
        for key in ("batch_size", "max_epochs", "accumulate_grad_batches", "log_every_n_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("num_workers", "warmup_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive finite number, got {self.lr}")
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
        if self.load_best_model_at_end and not (self.checkpoint or {}).get("monitor"):
            raise ConfigError(
                "load_best_model_at_end needs checkpoint.monitor, e.g. checkpoint={'monitor': 'valid/loss'}"
            )

    # -- dict / YAML -----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "TrainingConfig") -> TrainingConfig:
        """Build from a mapping; unknown keys raise with close-match suggestions."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
                raise ConfigError(f"{source} has no key {key!r}{hint}")
        return cls(**values)

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
        return cls.from_dict({} if values is None else values, source=source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainingConfig:
        """Read a YAML file of settings (errors name the file, the line and the key)."""
        from .yaml_io import load_yaml

        values = load_yaml(path)
        return cls.from_dict({} if values is None else values, source=str(path))

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
    raise ConfigError(f"{name}={value!r} has type {type(value).__name__}; expected {expected}")
