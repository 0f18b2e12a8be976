"""``ClassificationTask`` (Kornia's ``ImageClassifierTrainer``): cross-entropy with label smoothing,
mixup / cutmix, top-1 and top-k accuracy (k clamped to the class count), multi-label with BCE, mAP and
F1; margin heads (ArcFace, CosFace) get the target while training."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import registry
from ..training_config import TrainingConfig  # noqa: F401  (the docstring examples use it)
from .base import Task, model_num_classes


class ClassificationTask(Task):
    """Train an image classifier. Outputs: ``output`` and ``prediction`` (logits, TorchOk's key).

    - Loss: ``CrossEntropyLoss`` (``label_smoothing`` here or in ``config.loss_params``); multi-label
      (``multilabel=True``, or a ``MultiLabelHead``): ``BCEWithLogitsLoss`` on float multi-hot targets.
    - Metrics: ``accuracy`` and ``accuracy_top<top_k>`` (k clamped to the number of classes: with 3
      classes top-5 is top-3); multi-label: ``map`` (macro average precision) and ``f1``.
    - ``mixup_alpha`` / ``cutmix_alpha`` > 0 mix training batches (timm's ``Mixup``; a batch of odd size
      is left unmixed) and train on the soft targets.

    >>> import tempfile
    >>> from trainforge.data import load_digits_split
    >>> from trainforge.models import build_model
    >>> train, valid = load_digits_split()
    >>> model = build_model("small_cnn", {"width": 8, "depth": 2}, pooling_name="Pooling",
    ...                     head_name="ClassificationHead", num_classes=10, in_channels=1)
    >>> cfg = TrainingConfig(max_epochs=1, output_dir=tempfile.mkdtemp(), tensorboard=False, report=False,
    ...                      progress_bar=False, checkpoint=None)
    >>> task = ClassificationTask(model, cfg, train_data=train, valid_data=valid)
    >>> sorted(task.evaluate())
    ['valid/accuracy', 'valid/accuracy_top5', 'valid/loss']
    """

    def __init__(
        self,
        model: nn.Module,
        *args: Any,
        multilabel: bool | None = None,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        top_k: int = 5,
        **trainer_args: Any,
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ConfigError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha!r}, {cutmix_alpha!r}")
        if not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k must be a positive int, got {top_k!r}")
        self.multilabel = bool(getattr(model, "multilabel", False)) if multilabel is None else multilabel
        self.label_smoothing, self.top_k = label_smoothing, top_k
        self.num_classes = model_num_classes(model)
        self._mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            if self.multilabel:
                raise ConfigError("mixup/cutmix is for single-label classification; set mixup_alpha=cutmix_alpha=0")
            if self.num_classes is None:
                raise ConfigError("mixup/cutmix needs the class count: use a model with a classification head")
            from timm.data import Mixup

            self._mixup = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=0.0,
                                num_classes=self.num_classes)
        super().__init__(model, *args, **trainer_args)
        if getattr(model, "takes_target", False):
            self.run_model = self._run_with_target  # on this instance only: other models skip the stage

    def task_loss(self, model: nn.Module) -> tuple[str, dict[str, Any]]:
        if self.multilabel:
            return "BCEWithLogitsLoss", {}
        return "CrossEntropyLoss", ({"label_smoothing": self.label_smoothing} if self.label_smoothing else {})

    def task_metrics(self, model: nn.Module) -> list[Any]:
        if self.multilabel:
            return [{"name": "AveragePrecision", "params": {"task": "multilabel"}, "alias": "map"},
                    {"name": "F1Score", "params": {"task": "multilabel"}, "alias": "f1"}]
        metrics: list[Any] = [{"name": "Accuracy", "alias": "accuracy"}]
        k = min(self.top_k, self.num_classes) if self.num_classes else self.top_k
        if self.top_k > 1:
            metrics.append({"name": "Accuracy", "params": {"top_k": k}, "alias": f"accuracy_top{self.top_k}"})
        return metrics

    def _run_with_target(self, x: torch.Tensor, batch: dict[str, Any]) -> Any:
        target = batch.get("target")
        return self._model_fn(x, target) if self.model.training and target is not None else self._model_fn(x)

    def forward(self, batch: dict[str, Any], training: bool) -> dict[str, Any]:
        if training and self._mixup is not None and batch["input"].shape[0] % 2 == 0:
            batch["input"], batch["mixed_target"] = self._mixup(batch["input"].clone(), batch["target"])
        outputs = super().forward(batch, training)
        outputs["prediction"] = outputs["output"]
        if self.multilabel and "target" in batch:
            outputs["target"] = batch["target"].long()  # torchmetrics wants integer multi-hot targets
        return outputs

    def compute_loss(self, outputs: dict[str, Any], batch: dict[str, Any]) -> torch.Tensor:
        mixed = batch.get("mixed_target")
        if mixed is not None and not getattr(type(self.criterion), "takes_dicts", False):
            return self.criterion(outputs["output"].float(), mixed)
        return super().compute_loss(outputs, batch)


#: Kornia's name for the same trainer.
ImageClassifierTrainer = ClassificationTask

registry("tasks").register(ClassificationTask, help="image classification (single- and multi-label)")
registry("tasks").register(ImageClassifierTrainer, name="ImageClassifierTrainer",
                           help="Kornia's name for ClassificationTask")
