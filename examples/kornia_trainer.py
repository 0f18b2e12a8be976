"""Kornia's Trainer example with trainforge names: your own model, loaders, criterion, optimizer and
scheduler objects, batched on-device augmentations (Kornia), then ``trainer.fit()``.

A small ViT (timm, random init) learns generated shapes. Run: ``python examples/kornia_trainer.py``.
"""

from __future__ import annotations

import argparse
import tempfile

import kornia.augmentation as K
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import DataLoader

from trainforge import Trainer, TrainingConfig
from trainforge.data import make_shapes


def main(output_dir: str, num_epochs: int = 4) -> dict[str, float]:
    torch.manual_seed(0)
    config = TrainingConfig(output_dir=output_dir, max_epochs=num_epochs, batch_size=32, lr=3e-3, print_steps=5)

    # 1. the model
    model = nn.Sequential(
        VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=0),
        nn.Linear(64, 3),
    )
    # 2. datasets and dataloaders
    train_dataset, valid_dataset = make_shapes(384, seed=0), make_shapes(96, seed=1)
    train_dataloader = DataLoader(train_dataset, batch_size=config.batch_size, shuffle=True)
    valid_dataloader = DataLoader(valid_dataset, batch_size=config.batch_size)
    # 3. loss, optimizer and scheduler
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, num_epochs * len(train_dataloader))

    # batched augmentations on the device, training only
    augmentations = nn.Sequential(K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5))

    def preprocess(x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.5

    # 4. the trainer
    trainer = Trainer(
        model, train_dataloader, valid_dataloader, criterion, optimizer, scheduler, config,  # Kornia's order
        callbacks={"preprocess": preprocess, "augmentations": augmentations},
    )
    state = trainer.fit()  # execute your training!
    return {k: float(v) for k, v in state.metrics.items() if k.startswith("valid/")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    print(main(args.output_dir or tempfile.mkdtemp(prefix="kornia-example-"), args.epochs))
