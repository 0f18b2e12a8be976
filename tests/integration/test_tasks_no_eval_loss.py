"""A validation loss that is not computed is not logged (it used to be NaN): a detection run (torchvision
detectors give no losses in eval mode) and a margin-head run (``compute_loss_on_valid=False``) log no
``valid/loss`` in metrics.jsonl, train_metrics.json, TensorBoard or the report; a monitor of it is refused at
set-up, naming what the run does log."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from trainforge import TrainingConfig
from trainforge.callbacks import EarlyStopping, ModelCheckpoint
from trainforge.cli import main
from trainforge.data.shapes import ShapesDetection, ShapesRetrieval, collate_detection
from trainforge.errors import ConfigError
from trainforge.models import build_model
from trainforge.tasks import MarginLearnTask, ObjectDetectionTask

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _config(tmp_path, **changes):
    base = dict(max_epochs=1, batch_size=8, lr=3e-3, seed=0, output_dir=str(tmp_path), tensorboard=False,
                progress_bar=False, checkpoint=None, report=False)
    return TrainingConfig(**{**base, **changes})


def _detection(tmp_path, **changes):
    train, valid = ShapesDetection(16, image_size=32, seed=0), ShapesDetection(8, image_size=32, seed=1)
    torch.manual_seed(0)
    model = build_model("small_resnet", {"width": 8, "depth": 2}, head_name="FCOSHead", head_params={"image_size": 32},
                        num_classes=len(train.classes))
    callbacks = changes.pop("callbacks", None)
    return ObjectDetectionTask(model, _config(tmp_path, **changes), callbacks=callbacks,
                               train_data=DataLoader(train, batch_size=8, collate_fn=collate_detection),
                               valid_data=DataLoader(valid, batch_size=4, collate_fn=collate_detection))


def _margin(tmp_path, **changes):
    train = ShapesRetrieval("train", samples_per_class=8, image_size=16, seed=0)
    valid = ShapesRetrieval("valid", samples_per_class=4, queries_per_class=2, image_size=16, seed=0)
    torch.manual_seed(0)
    model = build_model("small_cnn", {"width": 4, "depth": 2}, pooling_name="PoolingLinear",
                        pooling_params={"out_channels": 8}, head_name="ArcFaceHead", num_classes=6)
    return MarginLearnTask(model, _config(tmp_path, **changes), train_data=train, valid_data=valid)


def _records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _numbers(value):
    """Every number in a JSON value (nested dicts and lists), to find a NaN or inf anywhere."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _train_detection_yaml(tmp_path, *overrides):
    run = tmp_path / "run"
    code = main(["train", "--config", str(CONFIGS / "detection_shapes.yaml"), "trainer.max_epochs=1",
                 "+trainer.progress_bar=false", "data.TRAIN.0.dataset.params.num_samples=16",
                 "data.VALID.0.dataset.params.num_samples=8", "task.params.backbone_params.width=8",
                 "task.params.backbone_params.depth=2", f"hydra.run.dir={run}", *overrides])
    return code, run


def test_detection_run_logs_no_valid_loss_and_no_nan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, run = _train_detection_yaml(tmp_path)
    assert code == 0
    records = _records(run / "metrics.jsonl")
    logged = {name for record in records for name in record.get("metrics", record)}
    assert any(name.startswith("valid/detection/") for name in logged), logged  # validation did run
    assert "train/loss" in logged
    assert not [name for name in logged if name.startswith("valid/loss")], logged
    raw = (run / "metrics.jsonl").read_text(encoding="utf-8")
    assert "NaN" not in raw and "Infinity" not in raw
    text = (run / "train_metrics.json").read_text(encoding="utf-8")
    summary = json.loads(text)
    assert "NaN" not in text and all(math.isfinite(n) for n in _numbers(summary)), summary
    assert "valid/detection/map_50" in summary and not [k for k in summary if k.startswith("valid/loss")], summary
    # TensorBoard has no valid/loss scalar either
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(run.rglob("events.out.tfevents.*"))
    assert events, sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    tags: set[str] = set()
    for event in events:
        accumulator = EventAccumulator(str(event))
        accumulator.Reload()
        tags |= set(accumulator.Tags().get("scalars", []))
    assert "train/loss" in tags and not [t for t in tags if t.startswith("valid/loss")], tags
    # the report builds: its loss chart has train/loss alone
    page = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert "train/loss" in page and "valid/loss" not in page and "NaN" not in page


def test_valid_loss_monitor_in_a_detection_experiment_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, run = _train_detection_yaml(
        tmp_path, "+callbacks=[{name: ModelCheckpoint, params: {monitor: valid/loss, mode: min}}]")
    assert code != 0
    err = capsys.readouterr().err
    assert "callbacks[0].params.monitor='valid/loss' is not a metric this run logs" in err, err
    assert "torchvision detectors compute no losses in eval mode" in err and "valid/detection" in err
    assert not run.exists()  # refused before the run folder is made: no folder holding one experiment.yaml


