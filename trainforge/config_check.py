"""Checks that run before training, in one place: ``check_config`` (every name, nested key and monitor
of a ``TrainingConfig``; ``trainforge config check`` and ``Trainer.setup`` both run it) and the Trainer's
set-up checks (the data, the first batch against the model and the loss, a resumed optimizer)."""

from __future__ import annotations

import difflib
import math
import string
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .registry import check_params
from .training_config import TrainingConfig

#: Placeholders a checkpoint ``filename`` template may use (``ModelCheckpoint`` fills them).
FILENAME_FIELDS: dict[str, Any] = {"epoch": 1, "step": 1, "score": 0.5}

#: Metric names other frameworks log, with ours (``<metric>``: the first configured metric).
FOREIGN_MONITORS: dict[str, str] = {
    "eval_epoch_metric": "valid/<metric>",  # Towhee
    "eval_epoch_loss": "valid/loss",
    "epoch_metric": "train/<metric>",
    "epoch_loss": "train/loss",
    "val_loss": "valid/loss",  # Lightning, Keras
    "val_acc": "valid/accuracy",
    "val_accuracy": "valid/accuracy",
    "loss": "train/loss",
}


# -- the config alone: names, nested keys, monitors ---------------------------------------------------
def check_callback_options(config: TrainingConfig) -> None:
    """Keys and values of ``checkpoint`` and ``early_stopping``, checked against ``ModelCheckpoint`` and
    ``EarlyStopping`` (run by ``TrainingConfig.validate``).

    >>> TrainingConfig(checkpoint={"monitr": "valid/loss"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: checkpoint has no key 'monitr'; did you mean 'monitor'? ...
    """
    from .callbacks.checkpoint import ModelCheckpoint
    from .callbacks.early_stopping import EarlyStopping

    if config.checkpoint is not None:
        options = dict(config.checkpoint)
        if "dirpath" in options:
            raise ConfigError(
                "checkpoint.dirpath is set by the trainer (<run folder>/checkpoints); remove it and set "
                "output_dir to choose the run folder"
            )
        check_params(ModelCheckpoint, options, "checkpoint")
        _construct("checkpoint", lambda: ModelCheckpoint("checkpoints", **options))
    if config.early_stopping:
        options = dict(config.early_stopping)
        check_params(EarlyStopping, options, "early_stopping")
        if "monitor" not in options:
            raise ConfigError(
                "early_stopping needs a monitor, e.g. early_stopping={'monitor': 'valid/loss', 'patience': 3}"
            )
        _construct("early_stopping", lambda: EarlyStopping(**options))


def _construct(where: str, make: Any) -> Any:
    try:
        return make()
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    except TypeError as error:  # e.g. patience='3': a comparison of str with int
        raise ConfigError(f"{where}: a value has the wrong type ({error})") from None
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def check_filename_template(template: Any) -> None:
    """A checkpoint ``filename`` must be a ``str.format`` template of ``{epoch}``, ``{step}`` and
    ``{score}``; an unknown placeholder gets the close match.

    >>> check_filename_template("ep{epoch:02d}-{score:.3f}")
    >>> check_filename_template("ep{epoch}-{stepp}")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: checkpoint.filename='ep{epoch}-{stepp}' has a placeholder {stepp}; did you mean ...
    """
    where = f"checkpoint.filename={template!r}"
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(f"{where}: expected a non-empty template such as 'epoch{{epoch:03d}}-step{{step:06d}}'")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ConfigError(f"{where} is not a valid template: {error} (write a literal brace as '{{{{')") from None
    for name in fields:
        root = name.split(".")[0].split("[")[0]
        if root not in FILENAME_FIELDS:
            close = difflib.get_close_matches(root, list(FILENAME_FIELDS), n=1)
            hint = f"; did you mean {{{close[0]}}}?" if close else ""
            raise ConfigError(
                f"{where} has a placeholder {{{name}}}{hint} Placeholders: {{epoch}}, {{step}}, {{score}}"
            )
    try:
        template.format(**FILENAME_FIELDS)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise ConfigError(f"{where} cannot be filled: {error}") from None
    # that the name is one plain folder name is trainforge.run_folder.check_name_template's rule


