"""``SegmentationTask`` (Kornia's ``SemanticSegmentationTrainer``): per-pixel logits trained with
cross-entropy + Dice, ``ignore_index`` honoured by loss and metrics, mean IoU and per-class IoU."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import registry
from ..training_config import TrainingConfig  # noqa: F401  (the docstring examples use it)
from .base import Task, model_num_classes


class SegmentationTask(Task):
    """Train a semantic-segmentation model: ``batch["target"]`` is an int64 ``(B, H, W)`` mask, the model
    gives ``(B, C, H, W)`` logits. Outputs: ``output`` and ``prediction`` (TorchOk's key).

    - Loss: ``CrossEntropyDiceLoss`` (``dice_weight`` sets the Dice share; 0 gives plain cross-entropy).
    - Metrics: ``mean_iou`` (macro IoU over classes) and ``per_class_iou`` (a vector, in the report),
      through torchmetrics' ``JaccardIndex``; pixels equal to ``ignore_index`` count in neither.
    - ``num_classes``: taken from the model's head when it reports one.

    >>> import tempfile
    >>> from trainforge.data.shapes import ShapesSegmentation
    >>> from trainforge.models import build_model
    >>> data = ShapesSegmentation(8, image_size=16)
    >>> model = build_model("small_cnn", {"width": 4, "depth": 2}, neck_name="UNetDecoder",
    ...                     head_name="SegmentationHead", num_classes=4)
    >>> cfg = TrainingConfig(max_epochs=1, output_dir=tempfile.mkdtemp(), tensorboard=False, report=False,
    ...                      progress_bar=False, checkpoint=None)
    >>> sorted(SegmentationTask(model, cfg, valid_data=data).evaluate())
    ['valid/loss', 'valid/mean_iou']
    """

    default_loss: ClassVar[str | None] = "CrossEntropyDiceLoss"
    #: validation images the run report shows with their predicted and true masks
    report_samples: ClassVar[int] = 8

    def __init__(
        self,
        model: nn.Module,
        *args: Any,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        dice_weight: float = 1.0,
        **trainer_args: Any,
    ) -> None:
        self.num_classes = num_classes if num_classes is not None else model_num_classes(model)
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ConfigError(
                f"SegmentationTask needs the class count (>= 2, background included): got {self.num_classes!r}; "
                "pass num_classes= or use a model whose head reports it (head_name='SegmentationHead')"
            )
        if ignore_index is not None and not isinstance(ignore_index, int):
            raise ConfigError(f"ignore_index must be an int or None, got {ignore_index!r}")
        if dice_weight < 0:
            raise ConfigError(f"dice_weight must be >= 0, got {dice_weight!r}")
        self.ignore_index, self.dice_weight = ignore_index, dice_weight
        super().__init__(model, *args, **trainer_args)

    def task_loss(self, model: nn.Module) -> tuple[str, dict[str, Any]]:
        return "CrossEntropyDiceLoss", {"ignore_index": self.ignore_index, "dice_weight": self.dice_weight}

    def task_metrics(self, model: nn.Module) -> list[Any]:
        params: dict[str, Any] = {"task": "multiclass", "num_classes": self.num_classes}
        if self.ignore_index is not None:
            params["ignore_index"] = self.ignore_index
        return [
            {"name": "JaccardIndex", "params": {**params, "average": "macro"}, "alias": "mean_iou"},
            {"name": "JaccardIndex", "params": {**params, "average": "none"}, "alias": "per_class_iou",
             "phases": ["VALID", "TEST"]},
        ]

    def forward(self, batch: dict[str, Any], training: bool) -> dict[str, Any]:
        outputs = super().forward(batch, training)
        outputs["prediction"] = outputs["output"]
        return outputs

    def save_report_samples(self, loader: Any) -> None:
        """The first ``report_samples`` validation images with their true and predicted masks."""
        from ..report import save_segmentation_samples

        images, targets, predictions, kept = [], [], [], 0
        for batch in loader:
            take = self.report_samples - kept
            if take <= 0:
                break
            batch = self.runtime.to_device(batch)
            logits = self.forward(batch, training=False)["output"][:take].float()
            target = batch["target"][:take]
            if logits.shape[-2:] != target.shape[-2:]:  # a model that predicts at a coarser resolution
                logits = torch.nn.functional.interpolate(logits, size=target.shape[-2:], mode="bilinear")
            images.append(batch["input"][:take].cpu())
            targets.append(target.cpu())
            predictions.append(logits.argmax(1).cpu())
            kept += len(logits)
        if kept:
            save_segmentation_samples(self.run_dir, torch.cat(images), torch.cat(targets), torch.cat(predictions),
                                      self.class_names, self.num_classes, self.ignore_index,
                                      weights=self._report_weights())


#: Kornia's name for the same trainer.
SemanticSegmentationTrainer = SegmentationTask

registry("tasks").register(SegmentationTask, help="semantic segmentation (per-pixel classes)")
registry("tasks").register(SemanticSegmentationTrainer, name="SemanticSegmentationTrainer",
                           help="Kornia's name for SegmentationTask")
