"""``Task``: what the task trainers share — a Trainer whose default loss and metrics are the task's
(used when the config keeps the Trainer's own defaults), and models built from TorchOk's task.params."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from ..errors import ConfigError
from ..trainer import Trainer
from ..training_config import TrainingConfig

_TRAINER_DEFAULTS = TrainingConfig.__dataclass_fields__


def _default(name: str) -> Any:
    field = _TRAINER_DEFAULTS[name]
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


class Task(Trainer):
    """A Trainer with a task's defaults. Subclasses set ``default_loss`` / ``default_loss_params`` and
    return their metrics from ``task_metrics``; a config that names its own loss or metrics (anything
    but the Trainer's defaults ``CrossEntropyLoss`` / ``["Accuracy"]``) keeps them."""

    #: the loss a task brings when the config names none (None: the Trainer's, e.g. classification's
    #: cross-entropy, so a YAML experiment must name it in joint_loss)
    default_loss: ClassVar[str | None] = None
    default_loss_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module, *args: Any, config: TrainingConfig | Mapping[str, Any] | None = None,
                 callbacks: Any = None, **trainer_args: Any) -> None:
        """The Trainer's call styles (ours, Kornia's positional order, the seeds' keyword names)."""
        from ..trainer_args import KORNIA_ORDER, check_model, resolve_trainer_args

        given = {name: trainer_args.pop(name, None) for name in KORNIA_ORDER}
        given["config"] = config
        resolved = resolve_trainer_args(args, given, trainer_args)
        check_model(model)
        resolved["config"] = self._with_task_defaults(model, _as_config(resolved["config"]), resolved["criterion"])
        super().__init__(model, callbacks=callbacks, **resolved)

    def task_metrics(self, model: nn.Module) -> list[Any]:
        """The metric specs this task reports by default (``TrainingConfig.metrics`` entries)."""
        return list(_default("metrics"))

    def task_loss(self, model: nn.Module) -> tuple[str, dict[str, Any]]:
        """The loss name and parameters this task trains with by default."""
        return self.default_loss or _default("loss"), dict(self.default_loss_params)

    def _with_task_defaults(self, model: nn.Module, config: TrainingConfig, criterion: Any) -> TrainingConfig:
        changes: dict[str, Any] = {}
        if criterion is None and config.loss == _default("loss") and not config.loss_params:
            changes["loss"], changes["loss_params"] = self.task_loss(model)
        if config.metrics == _default("metrics"):
            changes["metrics"] = self.task_metrics(model)
        return dataclasses.replace(config, **changes) if changes else config

    @classmethod
    def from_params(cls, params: Mapping[str, Any], config: TrainingConfig | Mapping[str, Any] | None = None,
                    **trainer_args: Any) -> Task:
        """This task with a model built from TorchOk's ``task.params`` (``backbone_name``, ``neck_name``,
        ``pooling_name``, ``head_name`` with their ``*_params``, ``num_classes``, ``in_channels``; TorchOk's
        ``inputs`` is accepted and ignored)."""
        from ..models import build_model

        model_params = {k: v for k, v in dict(params).items() if k != "inputs"}
        try:
            model = build_model(**model_params)
        except TypeError as error:
            raise ConfigError(f"task.params: {error}; keys are those of trainforge.models.build_model") from None
        return cls(model, config, **trainer_args)


def _as_config(config: TrainingConfig | Mapping[str, Any] | None) -> TrainingConfig:
    if config is None:
        return TrainingConfig()
    if isinstance(config, Mapping):
        return TrainingConfig.from_dict(dict(config))
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig or a dict, got {type(config).__name__}")
    return config


def model_num_classes(model: nn.Module) -> int | None:
    """The class count a model reports (a composed model's head), or its last Linear's out_features."""
    count = getattr(model, "num_classes", None)
    if isinstance(count, int):
        return count
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None
