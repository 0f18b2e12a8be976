"""TorchOk's and Kornia's own example configs through ``trainforge`` unchanged: TorchOk's load (or fail naming
the key and the fix) and ``classification_cifar10`` trains one short epoch with command-line overrides only;
Kornia's image_classifier config sweeps ``lr`` through the same Hydra path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import EXTERNAL

from trainforge.cli import main
from trainforge.config.hydra_cli import check_experiment_file
from trainforge.errors import ConfigError

TORCHOK = EXTERNAL / "torchok"
KORNIA = EXTERNAL / "kornia"

#: config -> None (loads as it is) or the words its error must contain: the key path and the fix.
EXPECTED = {
    "configs/classification_cifar10.yaml": None,
    "configs/classification_cifar10_multi_validation.yaml": None,
    "configs/classification_imagenet.yaml": None,
    "configs/pairwise_sop.yaml": None,
    "configs/triplet_sop.yaml": None,
    "configs/segmentation_sweet_pepper.yaml": None,
    "configs/representation_arcface_sop.yaml": ["freeze_modules[1] has no key 'stage'", "did you mean 'stages'"],
    "configs/classification_cifar10_mlflowx.yaml": ["logger.params.tracking_uri", "set the environment variable"],
    "test_configs/cifar10_experiment.yaml": ["logger.params.tracking_uri", "CV_MLFLOW_TRACKING_URI=..."],
    "test_configs/config_with_env_variable.yaml": ["log_dir", "LOGDIR=..."],
    "test_configs/config.yaml": ["no key 'log_dir'", "logger.log_dir", "no key 'checkpoint'", "ModelCheckpoint"],
    "test_configs/config_with_bag.yaml": ["no key 'experiment_name'", "moved to logger.experiment_name"],
    "test_configs/config_without_metrics.yaml": ["no key 'log_dir'"],
    "configs/onnx_infer.yaml": ["task.params.path_to_onnx='<onnx_path>' is a placeholder", "metrics[0].mapping.preds",
                                "task.params.path_to_onnx=model.onnx", "metrics.0.mapping.preds="],
    "test_configs/config_without_loss_optimizer.yaml": ["no key 'log_dir'", "no key 'experiment_name'",
                                                        "moved to logger.experiment_name", "no key 'checkpoint'"],
    # MMDetection-based detection: one error listing every section to change, each with trainforge's form
    "configs/detection/fcos_resnet50_coco.yaml": [
        "5 key(s)", "task.name='SingleStageDetectionTask' with head_name='FCOSHead'",
        "use task.name: ObjectDetectionTask",
        "num_classes: 81", "fpn_channels: 256", "nms_thresh: 0.5", "joint_loss: MMFocalLoss (loss_cls), MMIoULoss",
        "delete joint_loss", "metrics[0].name='MMDetectionMAP'", "metrics[2].name='CocoEvalMAP'",
        "callbacks[0].params.monitor='valid/MMDetMAP_50'", "monitor valid/detection/map_50"],
    "configs/detection/fcos_gcvit-t_coco.yaml": [
        "6 key(s)", "head_name='FCOSHead'", "image_size: [512, 512]", "delete joint_loss", "CocoEvalMAP",
        "backbone_params.load_relative_position_bias_table is TorchOk's own GCViT option"],
    "configs/detection/fcos_vit-s_coco.yaml": [
        "4 key(s)", "head_name='FCOSHead'", "delete joint_loss", "MMDetectionMAP"],
    "configs/detection/detr_resnet50_coco.yaml": [
        "5 key(s)", "head_name='DETRHead'", "neither trainforge nor torchvision has DETR", "head_name: FCOSHead",
        "custom_keys.backbone: in trainforge's detectors the backbone is model.backbone.body",
        "MMGIoULoss (loss_iou)", "delete joint_loss", "MMDetectionMAP", "monitor valid/detection/map_50"],
    "configs/detection/detr_gcvit-t_coco.yaml": [
        "6 key(s)", "head_name='DETRHead'", "load_relative_position_bias_table", "custom_keys.backbone"],
}
#: The environment TorchOk's MLflow configs read (the detection ones), set for those tests only.
MLFLOW_ENV = {"DB_URI": "sqlite:///mlflow.db", "S3_ARTIFACT_BUCKET": "s3://bucket"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torchok_configs_load_or_name_key_and_fix(name: str, monkeypatch) -> None:
    if name.startswith("configs/detection/"):
        for key, value in MLFLOW_ENV.items():
            monkeypatch.setenv(key, value)
    words = EXPECTED[name]
    if words is None:
        assert check_experiment_file(TORCHOK / name).startswith(f"{TORCHOK / name}: valid")
        return
    with pytest.raises(ConfigError) as error:
        check_experiment_file(TORCHOK / name)
    for word in words:
        assert word in str(error.value), str(error.value)


def test_torchok_mlflowx_config_loads_with_its_environment_as_mlflow(monkeypatch) -> None:
    for key, value in MLFLOW_ENV.items():
        monkeypatch.setenv(key, value)
    text = check_experiment_file(TORCHOK / "configs" / "classification_cifar10_mlflowx.yaml")
    assert "logger.name='MLFlowLoggerX' is read as 'MLflowLogger'" in text
    assert "logger.params.artifact_location is ignored" in text


def _fake_cifar10(root: Path, train_per_batch: int = 16, test: int = 32) -> Path:
    """CIFAR-10's binary layout (label byte + 3072 pixel bytes per record) with generated images whose
    colour depends on the class."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)

    def write(name: str, n: int) -> None:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 3, 32, 32)).astype(np.uint8)
        for image, label in zip(images, labels):
            image[label % 3] += np.uint8(18 * (label + 1))
        np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1).tofile(folder / name)

    for i in range(1, 6):
        write(f"data_batch_{i}.bin", train_per_batch)
    write("test_batch.bin", test)
    return root


