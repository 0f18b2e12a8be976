"""ModelCheckpointWithOnnx through a real Trainer fit on digits: an ONNX file beside each kept checkpoint that
computes what that checkpoint's weights compute, pruned with it, and training unchanged by the exports."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from trainforge import Trainer, TrainingConfig
from trainforge.callbacks import ModelCheckpointWithOnnx
from trainforge.data import load_digits_split
from trainforge.errors import ConfigError
from trainforge.models import build_model
from trainforge.pretrained import load_pretrained


def _fit(tmp_path, name: str, ema_decay: float | None = None, **callback):
    train, valid = load_digits_split()
    torch.manual_seed(0)
    # dropout: a model left in eval mode, or a random draw by the export, would change the weights trained next
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2), nn.Linear(144, 10))
    cfg = TrainingConfig(output_dir=str(tmp_path / name), max_epochs=3, batch_size=128, lr=0.05, scheduler="constant",
                         tensorboard=False, report=False, print_steps=1000, progress_bar=False, ema_decay=ema_decay)
    checkpoint = ModelCheckpointWithOnnx(monitor="valid/accuracy", mode="max", save_top_k=1, **callback)
    trainer = Trainer(model, cfg, train_data=train, valid_data=valid, callbacks=[checkpoint])
    trainer.fit()
    return trainer, checkpoint, valid


def test_each_kept_checkpoint_has_an_onnx_file_with_its_weights(tmp_path):
    trainer, checkpoint, valid = _fit(tmp_path, "onnx", export_to_onnx=True, onnx_params={"opset_version": 16})
    folder = trainer.run_dir / "checkpoints"
    best = checkpoint.best_model_path
    onnx_files = sorted(p.name for p in folder.glob("*.onnx"))
    assert onnx_files == sorted([f"{best.name}.onnx", "last.onnx"])  # pruned checkpoints took theirs along
    assert checkpoint.last_onnx.opset_version == 16 and checkpoint.last_onnx.max_abs_diff["output"] < 1e-4
    x = valid.tensors[0][:50]
    session = ort.InferenceSession(str(folder / f"{best.name}.onnx"), providers=["CPUExecutionProvider"])
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2), nn.Linear(144, 10)).eval()
    load_pretrained(model, base_path=best)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], model(x).numpy(), atol=1e-4)
    last = ort.InferenceSession(str(folder / "last.onnx"), providers=["CPUExecutionProvider"])
    trainer.model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(last.run(None, {"input": x.numpy()})[0], trainer.model(x).numpy(), atol=1e-4)


def test_exporting_does_not_change_training(tmp_path):
    with_onnx, _, _ = _fit(tmp_path, "a", export_to_onnx=True)
    without, _, _ = _fit(tmp_path, "b", export_to_onnx=False)
    for (name, a), b in zip(with_onnx.model.state_dict().items(), without.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert not list((without.run_dir / "checkpoints").glob("*.onnx"))


def test_with_ema_the_averaged_weights_are_exported(tmp_path):
    trainer, _, valid = _fit(tmp_path, "ema", ema_decay=0.5, export_to_onnx=True)
    x = valid.tensors[0][:50]
    last = trainer.run_dir / "checkpoints" / "last.onnx"
    session = ort.InferenceSession(str(last), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    trainer.model.eval()
    with torch.no_grad():
        averaged, raw = trainer.ema.module(x).numpy(), trainer.model(x).numpy()
    np.testing.assert_allclose(got, averaged, atol=1e-4)
    assert np.abs(got - raw).max() > 1e-3  # the raw weights compute something else


def test_bad_onnx_settings_name_the_key():
    with pytest.raises(ConfigError, match="onnx_params has no key 'opset'; did you mean 'opset_version'"):
        ModelCheckpointWithOnnx(export_to_onnx=True, onnx_params={"opset": 11})
    with pytest.raises(ConfigError, match="onnx_params must be a mapping"):
        ModelCheckpointWithOnnx(export_to_onnx=True, onnx_params=[11])
    with pytest.raises(ConfigError, match="export_to_onnx='yes'"):
        ModelCheckpointWithOnnx(export_to_onnx="yes")


def test_remove_head_exports_the_embeddings_of_a_composed_model(tmp_path):
    from trainforge.callbacks.onnx_checkpoint import _Features
    from trainforge.export import export_onnx

    model = build_model("small_cnn", {"width": 4, "depth": 2}, pooling_name="Pooling", head_name="ClassificationHead",
                        num_classes=3, in_channels=1)
    result = export_onnx(_Features(model), tmp_path / "e.onnx", torch.rand(2, 1, 8, 8))
    assert result.max_abs_diff["output"] < 1e-4
    callback = ModelCheckpointWithOnnx(export_to_onnx=True, remove_head=True)

    class Owner:
        pass

    owner = Owner()
    owner.model = nn.Linear(2, 2)
    state = type("S", (), {"owner": owner})()
    with pytest.raises(ConfigError, match="remove_head=true needs a model built from parts"):
        callback._module(state)
