"""ONNX end to end through the real CLI: TorchOk's classification_cifar10 trains one short epoch with
``ModelCheckpointWithOnnx``, ``trainforge export`` writes a verified file, and TorchOk's onnx_infer config
tests it with command-line overrides only — the same metrics as the torch model's. Plus the CLI's errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import EXTERNAL

from trainforge.cli import main
from trainforge.config.hydra_cli import check_experiment_file
from trainforge.errors import ConfigError
from trainforge.export import export_onnx

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_external import _fake_cifar10

CONFIGS = EXTERNAL / "torchok" / "configs"


def _train_overrides(data: Path, run: Path) -> list[str]:
    return [
        f"data.TRAIN.0.dataset.params.data_folder={data}", f"data.VALID.0.dataset.params.data_folder={data}",
        "task.params.backbone_params.pretrained=false", "trainer.accelerator=cpu", "trainer.precision=32",
        "trainer.max_epochs=1", "data.TRAIN.0.dataloader.batch_size=16", "data.TRAIN.0.dataloader.num_workers=0",
        "data.VALID.0.dataloader.num_workers=0", "+trainer.report=false", f"hydra.run.dir={run}",
        "callbacks.0.name=ModelCheckpointWithOnnx", "+callbacks.0.params.export_to_onnx=true",
        "+callbacks.0.params.onnx_params={opset_version: 16}",
    ]


def _onnx_overrides(onnx: Path, data: Path, run: Path) -> list[str]:
    return [
        f"task.params.path_to_onnx={onnx}", "metrics.0.mapping.preds=output", "metrics.1.mapping.preds=output",
        f"data.TEST.0.dataset.params.data_folder={data}", "data.TEST.0.dataloader.num_workers=0",
        f"data.PREDICT.0.dataset.params.data_folder={data}", "data.PREDICT.0.dataloader.num_workers=0",
        "trainer.accelerator=cpu", "+trainer.report=false", f"hydra.run.dir={run}",
    ]


@pytest.mark.slow
def test_train_export_and_onnx_infer_give_the_torch_models_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = _fake_cifar10(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "-cp", str(CONFIGS), "-cn", "classification_cifar10", *_train_overrides(data, run)]) == 0
    torch_metrics = json.loads((run / "train_metrics.json").read_text())  # VALID is CIFAR-10's test batch
    checkpoints = run / "checkpoints"
    assert {"last.onnx", "last"} <= {p.name for p in checkpoints.iterdir()}
    capsys.readouterr()

    assert main(["export", str(run), "--onnx", str(tmp_path / "model.onnx"), "--opset", "17"]) == 0
    out = capsys.readouterr().out
    assert f"onnx: {tmp_path / 'model.onnx'}" in out and "verified with onnxruntime" in out
    assert f"checkpoint: {checkpoints}" in out  # the best by valid/f1_score: one epoch, one checkpoint

    for onnx, name in ((tmp_path / "model.onnx", "cli"), (checkpoints / "last.onnx", "callback")):
        assert main(["test", "-cp", str(CONFIGS), "-cn", "onnx_infer",
                     *_onnx_overrides(onnx, data, tmp_path / name)]) == 0
        metrics = json.loads((tmp_path / name / "test_metrics.json").read_text())
        assert set(metrics) == {"test/accuracy", "test/f1_score"}
        assert metrics["test/accuracy"] == pytest.approx(torch_metrics["valid/accuracy"], abs=1e-6)
        assert metrics["test/f1_score"] == pytest.approx(torch_metrics["valid/f1_score"], abs=1e-6)

    # PREDICT as shipped: CIFAR10 with test_mode=true gives images without labels; one output row per image
    import torch

    assert main(["predict", "-cp", str(CONFIGS), "-cn", "onnx_infer",
                 *_onnx_overrides(tmp_path / "model.onnx", data, tmp_path / "predict")]) == 0
    (saved,) = (tmp_path / "predict").glob("predictions_*.pt")
    predictions = torch.load(saved, weights_only=True)
    assert predictions["output"].shape == (32, 10) and sorted(predictions["index"].tolist()) == list(range(32))


def test_onnx_infer_as_shipped_names_both_placeholders_and_the_fix():
    with pytest.raises(ConfigError) as error:
        check_experiment_file(CONFIGS / "onnx_infer.yaml")
    message = str(error.value)
    for words in ("task.params.path_to_onnx='<onnx_path>' is a placeholder", "task.params.path_to_onnx=model.onnx",
                  "metrics[0].mapping.preds='<onnx_output>'", "metrics.0.mapping.preds=", "metrics[1].mapping.preds"):
        assert words in message, message


def test_onnx_infer_with_a_real_file_lists_its_outputs_for_the_mapping(tmp_path):
    import torch

    path = export_onnx(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)),
                       tmp_path / "m.onnx", input_shape=(3, 32, 32)).path
    with pytest.raises(ConfigError, match=r"metrics\[0\].mapping.preds='<onnx_output>' is a placeholder: set it to "
                                          r"the ONNX output name \(this model's outputs: output\)"):
        check_experiment_file(CONFIGS / "onnx_infer.yaml", [f"task.params.path_to_onnx={path}"])
    fixed = [f"task.params.path_to_onnx={path}", "metrics.0.mapping.preds=output", "metrics.1.mapping.preds=output"]
    assert check_experiment_file(CONFIGS / "onnx_infer.yaml", fixed).startswith(f"{CONFIGS / 'onnx_infer.yaml'}: valid")
    with pytest.raises(ConfigError, match=f"task.params.path_to_onnx: {tmp_path / 'nope.onnx'}: no such ONNX file"):
        check_experiment_file(CONFIGS / "onnx_infer.yaml", [f"task.params.path_to_onnx={tmp_path / 'nope.onnx'}"])


def test_export_errors_name_the_path_and_the_fix(tmp_path, capsys):
    cases = {
        tmp_path / "missing": "does not exist; give a run folder",
        tmp_path: "is not a trainforge run folder or checkpoint",
    }
    (tmp_path / "file.txt").write_text("x")
    cases[tmp_path / "file.txt"] = "is a file, not a trainforge run folder"
    for source, words in cases.items():
        assert main(["export", str(source), "--onnx", str(tmp_path / "o.onnx")]) == 2
        err = capsys.readouterr().err
        assert str(source) in err and words in err, err
    assert main(["export", str(tmp_path), "--onnx", "o.onnx", "--input-shape", "3,x"]) == 2
    assert "--input-shape '3,x': expected C,H,W" in capsys.readouterr().err


def test_export_of_a_python_trainer_run_points_to_trainer_export_onnx(tmp_path, capsys):
    from torch import nn

    from trainforge import Trainer
    from trainforge.data import load_digits_split

    train, valid = load_digits_split()
    trainer = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
                      {"output_dir": str(tmp_path / "run"), "max_epochs": 1, "tensorboard": False, "report": False,
                       "print_steps": 1000}, train_data=train, valid_data=valid)
    trainer.fit()
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert "has no experiment.yaml" in err and "trainer.export_onnx" in err
    (tmp_path / "mine.onnx").write_bytes(b"not yours")
    with pytest.raises(Exception, match="overwrite=True"):
        trainer.export_onnx(tmp_path / "mine.onnx")
    assert (tmp_path / "mine.onnx").read_bytes() == b"not yours"
