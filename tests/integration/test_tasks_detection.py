"""Proof: ObjectDetectionTask with torchvision's RetinaNet on our small ResNet (features_only + FPN) learns
generated shapes (up to three per image, some images with none): mAP@0.5 on held-out images through
torchmetrics' MeanAveragePrecision (pycocotools)."""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.data import DataLoader

from trainforge import TrainingConfig
from trainforge.data.shapes import ShapesDetection, collate_detection
from trainforge.models import build_model
from trainforge.tasks import ObjectDetectionTask

HEAD, EPOCHS, LR, THRESHOLD = "RetinaNetHead", 16, 4e-3, 0.5


@pytest.mark.slow
def test_shapes_detection_map(tmp_path):
    train, valid = ShapesDetection(200, image_size=32, seed=0), ShapesDetection(60, image_size=32, seed=1)
    assert any(len(t["labels"]) == 0 for t in train.targets) and max(len(t["labels"]) for t in train.targets) > 1
    torch.manual_seed(0)  # the model's initial weights
    model = build_model("small_resnet", {"width": 16, "depth": 3}, head_name=HEAD, head_params={"image_size": 32},
                        num_classes=len(train.classes))
    config = TrainingConfig(max_epochs=EPOCHS, batch_size=8, lr=LR, seed=0, output_dir=str(tmp_path),
                            tensorboard=False, progress_bar=False, checkpoint=None, eval_strategy="no",
                            gradient_clip_val=10.0)
    task = ObjectDetectionTask(model, config,
                               train_data=DataLoader(train, batch_size=8, shuffle=True, collate_fn=collate_detection),
                               valid_data=DataLoader(valid, batch_size=16, collate_fn=collate_detection))
    start = time.process_time()
    task.fit()
    seconds = time.process_time() - start
    metrics = task.evaluate()
    print(f"\nshapes detection ({HEAD}, small_resnet, 32 px): mAP@0.5 {metrics['valid/detection/map_50']:.3f}, "
          f"mAP@[.5:.95] {metrics['valid/detection/map']:.3f}, {seconds:.1f} CPU s")
    assert metrics["valid/detection/map_50"] >= THRESHOLD
