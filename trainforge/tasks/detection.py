"""``ObjectDetectionTask`` (Kornia's ``ObjectDetectionTrainer``): torchvision detectors trained on
batches whose ``target`` is a list of ``{"boxes", "labels"}`` per image; the model returns its loss
terms in train mode; mAP@0.5 and mAP@[.5:.95] through torchmetrics' ``MeanAveragePrecision``."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import registry
from ..training_config import TrainingConfig  # noqa: F401  (the docstring examples use it)
from .base import Task


class ObjectDetectionTask(Task):
    """Train a detector (``trainforge.models.build_detector``, or ``build_model(..., head_name="FCOSHead")``).

    - Batches: ``input`` images ``(B, 3, H, W)`` (or a list), ``target`` a list of dicts with
      ``boxes`` (float32 ``[N, 4]`` xyxy pixels) and ``labels`` (int64 ``[N]``, 1.. with 0 the
      background); ``N`` may be 0.
    - Loss: the sum of the detector's own loss terms (each logged as ``loss/<term>``).
    - Outputs in evaluation: ``output`` / ``prediction``, a list of ``{"boxes", "labels", "scores"}``.
    - Metrics: ``detection/map`` (mAP@[.5:.95]), ``detection/map_50`` (mAP@0.5), ``detection/map_75`` and
      the size breakdown. torchvision detectors give no losses in eval mode: ``valid/loss`` is not logged
      (a ``valid/loss`` monitor is refused when the run sets up); monitor ``valid/detection/map`` (``mode="max"``).
    """

    default_loss: ClassVar[str | None] = "detector"  # the detector's own loss terms (compute_loss sums them)
    #: the run report draws this many validation images with their boxes, predictions scored at least
    #: ``report_score_threshold`` (set either on the class or on one trainer)
    report_samples: ClassVar[int] = 8
    report_score_threshold: ClassVar[float] = 0.3

    def __init__(self, model: nn.Module, *args: Any, **trainer_args: Any) -> None:
        if trainer_args.get("criterion") is not None:
            raise ConfigError("ObjectDetectionTask trains with the detector's own losses; remove criterion=")
        super().__init__(model, *args, **trainer_args)

    #: why evaluation logs no loss: a monitor of one is refused by ``config check`` and at set-up. A class
    #: attribute, so a YAML experiment is checked before any model is built (metric learning's depends
    #: on ``compute_loss_on_valid`` and is a property)
    eval_loss_missing: ClassVar[str | None] = (
        "torchvision detectors compute no losses in eval mode; monitor the mAP instead, e.g. "
        "monitor 'valid/detection/map' (or 'valid/detection/map_50') with mode 'max'"
    )

    def task_loss(self, model: nn.Module) -> tuple[str, dict[str, Any]]:
        return "L1Loss", {}  # never called: compute_loss sums the detector's terms

    def task_metrics(self, model: nn.Module) -> list[Any]:
        return [{"name": "MeanAveragePrecision", "params": {"box_format": "xyxy", "iou_type": "bbox"},
                 "alias": "detection", "phases": ["VALID", "TEST"]}]

    def run_model(self, x: Any, batch: dict[str, Any]) -> dict[str, Any]:
        if self.model.training:
            return {"losses": self._model_fn(x, batch["target"])}
        detections = self._model_fn(x)
        return {"output": detections, "prediction": detections}

    def compute_loss(self, outputs: dict[str, Any], batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        terms = outputs["losses"]
        return sum(terms.values()), terms

    @torch.no_grad()
    def evaluate_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        outputs = self.forward(batch, training=False)  # no "loss": torchvision detectors compute none in eval mode
        outputs["num_samples"] = len(batch["input"])
        self.compute_metrics(self._eval_phase, outputs, batch, loader=self._eval_loader_name)
        return outputs

    def save_report_samples(self, loader: Any) -> None:
        """The first ``report_samples`` validation images with their predicted and true boxes (images of
        several sizes are padded to the largest, at the bottom and right: boxes stay where they are)."""
        from ..report import save_detection_samples

        images: list[torch.Tensor] = []
        predictions: list[dict[str, torch.Tensor]] = []
        targets: list[dict[str, torch.Tensor]] = []
        for batch in loader:
            take = self.report_samples - len(images)
            if take <= 0:
                break
            batch = self.runtime.to_device(batch)
            detections = self.forward(batch, training=False)["output"]
            for image, found, target in list(zip(batch["input"], detections, batch["target"]))[:take]:
                images.append(image.detach().float().cpu())
                predictions.append({key: found[key].cpu() for key in ("boxes", "labels", "scores")})
                targets.append({key: target[key].cpu() for key in ("boxes", "labels")})
        if not images:
            return
        height, width = max(i.shape[-2] for i in images), max(i.shape[-1] for i in images)
        padded = torch.zeros(len(images), images[0].shape[0], height, width)
        for index, image in enumerate(images):
            padded[index, :, : image.shape[-2], : image.shape[-1]] = image
        save_detection_samples(self.run_dir, padded, predictions, targets, self.class_names,
                               self.report_score_threshold, weights=self._report_weights())


#: Kornia's name for the same trainer.
ObjectDetectionTrainer = ObjectDetectionTask

registry("tasks").register(ObjectDetectionTask, help="object detection (torchvision Faster R-CNN, RetinaNet, FCOS)")
registry("tasks").register(ObjectDetectionTrainer, name="ObjectDetectionTrainer",
                           help="Kornia's name for ObjectDetectionTask")
registry("tasks").register(ObjectDetectionTask, name="SingleStageDetectionTask",
                           help="TorchOk's name for one-stage detection (ObjectDetectionTask with RetinaNet or FCOS)")
