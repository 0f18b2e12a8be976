"""Training from image files end to end: a timm model on an image folder of generated shapes (class names
in the report), the same accuracy from the cached and the uncached folder, and a SIGKILL mid-epoch with
augmentation and the cache on that resumes bit-exactly (RELIABILITY B1 extended to image data).

Also the child process of the kill test: ``python test_data_training.py RUN_DIR DATA_DIR CACHE_DIR``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from trainforge import Trainer
from trainforge.data import SHAPE_CLASSES, ImageFolder, make_shapes


def shapes_folder(root: Path, num_samples: int, seed: int, size: int = 24) -> Path:
    """Generated shapes written as PNG files, one sub-folder per class."""
    images, labels = make_shapes(num_samples, image_size=size, seed=seed).tensors
    for index, (image, label) in enumerate(zip(images, labels.tolist())):
        folder = root / SHAPE_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:04d}.png")
    return root


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 16, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveMaxPool2d(4), nn.Flatten(), nn.Linear(16 * 4 * 4, len(SHAPE_CLASSES)))


def quiet(tmp_path: Path, name: str, **extra) -> dict:
    values = dict(output_dir=str(tmp_path / name), max_epochs=5, batch_size=32, lr=1e-2, optimizer="AdamW",
                  tensorboard=False, report=False, checkpoint=None, print_steps=10_000, metrics=["Accuracy"], seed=0)
    return {**values, **extra}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("shapes")
    return shapes_folder(base / "train", 240, seed=0), shapes_folder(base / "valid", 90, seed=1)


def test_cached_and_uncached_reach_the_same_accuracy(tmp_path, folders):
    import albumentations as A

    results = {}
    for name, cache in (("plain", False), ("cached", True)):
        train = ImageFolder(folders[0], image_size=24, augment=[A.HorizontalFlip(), A.RandomBrightnessContrast(p=0.2)],
                            cache=cache, cache_dir=tmp_path / "cache")
        valid = ImageFolder(folders[1], image_size=24, cache=cache, cache_dir=tmp_path / "cache")
        trainer = Trainer(small_cnn(), quiet(tmp_path, name), train_data=train, valid_data=valid)
        trainer.fit()
        weights = [p.detach().clone() for p in trainer.model.parameters()]
        results[name] = (trainer.evaluate()["valid/accuracy"], weights)
    assert results["plain"][0] == results["cached"][0] and results["plain"][0] > 0.6
    assert all(torch.equal(a, b) for a, b in zip(results["plain"][1], results["cached"][1]))


@pytest.mark.slow
def test_timm_model_fine_tuned_on_an_image_folder(tmp_path, folders):
    import timm

    train, valid = ImageFolder(folders[0]), ImageFolder(folders[1])
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=len(train.classes))
    config = quiet(tmp_path, "timm", max_epochs=6, lr=3e-3)
    config["report"] = True
    trainer = Trainer(model, config, train_data=train, valid_data=valid)
    trainer.fit()
    assert trainer.class_names == list(SHAPE_CLASSES) == train.classes  # read from the data set's classes
    accuracy = trainer.evaluate()["valid/accuracy"]
    assert accuracy > 0.6, accuracy
    page = (tmp_path / "timm" / "report" / "index.html").read_text()
    assert all(name in page for name in SHAPE_CLASSES)


# -- SIGKILL mid-epoch with augmentation and the cache on --------------------------------------------
def child(run_dir: str, data_dir: str, cache_dir: str) -> None:
    import albumentations as A
    import kornia.augmentation as K

    from trainforge.data.augment import BatchAugment

    torch.set_num_threads(1)
    train = ImageFolder(data_dir, image_size=16, cache=True, cache_dir=cache_dir,
                        augment=[A.HorizontalFlip(), A.RandomBrightnessContrast(p=0.5)])
    config = quiet(Path(run_dir).parent, Path(run_dir).name, max_epochs=2, num_workers=2,
                   checkpoint={"every_n_steps": 4, "save_last": True, "save_top_k": 1})
    config["metrics"] = []
    flip = BatchAugment([K.RandomVerticalFlip(), K.RandomAffine(degrees=10.0, p=0.5)])
    trainer = Trainer(small_cnn(), config, train_data=train, callbacks={"augmentations": flip})
    trainer.fit(resume_from="auto")
    digest = hashlib.sha256()
    for key, value in sorted(trainer.model.state_dict().items()):
        digest.update(key.encode() + value.detach().contiguous().numpy().tobytes())
    Path(run_dir, "final.json").write_text(json.dumps({"hash": digest.hexdigest(), "step": trainer.global_step}))


def spawn(run_dir: Path, data_dir: Path, cache_dir: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop("TRAINFORGE_FAULT", None)
    if fault:
        env["TRAINFORGE_FAULT"] = fault
    command = [sys.executable, __file__, str(run_dir), str(data_dir), str(cache_dir)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sigkill_mid_epoch_with_augmentation_and_cache_resumes_bit_exactly(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    data, cache = shapes_folder(tmp_path / "data", 120, seed=2, size=16), tmp_path / "cache"
    ImageFolder(data, image_size=16, cache=True, cache_dir=cache)  # built once, before both runs read it
    with ThreadPoolExecutor(2) as pool:  # 4 steps an epoch: step 6 is mid-epoch 2, after the step-4 checkpoint
        runs = [pool.submit(spawn, tmp_path / "reference", data, cache),
                pool.submit(spawn, tmp_path / "killed", data, cache, "kill_after_step:6")]
        reference, killed = (run.result() for run in runs)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = spawn(tmp_path / "killed", data, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads((tmp_path / "reference" / "final.json").read_text())
    assert json.loads((tmp_path / "killed" / "final.json").read_text()) == expected and expected["step"] == 8


if __name__ == "__main__":
    child(*sys.argv[1:4])