def check_config(
    config: TrainingConfig,
    *,
    valid_loaders: list[str | None] | None = None,
    criterion_given: bool = False,
    optimizer_given: bool = False,
    scheduler_given: bool = False,
    check_monitors: bool = True,
) -> None:
    """Every check of ``config`` that needs no data or model: ranges and types (``validate``), nested keys
    of ``checkpoint``/``early_stopping`` and the checkpoint file-name template, the optimizer, scheduler,
    loss and metric names and their arguments, and the monitored metric names. ``trainforge config check``
    runs it; ``Trainer.setup`` runs it too, before the run folder exists, skipping what the trainer was
    given as an object (``criterion_given``...). ``valid_loaders``: the names of the validation loaders
    (``None`` for the main one); ``None``: assume one validation set.

    >>> check_config(TrainingConfig(optimizer="Adamm"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.RegistryError: unknown optimizer 'Adamm'. Close matches: adam, ...
    >>> check_config(TrainingConfig(checkpoint={"monitor": "valid/acuracy"}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: checkpoint.monitor='valid/acuracy' is not a metric this run logs; did you mean ...
    """
    config.validate()  # a config changed after construction is checked again
    if not optimizer_given:
        _check_optimizer(config)
    if not scheduler_given and config.scheduler is not None and not optimizer_given:
        _check_scheduler(config)
    if not criterion_given:
        from .losses import build_loss

        build_loss(config.loss, **config.loss_params)
    specs = _check_metrics(config.metrics)
    if check_monitors:
        names = monitor_names(config, specs, [None] if valid_loaders is None else valid_loaders)
        for where, options in (("checkpoint", config.checkpoint), ("early_stopping", config.early_stopping)):
            monitor = (options or {}).get("monitor")
            if monitor is not None:
                check_monitor(f"{where}.monitor", monitor, names, specs)


def _probe_parameters() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(2, 2))]


def _check_optimizer(config: TrainingConfig) -> Any:
    from .optim import build_optimizer

    return build_optimizer(
        config.optimizer, _probe_parameters(), lr=config.lr, weight_decay=config.weight_decay,
        **config.optimizer_params,
    )


def _check_scheduler(config: TrainingConfig) -> None:
    from .optim import build_scheduler

    optimizer = torch.optim.SGD(_probe_parameters(), lr=max(config.lr, 1e-3))
    total = max(1_000_000, config.warmup_steps)  # the real count needs the data; any large one checks the rest
    if config.scheduler_interval == "epoch":
        total = max(config.max_epochs, config.warmup_steps)
    build_scheduler(
        config.scheduler, optimizer, total_steps=total, warmup_steps=config.warmup_steps,
        warmup_ratio=config.warmup_ratio, **config.scheduler_params,
    )


def _check_metrics(metrics: Any) -> list[Any]:
    """Each metric built once with its params (torchmetrics checks them in ``__init__``); the number of
    classes comes from the model's output at training time, so a large stand-in is used here."""
    import warnings

    from .metrics.build import find_metric_class, resolve_params
    from .metrics.manager import MetricSpec

    if isinstance(metrics, (str, Mapping)):
        metrics = [metrics]
    specs = []
    for index, spec in enumerate(metrics):
        spec = MetricSpec.parse({"name": spec} if isinstance(spec, str) else spec, index)
        cls = find_metric_class(spec.name)
        check_params(cls, spec.params, f"metrics[{index}].params")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a top_k clamped to the stand-in class count
            _construct(f"metrics[{index}] ({spec.name})",
                       lambda cls=cls, params=spec.params: cls(**resolve_params(cls, params, 1000)))
        specs.append(spec)
    return specs


def monitor_names(config: TrainingConfig, specs: list[Any], valid_loaders: list[str | None]) -> list[str]:
    """The metric names a run with ``config`` logs: ``train/loss``, ``lr``, ``<phase>/<metric>`` for each
    configured metric, and ``valid/loss`` (``valid_<name>/...`` for named extra loaders) when it evaluates.

    >>> from trainforge.metrics.manager import MetricSpec
    >>> monitor_names(TrainingConfig(), [MetricSpec("F1Score")], [None, "noisy"])
    ['train/loss', 'lr', 'train/f1_score', 'valid/loss', 'valid/f1_score', 'valid_noisy/loss', 'valid_noisy/f1_score']
    """
    from .metrics.manager import phase_prefix

    names = ["train/loss", "lr"] + [f"train/{s.display_name}" for s in specs if "TRAIN" in s.phases]
    if config.eval_strategy != "no":
        for loader in valid_loaders:
            prefix = phase_prefix("VALID", loader)
            names += [f"{prefix}/loss"] + [f"{prefix}/{s.display_name}" for s in specs if "VALID" in s.phases]
    return names