@pytest.mark.slow
def test_classification_cifar10_trains_one_epoch_with_overrides_only(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    data = _fake_cifar10(tmp_path / "data")
    overrides = [
        f"data.TRAIN.0.dataset.params.data_folder={data}", f"data.VALID.0.dataset.params.data_folder={data}",
        "task.params.backbone_params.pretrained=false", "trainer.accelerator=cpu", "trainer.precision=32",
        "trainer.max_epochs=1", "data.TRAIN.0.dataloader.batch_size=16", "data.TRAIN.0.dataloader.num_workers=0",
        "data.VALID.0.dataloader.num_workers=0", "+trainer.report=false",
    ]
    assert main(["train", "-cp", str(TORCHOK / "configs"), "-cn", "classification_cifar10", *overrides]) == 0
    (run,) = [p.parent for p in (tmp_path / "runs").rglob("experiment.yaml")]
    assert run.parent.name == "resnet18"  # logger.experiment_name
    metrics = json.loads((run / "train_metrics.json").read_text())
    assert {"valid/accuracy", "valid/f1_score", "train/loss"} <= set(metrics)
    resolved = yaml.safe_load((run / "experiment.yaml").read_text())
    assert resolved["trainer"]["precision"] == 32
    assert resolved["task"]["params"]["backbone_params"]["pretrained"] is False
    err = capsys.readouterr().err
    assert "callbacks[0].params.monitor='valid/F1Score' is read as 'valid/f1_score'" in err
    assert "data.TRAIN[0].dataset.params.download is ignored" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "runs"]  # not ~/.cache/torchok, not outputs/


@pytest.mark.slow
def test_kornia_image_classifier_config_sweeps_lr(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    data = _fake_cifar10(tmp_path / "data", train_per_batch=8, test=16)
    assert main(["train", "--config", str(KORNIA / "image_classifier" / "config.yaml"), f"data_path={data}",
                 "num_epochs=1", "batch_size=20", "--multirun", "lr=1e-3,1e-4"]) == 0
    runs = sorted(p.parent for p in (tmp_path / "runs").rglob("experiment.yaml"))
    assert len(runs) == 2 and runs[0].parent.parent.name == "kornia_image_classifier"
    configs = [yaml.safe_load((r / "experiment.yaml").read_text()) for r in runs]
    assert sorted(c["optimization"][0]["optimizer"]["params"]["lr"] for c in configs) == [0.0001, 0.001]
    assert all(c["trainer"]["max_epochs"] == 1 and c["task"]["name"] == "ImageClassifierTrainer" for c in configs)
    assert all("lr" not in c and "data_path" not in c for c in configs)  # the flat keys became the sections
    summary = (runs[0].parent / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and summary[0].startswith("job,lr,valid/accuracy")
    assert "read as Kornia's image_classifier example" in capsys.readouterr().err


@pytest.mark.parametrize("example", ["semantic_segmentation", "object_detection"])
def test_kornia_examples_without_a_local_recipe_name_the_fix(example: str) -> None:
    with pytest.raises(ConfigError, match=r"data\.TRAIN"):
        check_experiment_file(KORNIA / example / "config.yaml")


def test_multi_validation_config_evaluates_each_set_with_its_own_batch_size(tmp_path, monkeypatch) -> None:
    """TorchOk's classification_cifar10_multi_validation.yaml: its two VALID sets (batch_size 128 and 64)
    keep their own batch sizes."""
    from trainforge.config.build import build_experiment
    from trainforge.config.hydra_cli import compose, locate
    from trainforge.config.torchok import read_experiment

    monkeypatch.chdir(tmp_path)
    data = _fake_cifar10(tmp_path / "data", train_per_batch=4, test=200)
    overrides = [f"data.{phase}.{i}.dataset.params.data_folder={data}" for phase, i in
                 (("TRAIN", 0), ("VALID", 0), ("VALID", 1))]
    overrides += ["task.params.backbone_params.pretrained=false", "trainer.accelerator=cpu", "trainer.precision=32",
                  "data.TRAIN.0.dataloader.num_workers=0", "data.TRAIN.0.dataloader.batch_size=16",
                  "data.VALID.0.dataloader.num_workers=0",
                  "data.VALID.1.dataloader.num_workers=0"]
    values, _ = compose(locate(None, str(TORCHOK / "configs"), "classification_cifar10_multi_validation"), overrides)
    cfg, notes = read_experiment(values)
    experiment = build_experiment(cfg, tmp_path / "run", notes=notes)
    sizes: list[int] = []

    class Recorder:
        def on_eval_batch_end(self, state) -> None:
            sizes.append(len(state.batch["input"]))

    experiment.trainer.callbacks.append(Recorder())
    metrics = experiment.trainer.evaluate()
    assert sizes == [128, 72, 64, 64, 64, 8]
    assert len([k for k in metrics if k.endswith("/loss") and k.startswith("valid")]) == 2
