"""TorchOk's SOP and Sweet Pepper example configs, unchanged, train one short epoch through ``trainforge
train`` with command-line overrides only, on fake archives in the real layouts (tests/torchok_example_data.py):
the data sets by TorchOk's names, its pairwise/triplet/ArcFace tasks and its HitAtKMeter / JaccardIndex."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import EXTERNAL
from torchok_example_data import fake_sop, fake_sweet_pepper

from trainforge.cli import main

CONFIGS = EXTERNAL / "torchok" / "configs"


def _overrides(data: Path, size: int, batch_size: int = 8) -> list[str]:
    phases = ("TRAIN", "VALID")
    return [
        *(f"data.{p}.0.dataset.params.data_folder={data}" for p in phases),
        *(f"data.{p}.0.dataset.transform.0.params.{side}={size}" for p in phases for side in ("height", "width")),
        *(f"data.{p}.0.dataloader.num_workers=0" for p in phases),
        f"data.TRAIN.0.dataloader.batch_size={batch_size}", "data.VALID.0.dataloader.batch_size=16",
        "task.params.backbone_params.pretrained=false", "trainer.accelerator=cpu", "++trainer.precision=32",
        "trainer.max_epochs=1", "+trainer.report=false",
    ]


def _train(tmp_path: Path, name: str, overrides: list[str]) -> tuple[Path, dict[str, float]]:
    assert main(["train", "-cp", str(CONFIGS), "-cn", name, *overrides]) == 0
    (run,) = [p.parent for p in (tmp_path / "runs").rglob("experiment.yaml")]
    metrics = json.loads((run / "train_metrics.json").read_text())
    assert math.isfinite(metrics["train/loss"]), metrics
    return run, metrics


@pytest.fixture
def sop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return fake_sop(tmp_path / "data")


def _hit_at_1(metrics: dict[str, float]) -> float:
    value = metrics["valid/hit_at_k_meter"]  # TorchOk's valid/HitAtKMeter, monitored by its checkpoint callback
    assert 0.0 <= value <= 1.0, metrics
    return value


@pytest.mark.slow
def test_pairwise_sop_trains_one_epoch(tmp_path, sop, capsys):
    run, metrics = _train(tmp_path, "pairwise_sop", _overrides(sop, 32))
    assert run.parent.name == "pairwise_resnet18"
    assert math.isfinite(metrics["train/loss/contrastive"]) and math.isfinite(metrics["valid/loss/contrastive"])
    _hit_at_1(metrics)
    err = capsys.readouterr().err
    assert "data.TRAIN[0].dataset.params.download is ignored" in err
    assert "callbacks[0].params.monitor='valid/HitAtKMeter' is read as 'valid/hit_at_k_meter'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "runs"]


def test_triplet_sop_trains_on_triplets_and_validates_on_sop(tmp_path, sop):
    run, metrics = _train(tmp_path, "triplet_sop", _overrides(sop, 32, batch_size=4))
    assert run.parent.name == "triplet_resnet18"
    assert metrics["train/loss/triplet_margin"] == pytest.approx(metrics["train/loss"])
    # compute_loss_on_valid: False: neither the loss nor its terms are logged (they were NaN)
    assert not [name for name in metrics if name.startswith("valid/loss")], metrics
    _hit_at_1(metrics)


def test_representation_arcface_sop_trains_with_the_freeze_entry_fixed(tmp_path, sop, capsys):
    # TorchOk's file says `stage: 1`, a key TorchOk silently ignores (it reads `stages`); trainforge refuses it,
    # so the override renames it
    fixes = ["~callbacks.0.params.freeze_modules.1.stage", "+callbacks.0.params.freeze_modules.1.stages=1"]
    run, metrics = _train(tmp_path, "representation_arcface_sop", [*_overrides(sop, 32), *fixes])
    assert run.parent.name == "semnasnet_100"
    assert 0.0 <= metrics["train/accuracy"] <= 1.0
    _hit_at_1(metrics)
    assert "is read as MarginLearnTask" in capsys.readouterr().err
    assert (run / "checkpoints" / "last.onnx").is_file()  # export_to_onnx with remove_head


@pytest.mark.slow
def test_segmentation_sweet_pepper_trains_hrnet_one_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = fake_sweet_pepper(tmp_path / "data", train=4, valid=2, size=32)
    run, metrics = _train(tmp_path, "segmentation_sweet_pepper", _overrides(data, 64, batch_size=2))
    assert run.parent.name == "hrnet_w18"
    assert {"train/loss/cross_entropy", "train/loss/dice"} <= set(metrics)
    assert 0.0 <= metrics["valid/jaccard_index"] <= 1.0
    assert (run / "checkpoints" / "last.onnx").is_file()  # ModelCheckpointWithOnnx, export_to_onnx: true


def test_missing_sop_archive_names_data_folder_and_layout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "-cp", str(CONFIGS), "-cn", "triplet_sop", *_overrides(tmp_path / "nowhere", 32)])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "data.TRAIN[0].dataset: TRIPLET_SOP(" in err
    assert f"data_folder {str(tmp_path / 'nowhere')!r} does not exist" in err
    assert "sop_triplet_train.csv" in err and "download: true is ignored" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("train_metrics.json"))
