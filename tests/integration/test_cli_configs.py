"""Every experiment in ``configs/`` validates and trains one short epoch through the real command line,
on small real data (digits, generated shapes, generated image folders and CIFAR-10 files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainforge.cli import main
from trainforge.config.hydra_cli import check_experiment_file

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
COMMON = ["trainer.max_epochs=1", "logger=null", "+trainer.report=false", "+trainer.progress_bar=false"]


def _image_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for label, colour in enumerate(("red", "blue")):
            folder = root / split / colour
            folder.mkdir(parents=True)
            for i in range(6):
                pixels = rng.integers(0, 80, (40, 40, 3)).astype(np.uint8)
                pixels[..., 0 if label == 0 else 2] += 150
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}.bin", 8) for i in range(1, 6)), ("test_batch.bin", 16)]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 255, (n, 3072)).astype(np.uint8)
        np.concatenate([labels[:, None], images], axis=1).tofile(folder / name)
    return root


def _overrides(name: str, tmp: Path) -> list[str]:
    if name == "classification_digits":
        return ["+data.TRAIN.0.limit=256", "+trainer.limit_val_batches=1"]
    if name == "segmentation_shapes":
        return ["data.TRAIN.0.dataset.params.num_samples=32", "data.VALID.0.dataset.params.num_samples=16"]
    if name == "embedding_shapes":
        return ["data.TRAIN.0.dataset.params.samples_per_class=8", "data.VALID.0.dataset.params.samples_per_class=6",
                "data.VALID.0.dataset.params.queries_per_class=2"]
    if name == "classification_imagefolder":
        root = _image_folder(tmp / "images")
        return [f"data.TRAIN.0.dataset.params.root={root / 'train'}",
                f"data.VALID.0.dataset.params.root={root / 'valid'}",
                "data.TRAIN.0.dataset.params.image_size=32", "data.VALID.0.dataset.params.image_size=32",
                "data.TRAIN.0.dataloader.num_workers=0", "data.VALID.0.dataloader.num_workers=0"]
    if name == "detection_shapes":
        return ["data.TRAIN.0.dataset.params.num_samples=16", "data.VALID.0.dataset.params.num_samples=8"]
    if name == "classification_cifar10":
        root = _cifar(tmp / "cifar")
        return [f"data.TRAIN.0.dataset.params.root={root}", f"data.VALID.0.dataset.params.root={root}",
                "trainer.precision=32", "trainer.accelerator=cpu", "data.TRAIN.0.dataloader.batch_size=20",
                "data.TRAIN.0.dataloader.num_workers=0", "data.VALID.0.dataloader.num_workers=0"]
    raise AssertionError(f"configs/{name}.yaml has no short-run overrides in this test: add them")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_validates(path: Path) -> None:
    assert check_experiment_file(path).startswith(f"{path}: valid")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_trains_one_short_epoch(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), *COMMON, *_overrides(path.stem, tmp_path),
                 f"hydra.run.dir={run}"]) == 0
    metrics = json.loads((run / "train_metrics.json").read_text())
    assert "train/loss" in metrics and np.isfinite(metrics["train/loss"])
    assert any(k.startswith("valid/") for k in metrics), sorted(metrics)
    assert (run / "experiment.yaml").is_file() and (run / "checkpoints").is_dir()