@pytest.mark.parametrize("override, where", [
    ("+callbacks=[{name: ModelCheckpoint, params: {monitor: valid/loss, mode: min}}]", "callbacks[0].params.monitor"),
    ("+callbacks=[{name: EarlyStopping, params: {monitor: valid/loss/classification}}]",
     "callbacks[0].params.monitor"),
    ("optimization.0.scheduler.name=ReduceLROnPlateau "
     "+optimization.0.scheduler.pl_params={interval: epoch, monitor: valid/loss}",
     "optimization[0].scheduler.pl_params.monitor"),
])
def test_config_check_refuses_a_valid_loss_monitor_on_detection(tmp_path, monkeypatch, capsys, override, where):
    """``config check`` runs the check training runs: the detection task's missing loss is known from its class."""
    monkeypatch.chdir(tmp_path)
    overrides = override.split(" +")
    overrides[1:] = [f"+{o}" for o in overrides[1:]]
    assert main(["config", "check", str(CONFIGS / "detection_shapes.yaml"), *overrides]) != 0
    err = capsys.readouterr().err
    assert f"{where}='valid/loss" in err and "is not a metric this run logs (ObjectDetectionTask)" in err, err
    assert "monitor 'valid/detection/map'" in err
    fixed = [o.replace("valid/loss/classification", "valid/detection/map").replace("valid/loss", "valid/detection/map")
             .replace("mode: min", "mode: max") for o in overrides]
    assert main(["config", "check", str(CONFIGS / "detection_shapes.yaml"), *fixed]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("where", ["checkpoint", "early_stopping", "callback", "term"])
def test_valid_loss_monitor_on_detection_is_refused_at_setup(tmp_path, where):
    changes = {"checkpoint": {"monitor": "valid/loss", "mode": "min", "save_top_k": 1}} if where == "checkpoint" \
        else {"early_stopping": {"monitor": "valid/loss", "patience": 2}} if where == "early_stopping" \
        else {"callbacks": [ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="valid/loss")]} \
        if where == "callback" else {"callbacks": [EarlyStopping(monitor="valid/loss/classification")]}
    task = _detection(tmp_path, **changes)
    with pytest.raises(ConfigError) as error:
        task.fit()
    message = str(error.value)
    assert "monitor=" in message and "valid/loss" in message
    assert "torchvision detectors compute no losses in eval mode" in message
    assert "valid/detection/map" in message and "train/loss" in message and "(it logs: " in message
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before the first step is logged


def test_map_monitor_on_detection_is_accepted(tmp_path):
    task = _detection(tmp_path, checkpoint={"monitor": "valid/detection/map_50", "mode": "max", "save_top_k": 1})
    metrics = task.fit().metrics
    assert math.isfinite(metrics["valid/detection/map_50"]) and "valid/loss" not in metrics


def test_margin_task_without_valid_loss(tmp_path):
    metrics = _margin(tmp_path / "plain").fit().metrics
    assert "valid/loss" not in metrics and "valid/retrieval/recall_at_1" in metrics
    with pytest.raises(ConfigError, match=r"checkpoint.monitor='valid/loss' .*compute_loss_on_valid=False.*"
                                          r"valid/retrieval"):
        _margin(tmp_path / "monitor", checkpoint={"monitor": "valid/loss", "mode": "min"}).fit()


def test_valid_loss_objective_on_detection_fails_before_training(tmp_path, monkeypatch, capsys):
    """A sweep's default objective is valid/loss without a ModelCheckpoint monitor: refused before training."""
    monkeypatch.chdir(tmp_path)
    code, run = _train_detection_yaml(tmp_path, "--objective", "valid/loss")
    assert code != 0
    err = capsys.readouterr().err
    assert "--objective 'valid/loss' is not a metric this run logs" in err and "mode 'max'" in err, err
    assert not (run / "metrics.jsonl").exists() and not list(run.rglob("*.pt"))


def test_evaluate_alone_ignores_the_monitor_and_logs_no_loss(tmp_path):
    valid = ShapesDetection(4, image_size=32, seed=2)
    model = build_model("small_resnet", {"width": 8, "depth": 2}, head_name="FCOSHead", head_params={"image_size": 32},
                        num_classes=len(valid.classes))
    task = ObjectDetectionTask(model, _config(tmp_path, checkpoint={"monitor": "valid/loss", "mode": "min"}))
    metrics = task.evaluate(DataLoader(valid, batch_size=2, collate_fn=collate_detection))  # no training: no monitor
    assert "valid/loss" not in metrics and "valid/detection/map" in metrics