def check_monitor(where: str, monitor: Any, names: list[str], specs: list[Any] | None = None) -> None:
    """``monitor`` must be one of ``names`` (or a key of a dict-valued metric, ``name/<key>``); otherwise a
    ``ConfigError`` with the close match, or ours for another framework's name (Towhee's ``eval_epoch_loss``).

    >>> check_monitor("checkpoint.monitor", "eval_epoch_loss", ["train/loss", "valid/loss"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: checkpoint.monitor='eval_epoch_loss' ... name); use 'valid/loss' (it logs: ...
    """
    if not isinstance(monitor, str):
        raise ConfigError(f"{where}={monitor!r}: expected a metric name such as 'valid/loss'")
    if monitor in names or any(monitor.startswith(f"{name}/") for name in names):
        return
    foreign = FOREIGN_MONITORS.get(monitor)
    if foreign is not None:
        first = specs[0].display_name if specs else "loss"
        ours = foreign.replace("<metric>", first)
        hint = f" (another framework's name); use {ours!r}" if ours in names else f"; did you mean {ours!r}?"
    else:
        close = difflib.get_close_matches(monitor, names, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
    if not hint and monitor.startswith("valid") and not any(n.startswith("valid") for n in names):
        hint = " (this run has no validation data or eval_strategy='no': pass valid_data or monitor 'train/loss')"
    raise ConfigError(f"{where}={monitor!r} is not a metric this run logs{hint} (it logs: {', '.join(names)})")


# -- the Trainer: data, first batch, resume -------------------------------------------------------------
def check_trainer_setup(trainer: Any) -> None:
    """Run by ``Trainer.setup`` before anything is built or written: ``check_config`` for what the trainer
    builds from its config, and the data sets (empty, or fewer samples than one batch with drop_last)."""
    customized = bool(trainer.callbacks) or any(
        _replaced(trainer, name) for name in ("train_step", "evaluate_step", "evaluate", "compute_metrics")
    )
    check_config(
        trainer.config,
        valid_loaders=_valid_loader_names(trainer.valid_data),
        criterion_given=trainer.criterion is not None,
        optimizer_given=trainer.optimizer is not None,
        scheduler_given=trainer.scheduler is not None,
        # callbacks and replaced stages may log names of their own; evaluate/predict alone monitor nothing
        check_monitors=not customized and trainer.train_data is not None,
    )
    check_eval_loss_monitors(trainer)
    _check_data(trainer)


def is_eval_loss(name: str) -> bool:
    """Whether ``name`` is an evaluation loss: ``valid/loss``, ``valid_<loader>/loss``, ``test/loss`` or a
    joint loss's term of them (``valid/loss/<tag>``).

    >>> [is_eval_loss(n) for n in ("valid/loss", "valid_noisy/loss/dice", "train/loss", "valid/detection/map")]
    [True, True, False, False]
    """
    parts = name.split("/")
    return len(parts) >= 2 and parts[1] == "loss" and parts[0].split("_")[0] in ("valid", "test")


def check_eval_loss_monitors(trainer: Any) -> None:
    """A trainer whose evaluation computes no loss says why in ``eval_loss_missing`` (ObjectDetectionTask:
    torchvision detectors give none in eval mode); it logs no ``valid/loss``, so a checkpoint, early-stopping
    or plateau-schedule monitor of one is a ``ConfigError`` here, at set-up, naming what the run logs."""
    why = getattr(trainer, "eval_loss_missing", None)
    if not isinstance(why, str) or trainer.train_data is None:  # evaluate/predict alone monitor nothing
        return
    cfg = trainer.config
    monitors = [(f"{where}.monitor", (options or {}).get("monitor"))
                for where, options in (("checkpoint", cfg.checkpoint), ("early_stopping", cfg.early_stopping))]
    monitors += [(f"callbacks[{i}] ({type(c).__name__}).monitor", getattr(c, "monitor", None))
                 for i, c in enumerate(trainer.callbacks)]
    for where, monitor in monitors:
        if isinstance(monitor, str) and is_eval_loss(monitor):
            loaders = _valid_loader_names(trainer.valid_data) or [None]
            names = [n for n in monitor_names(cfg, _check_metrics(cfg.metrics), loaders) if not is_eval_loss(n)]
            raise ConfigError(f"{where}={monitor!r} is not a metric this run logs: {why} "
                              f"(it logs: {', '.join(names)})")


def require_training_data(trainer: Any) -> None:
    """``fit`` with no training data is an error, not a run of 0 steps that saves untrained weights."""
    if trainer.train_data is None:
        raise ConfigError(
            "fit() needs training data: pass train_data=<Dataset or DataLoader> to Trainer(...); nothing was trained"
        )


def _replaced(trainer: Any, name: str) -> bool:
    from .trainer import Trainer

    return name in vars(trainer) or getattr(type(trainer), name) is not getattr(Trainer, name)


def _valid_loader_names(data: Any) -> list[str | None]:
    if data is None:
        return []
    if isinstance(data, Mapping):
        return [None if i == 0 else str(key) for i, key in enumerate(data)]
    return [None]


def _length(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:  # an IterableDataset or a generator: no length to check
        return None


def _check_data(trainer: Any) -> None:
    from torch.utils.data import DataLoader

    cfg = trainer.config
    valid = trainer.valid_data
    named = [("train_data", trainer.train_data)]
    if isinstance(valid, Mapping):
        named += [(f"valid_data[{key!r}]", value) for key, value in valid.items()]
    else:
        named.append(("valid_data", valid))
    for where, data in named:
        if data is None:
            continue
        size = _length(data.dataset if isinstance(data, DataLoader) else data)
        if size == 0:
            raise ConfigError(f"{where} is empty (0 samples): check the data set's folder, file or filter")
        if isinstance(data, DataLoader) and _length(data) == 0:
            raise ConfigError(
                f"{where}: the DataLoader gives no batches ({size} samples, batch_size={data.batch_size}, "
                f"drop_last={data.drop_last}); lower its batch_size or set drop_last=False"
            )
    data = trainer.train_data
    size = _length(data)
    if data is not None and not isinstance(data, DataLoader) and size and cfg.drop_last:
        world = trainer.runtime.world_size if trainer.runtime is not None else 1
        per_rank = math.ceil(size / world)
        if per_rank < cfg.batch_size:
            ranks = f" per process ({world} processes)" if world > 1 else ""
            raise ConfigError(
                f"train_data has {per_rank} samples{ranks}, fewer than batch_size={cfg.batch_size}, and drop_last=True "
                "drops that only partial batch: no training step would run. Lower batch_size or set drop_last=False"
            )


class FirstBatchCheck:
    """Checks the first training batch against the model and the loss, inside the real first step (no
    extra forward pass, no stage called twice): hooks name the first convolution or linear layer whose
    input has other channels (features) than it was built for, the model's output must be what the
    default loss reads, class labels must fit the number of outputs (checked before the loss runs, so not
    a deep IndexError or a CUDA assert), and the loss must be a scalar (checked before ``backward``). The
    hooks remove themselves after the first batch; a compiled model is not hooked."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.pending = True
        self.hooks: list[Any] = []  # the layer and model hooks: gone once the model has run
        self.loss_hook: Any = None  # gone once the loss has run

    def on_batch_start(self, state: Any) -> None:
        if not self.pending:  # the loop keeps its dispatch tuple for the whole run: a flag, then gone at fit_end
            return
        self.pending = False
        trainer, batch = self.trainer, state.batch
        if trainer.config.compile or not isinstance(batch, dict) or not isinstance(batch.get("input"), torch.Tensor):
            return
        _refuse_a_single_sample(batch)
        default_loss = not _replaced(trainer, "compute_loss")
        check_output = default_loss and not getattr(type(trainer.criterion), "takes_dicts", False)
        model = trainer.model
        self.hooks = _register_shape_hooks(model, batch["input"])
        self.hooks.append(model.register_forward_hook(self._output_hook(batch.get("target"), check_output)))
        if default_loss and isinstance(trainer.criterion, nn.Module):
            self.loss_hook = trainer.criterion.register_forward_hook(self._loss_hook)

    def _output_hook(self, target: Any, check_output: bool) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._remove_model_hooks()
            if check_output:
                _check_output(self.trainer, output, target)

        return hook

    def _loss_hook(self, module: nn.Module, args: Any, loss: Any) -> None:
        self._remove_loss_hook()
        _check_loss(type(module).__name__, loss)

    def _remove_model_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    def _remove_loss_hook(self) -> None:
        if self.loss_hook is not None:
            self.loss_hook.remove()
            self.loss_hook = None

    def on_exception(self, state: Any) -> None:
        self._remove_model_hooks()
        self._remove_loss_hook()

    def on_fit_end(self, state: Any) -> None:
        self.on_exception(state)
        if not self.pending:
            state.owner.callbacks.remove(self)


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _refuse_a_single_sample(batch: dict[str, Any]) -> None:
    """A first batch whose target is one number is one sample: a list of ``(input, label)`` pairs passed as
    ``train_data`` is read as a list of batches, like any iterable that is not a ``Dataset``."""
    target = batch.get("target")
    if isinstance(target, (bool, int, float)) or (isinstance(target, torch.Tensor) and target.dim() == 0):
        shown = target.item() if isinstance(target, torch.Tensor) else target
        raise ConfigError(
            f"the first training batch is one sample, not a batch: batch['target'] is the single value {shown!r} "
            f"and batch['input'] has shape {list(batch['input'].shape)}. An iterable that is not a Dataset (a "
            "list, a generator) is read as batches: pass samples as a Dataset (e.g. TensorDataset(inputs, "
            "targets), or your list in a torch.utils.data.Dataset) and the Trainer batches them with batch_size"
        )


def _register_shape_hooks(model: nn.Module, batch_input: torch.Tensor) -> list[Any]:
    """Forward pre-hooks on every convolution and linear layer that name the first layer whose input does
    not have the channels (features) it was built for."""
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, _CONV) and module.in_channels > 0:
            hooks.append(module.register_forward_pre_hook(_channel_hook(name or "<model>", batch_input)))
        elif isinstance(module, nn.Linear) and module.in_features > 0:
            hooks.append(module.register_forward_pre_hook(_channel_hook(name or "<model>", batch_input)))
    return hooks


def _channel_hook(name: str, batch_input: torch.Tensor) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor):
            return
        kind = type(module).__name__
        if isinstance(module, nn.Linear):
            if x.dim() >= 1 and x.shape[-1] != module.in_features:
                raise ConfigError(
                    f"the first batch does not fit the model: layer {name!r} ({kind}) expects {module.in_features} "
                    f"input features but gets {x.shape[-1]} (its input has shape {list(x.shape)}; batch['input'] has "
                    f"shape {list(batch_input.shape)}); check the image size and channels the model was built for"
                )
            return
        spatial = len(module.kernel_size)
        if x.dim() not in (spatial + 1, spatial + 2):
            return
        channels = x.shape[1] if x.dim() == spatial + 2 else x.shape[0]
        if channels != module.in_channels:
            raise ConfigError(
                f"the first batch does not fit the model: layer {name!r} ({kind}) expects {module.in_channels} input "
                f"channels but gets {channels} (its input has shape {list(x.shape)}; batch['input'] has shape "
                f"{list(batch_input.shape)}); build the model for {channels}-channel input (in_channels={channels}) "
                "or convert the images (e.g. grayscale to RGB)"
            )

    return hook


def _check_output(trainer: Any, output: Any, target: Any) -> None:
    """What the default loss reads: a tensor, or a dict with ``output``; class labels that fit it."""
    if isinstance(output, Mapping):
        if "output" not in output:
            raise ConfigError(
                f"the model returned a dict with keys {sorted(map(str, output))}; the default loss reads "
                "outputs['output']: return the logits under 'output', use a criterion that takes dicts (JointLoss "
                "with a mapping), or override compute_loss"
            )
        output = output["output"]
    if not isinstance(output, torch.Tensor):
        raise ConfigError(
            f"the model returned {_describe(output)}; the default loss needs one tensor: return the logits "
            "(or a dict {'output': logits, ...}), or override compute_loss to combine the parts"
        )
    _check_labels(trainer, output, target)


def _check_loss(source: str, loss: Any) -> None:
    if isinstance(loss, tuple) and loss:
        loss = loss[0]
    if not isinstance(loss, torch.Tensor):
        raise ConfigError(
            f"{source} returned {_describe(loss)}; a training loss must be a scalar tensor computed from the "
            "model's output (so gradients reach the weights)"
        )
    if loss.numel() != 1:
        raise ConfigError(
            f"the loss is not one number: {source} returned a tensor of shape {list(loss.shape)} (one value per "
            "sample?); a training loss must be a scalar: use reduction='mean' (e.g. nn.CrossEntropyLoss"
            "(reduction='mean')) or return loss.mean()"
        )


def _check_labels(trainer: Any, output: torch.Tensor, target: Any) -> None:
    """Class labels must lie in ``[0, outputs)`` for a class-index loss (CrossEntropyLoss, NLLLoss)."""
    criterion = trainer.criterion
    if not isinstance(criterion, (nn.CrossEntropyLoss, nn.NLLLoss)) and not hasattr(criterion, "ignore_index"):
        return
    if not (isinstance(target, torch.Tensor) and not target.is_floating_point() and target.dtype != torch.bool
            and output.is_floating_point() and output.dim() >= 2 and target.dim() == output.dim() - 1
            and target.shape[0] == output.shape[0] and target.numel() > 0):
        return
    ignore = getattr(criterion, "ignore_index", None)
    labels = target[target != ignore] if isinstance(ignore, int) else target
    if labels.numel() == 0:
        return
    low, high = (int(v) for v in torch.stack([labels.min(), labels.max()]).tolist())  # one host sync, once
    classes = output.shape[1]
    if high >= classes:
        layer = _last_layer_with(trainer.model, classes)
        where = f" (its last layer {layer!r} has {classes} outputs)" if layer else ""
        raise ConfigError(
            f"the labels do not fit the model: batch['target'] has labels up to {high}, so at least {high + 1} "
            f"classes, but the model gives {classes} outputs per sample (output shape {list(output.shape)}){where}; "
            f"build the model with num_classes >= {high + 1}, or check the labels"
        )
    if low < 0:
        extra = f" (ignore_index is {ignore})" if isinstance(ignore, int) else ""
        raise ConfigError(
            f"the labels do not fit the model: batch['target'] has the label {low}{extra}; class labels are "
            f"0..{classes - 1}"
        )


def _last_layer_with(model: nn.Module, outputs: int) -> str | None:
    found = None
    for name, module in model.named_modules():
        if getattr(module, "out_features", None) == outputs or getattr(module, "out_channels", None) == outputs:
            found = name
    return found


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    if isinstance(value, (tuple, list)):
        parts = ", ".join(_describe(v) for v in value[:4])
        return f"a {type(value).__name__} of {len(value)} ({parts}{', ...' if len(value) > 4 else ''})"
    if isinstance(value, Mapping):
        return f"a dict with keys {sorted(map(str, value))}"
    return f"{type(value).__name__} {value!r}"


def optimizer_mismatch(config: TrainingConfig, optimizer: Any, state: Mapping[str, Any]) -> list[str]:
    """A resume whose optimizer is not the saved run's: names both (before any state is loaded, so the
    error is not a ``KeyError: 'momentum'`` from inside ``SGD.step``). Empty when they match."""
    saved_config = state.get("config", {}) or {}
    callbacks = (state.get("recipe", {}) or {}).get("callbacks", {}) or {}
    saved = next((v.get("optimizer") for k, v in callbacks.items() if k.startswith("Optimizer[")
                  and isinstance(v, Mapping)), None)
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(optimizer, torch.optim.Optimizer) or not isinstance(saved, Mapping) or not groups or not (
            saved.get("param_groups")):
        return []  # evaluate/predict only (no optimizer), or a checkpoint without optimizer state
    ignore = {"params", "initial_lr"}  # initial_lr: set by any lr scheduler
    saved_keys = set(saved["param_groups"][0]) - ignore
    keys = set(groups[0]) - ignore
    name = type(optimizer).__name__
    this = config.optimizer if name.lower() == str(config.optimizer).lower() else name
    before = str(saved_config.get("optimizer", "?"))
    from_config = this == config.optimizer
    if saved_keys == keys and (not from_config or before.lower() == this.lower()):
        return []
    detail = ""
    if saved_keys != keys:
        only_saved, only_this = sorted(saved_keys - keys), sorted(keys - saved_keys)
        detail = (f": the saved state has settings {only_saved} that this optimizer lacks" if only_saved else "") + (
            f"{'; ' if only_saved else ': '}this optimizer needs {only_this} that the saved state lacks"
            if only_this else "")
    return [f"optimizer changed from {before!r} (saved run) to {this!r} (this run){detail}; resume with "
            f"optimizer={before!r}"]
