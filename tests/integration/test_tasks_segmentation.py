"""Proof: SegmentationTask with a composed U-Net (small_cnn + UNetDecoder + SegmentationHead) on
generated shapes (five kinds, up to three per image) reaches mean IoU >= 0.85 on held-out images."""

from __future__ import annotations

import time

import pytest
import torch

from trainforge import TrainingConfig
from trainforge.data.shapes import ShapesSegmentation
from trainforge.models import build_model
from trainforge.tasks import SegmentationTask


@pytest.mark.slow
def test_shapes_segmentation_mean_iou(tmp_path):
    train = ShapesSegmentation(300, image_size=32, seed=0, num_kinds=5)
    valid = ShapesSegmentation(100, image_size=32, seed=1, num_kinds=5)
    torch.manual_seed(0)  # the model's initial weights
    model = build_model("small_cnn", {"width": 16, "depth": 3}, neck_name="UNetDecoder",
                        head_name="SegmentationHead", head_params={"hidden_channels": 16},
                        num_classes=len(train.classes))
    config = TrainingConfig(max_epochs=10, batch_size=16, lr=3e-3, seed=0, output_dir=str(tmp_path),
                            tensorboard=False, progress_bar=False, checkpoint=None)
    task = SegmentationTask(model, config, train_data=train, valid_data=valid)
    start = time.process_time()
    task.fit()
    seconds = time.process_time() - start
    metrics = task.evaluate()
    per_class = task.last_non_scalar_metrics["valid/per_class_iou"]
    print(f"\nshapes segmentation (5 kinds + background, 32 px): mean IoU {metrics['valid/mean_iou']:.4f}, "
          f"per class {dict(zip(train.classes, [round(v, 3) for v in per_class.tolist()]))}, {seconds:.1f} CPU s")
    assert metrics["valid/mean_iou"] >= 0.85
    assert per_class.shape == (len(train.classes),) and float(per_class.min()) > 0.5
    assert (tmp_path / "report" / "index.html").is_file()
