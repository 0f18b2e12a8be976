"""SegmentationTask: defaults, ignore_index in loss and metrics, errors; Dice and CE + Dice losses."""

from __future__ import annotations

import pytest
import torch

from trainforge import TrainingConfig
from trainforge.data.shapes import ShapesSegmentation
from trainforge.errors import ConfigError
from trainforge.losses import build_loss
from trainforge.models import build_model
from trainforge.registry import get_registry
from trainforge.tasks import SegmentationTask, SemanticSegmentationTrainer


def _config(tmp_path, **changes):
    base = dict(max_epochs=1, batch_size=8, lr=3e-3, output_dir=str(tmp_path), tensorboard=False, report=False,
                progress_bar=False, checkpoint=None)
    return TrainingConfig(**{**base, **changes})


def _model(num_classes=4):
    return build_model("small_cnn", {"width": 4, "depth": 2}, neck_name="HRNetSegmentationNeck",
                       head_name="SegmentationHead", head_params={"hidden_channels": 8}, num_classes=num_classes)


def test_names_defaults_and_errors(tmp_path):
    assert get_registry("tasks").get("SegmentationTask") is SegmentationTask
    assert get_registry("tasks").get("SemanticSegmentationTrainer") is SemanticSegmentationTrainer
    task = SegmentationTask(_model(), _config(tmp_path), ignore_index=255)
    assert task.config.loss == "CrossEntropyDiceLoss" and task.config.loss_params["ignore_index"] == 255
    assert [m["alias"] for m in task.config.metrics] == ["mean_iou", "per_class_iou"]
    with pytest.raises(ConfigError, match="needs the class count"):
        SegmentationTask(torch.nn.Conv2d(3, 4, 1), _config(tmp_path))
    with pytest.raises(ConfigError, match="ignore_index must be an int"):
        SegmentationTask(_model(), _config(tmp_path), ignore_index="255")


def test_ignored_pixels_count_in_neither_loss_nor_iou(tmp_path):
    data = ShapesSegmentation(16, image_size=16, seed=0)
    ignored = ShapesSegmentation(16, image_size=16, seed=0)
    ignored.masks = ignored.masks.clone()
    ignored.masks[:, :, :8] = 255  # the left half is unlabelled
    model = _model()
    task = SegmentationTask(model, _config(tmp_path), ignore_index=255)
    plain = task.evaluate(data)
    half = task.evaluate(ignored)
    assert half["valid/loss"] == pytest.approx(half["valid/loss"]) and torch.isfinite(torch.tensor(half["valid/loss"]))
    assert half["valid/loss"] != pytest.approx(plain["valid/loss"])
    # the IoU over the labelled half equals the IoU of predictions restricted to it
    from torchmetrics.classification import MulticlassJaccardIndex

    model.eval()
    with torch.no_grad():
        pred = model(ignored.images).argmax(1)
    reference = MulticlassJaccardIndex(4, average="macro")(pred[:, :, 8:], ignored.masks[:, :, 8:])
    assert half["valid/mean_iou"] == pytest.approx(float(reference), abs=1e-5)


def test_segmentation_trains_from_a_composed_fpn(tmp_path):
    train = ShapesSegmentation(64, image_size=16, seed=0)
    model = build_model("small_resnet", {"width": 8, "depth": 3}, neck_name="FPN", neck_params={"out_channels": 16},
                        head_name="SegmentationHead", head_params={"hidden_channels": 16}, num_classes=4)
    task = SegmentationTask(model, _config(tmp_path, max_epochs=4), train_data=train, valid_data=train)
    before = task.evaluate()["valid/mean_iou"]
    after = task.fit().metrics["valid/mean_iou"]
    assert after > before + 0.2, (before, after)


def test_dice_losses():
    target = torch.tensor([[[0, 1], [2, 255]]])
    logits = torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 30
    assert float(build_loss("DiceLoss", ignore_index=255)(logits, target)) == pytest.approx(0.0, abs=1e-4)
    wrong = logits.roll(1, dims=1)
    assert float(build_loss("DiceLoss", ignore_index=255)(wrong, target)) > 0.6  # smooth=1 with 1 pixel per class
    combined = build_loss("CrossEntropyDiceLoss", ignore_index=255, dice_weight=0.0)
    ce = torch.nn.functional.cross_entropy(wrong, target, ignore_index=255)
    assert float(combined(wrong, target)) == pytest.approx(float(ce))
    everything_ignored = torch.full((1, 2, 2), 255)
    assert torch.isfinite(build_loss("CrossEntropyDiceLoss", ignore_index=255)(wrong, everything_ignored))
