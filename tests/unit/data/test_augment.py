from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch

from trainforge.data.augment import BatchAugment
from trainforge.errors import ConfigError
from trainforge.registry import get_registry


def test_boxes_move_with_the_images():
    flip = BatchAugment([K.RandomHorizontalFlip(p=1.0)], targets="boxes")
    batch = {"input": torch.rand(2, 3, 10, 20),
             "target": [{"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]), "labels": torch.tensor([3])},
                        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]}
    out = flip.apply(batch)
    assert torch.equal(out["input"], batch["input"].flip(-1))
    assert out["target"][0]["boxes"].tolist() == [[14.0, 0.0, 19.0, 5.0]] and out["target"][0]["labels"].tolist() == [3]
    assert out["target"][1]["boxes"].shape == (0, 4)


def test_built_by_name_as_from_yaml():
    augment = get_registry("augmentations").build(
        "BatchAugment", augmentations=[{"name": "RandomHorizontalFlip", "params": {"p": 1.0}}, "RandomGrayscale"])
    x = torch.rand(4, 3, 8, 8)
    assert augment(x).shape == x.shape
    with pytest.raises(ConfigError, match=r"augmentations\[0\]"):
        BatchAugment([42])
    with pytest.raises(ConfigError, match=r"augmentations\[0\] has no key .prob."):
        BatchAugment([{"name": "RandomHorizontalFlip", "params": {"prob": 0.5}}])


def test_as_the_trainers_augmentations_stage(tmp_path, digits):
    from torch import nn

    from trainforge import Trainer

    seen = []
    flip = BatchAugment([K.RandomHorizontalFlip(p=1.0)])

    def augmentations(x):
        seen.append(x.clone())
        return flip(x)

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    config = dict(output_dir=str(tmp_path / "run"), max_epochs=1, batch_size=256, tensorboard=False, report=False,
                  checkpoint=None, print_steps=10_000)
    trainer = Trainer(model, config, train_data=digits[0], callbacks={"augmentations": augmentations})
    trainer.fit()
    assert len(seen) == len(trainer.train_loader)
