"""The Kornia seed's task-trainer usage (kornia-training-api.rst) with each task trainer: Kornia's
positional call, ``preprocess`` and ``augmentations`` passed as callbacks, ``ModelCheckpoint`` and
``EarlyStopping`` monitoring what a custom ``evaluate`` returns."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainforge import EarlyStopping, ModelCheckpoint, TrainingConfig
from trainforge.checkpoint import read_manifest
from trainforge.data.shapes import ShapesClassification, ShapesDetection, ShapesSegmentation, collate_detection
from trainforge.models import build_model
from trainforge.tasks import ImageClassifierTrainer, ObjectDetectionTrainer, SemanticSegmentationTrainer


def preprocess(x):
    return x.float() / 255.0


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return (images * 255).round().to(torch.uint8)  # the seed's data arrive as bytes; preprocess scales them


def _classification():
    import kornia

    train, valid = ShapesClassification(192, image_size=16, seed=0), ShapesClassification(64, image_size=16, seed=1)
    model = build_model("small_cnn", {"width": 8, "depth": 2}, pooling_name="Pooling",
                        head_name="ClassificationHead", num_classes=3)
    loaders = [DataLoader(TensorDataset(_uint8(d.images), d.targets), batch_size=32, shuffle=True)
               for d in (train, valid)]
    augmentations = nn.Sequential(kornia.augmentation.RandomHorizontalFlip(p=0.75),
                                  kornia.augmentation.RandomAffine(degrees=10.0))

    @torch.no_grad()
    def my_evaluate(self) -> dict:
        from kornia.metrics import accuracy

        self.model.eval()
        correct = count = 0
        for source, target in self.valid_dataloader:
            out = self.model(self.preprocess(source))
            (acc1,) = accuracy(out.detach(), target, topk=(1,))
            correct, count = correct + float(acc1) * len(target), count + len(target)
        self.model.train()
        return {"top1": correct / count}

    return ImageClassifierTrainer, model, loaders, nn.CrossEntropyLoss(), augmentations, my_evaluate, "top1"


def _segmentation():
    import kornia

    train, valid = ShapesSegmentation(96, image_size=16, seed=0), ShapesSegmentation(32, image_size=16, seed=1)
    model = build_model("small_cnn", {"width": 8, "depth": 2}, neck_name="UNetDecoder", head_name="SegmentationHead",
                        head_params={"hidden_channels": 8}, num_classes=4)
    loaders = [DataLoader(TensorDataset(_uint8(d.images), d.masks), batch_size=16, shuffle=True)
               for d in (train, valid)]
    augmentations = kornia.augmentation.ColorJiggle(0.1, 0.1, 0.1, 0.1, p=0.8)  # photometric: masks stay right

    @torch.no_grad()
    def my_evaluate(self) -> dict:
        self.model.eval()
        hits = total = 0
        for source, target in self.valid_dataloader:
            prediction = self.model(self.preprocess(source)).argmax(1)
            hits, total = hits + int((prediction == target).sum()), total + target.numel()
        self.model.train()
        return {"pixel_accuracy": hits / total}

    return SemanticSegmentationTrainer, model, loaders, None, augmentations, my_evaluate, "pixel_accuracy"


def _detection():
    import kornia

    train, valid = ShapesDetection(48, image_size=32, seed=0), ShapesDetection(16, image_size=32, seed=1)
    for data in (train, valid):
        data.images = _uint8(data.images)
    model = build_model("small_resnet", {"width": 8, "depth": 3}, head_name="FCOSHead", head_params={"image_size": 32},
                        num_classes=4)
    loaders = [DataLoader(d, batch_size=8, shuffle=True, collate_fn=collate_detection) for d in (train, valid)]
    augmentations = kornia.augmentation.ColorJiggle(0.1, 0.1, 0.1, 0.1, p=0.8)

    @torch.no_grad()
    def my_evaluate(self) -> dict:
        self.model.eval()
        scores = []
        for batch in self.valid_dataloader:
            detections = self.model(self.preprocess(batch["input"]))
            scores += [float(d["scores"].max()) if len(d["scores"]) else 0.0 for d in detections]
        self.model.train()
        return {"top_score": sum(scores) / len(scores)}

    return ObjectDetectionTrainer, model, loaders, None, augmentations, my_evaluate, "top_score"


@pytest.mark.slow
@pytest.mark.parametrize("make", [_classification, _segmentation, _detection], ids=["classify", "segment", "detect"])
def test_kornia_seed_usage_with_each_task_trainer(tmp_path, make):
    torch.manual_seed(0)
    trainer_class, model, (train_dataloader, valid_dataloader), criterion, augmentations, my_evaluate, key = make()
    epochs = 3
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(train_dataloader))
    config = TrainingConfig(max_epochs=epochs, output_dir=str(tmp_path), tensorboard=False, report=False,
                            progress_bar=False, checkpoint=None, scheduler=None)
    model_checkpoint = ModelCheckpoint(tmp_path / "outputs", monitor=key, mode="max")
    early_stop = EarlyStopping(monitor=key, mode="max", patience=5)
    seen = []
    trainer = trainer_class(
        model, train_dataloader, valid_dataloader, criterion, optimizer, scheduler, config,
        callbacks={"preprocess": preprocess, "augmentations": lambda x: seen.append(x.dtype) or augmentations(x),
                   "evaluate": my_evaluate, "on_checkpoint": model_checkpoint, "on_epoch_end": early_stop},
    )
    state = trainer.fit()
    assert seen and set(seen) == {torch.float32}, "augmentations get the preprocessed batch"
    assert key in state.metrics and early_stop.best == max(early_stop.best, state.metrics[key])
    assert read_manifest(model_checkpoint.best_model_path)["metadata"]["monitor"] == key
    assert scheduler.last_epoch == epochs * len(train_dataloader)
