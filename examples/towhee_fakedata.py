"""Towhee's first Trainer example with trainforge names: resnet18 on FakeData, set up by a
TrainingConfig, trained with ``trainer.train()`` and saved/loaded (small sizes, CPU).

Run: ``python examples/towhee_fakedata.py [--output-dir DIR]``.
"""

from __future__ import annotations

import argparse
import tempfile

import torchvision.models as models
from torchvision import datasets, transforms

from trainforge import Trainer, TrainingConfig


def main(output_dir: str) -> Trainer:
    model = models.resnet18(num_classes=10)  # random init: nothing is downloaded
    fake_transform = transforms.Compose([transforms.ToTensor()])
    train_data = datasets.FakeData(size=8, image_size=(3, 32, 32), transform=fake_transform, random_offset=0)
    eval_data = datasets.FakeData(size=4, image_size=(3, 32, 32), transform=fake_transform, random_offset=100)

    training_config = TrainingConfig(
        output_dir=output_dir,
        max_epochs=2,
        batch_size=4,
        print_steps=1,
        lr=5e-5,
        optimizer="Adam",
        scheduler="linear",
        tensorboard=True,
    )
    trainer = Trainer(model, training_config, train_data=train_data, valid_data=eval_data)
    trainer.train()
    trainer.save(f"{output_dir}/another_save_path")
    trainer.load(f"{output_dir}/another_save_path")
    print("epoch:", trainer.epoch)
    return trainer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args()
    main(args.output_dir or tempfile.mkdtemp(prefix="towhee-example-"))
