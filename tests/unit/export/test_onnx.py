"""export_onnx: names, dynamic batch, verification that fails on a graph that computes something else,
atomic writes that never replace a file trainforge did not write, and the errors for every bad argument."""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from trainforge.errors import ConfigError, ExportError
from trainforge.export import export_onnx, verify_onnx
from trainforge.models import build_model


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 5))


def _run(path, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})


def test_export_runs_in_onnxruntime_at_any_batch_size_and_matches_torch(tmp_path):
    model = _net().train()
    result = export_onnx(model, tmp_path / "sub" / "model.onnx", input_shape=(3, 16, 16))
    assert result.path == tmp_path / "sub" / "model.onnx" and result.path.is_file()
    assert (result.input_names, result.output_names, result.verified_batch) == (["input"], ["output"], 3)
    assert 0 <= result.max_abs_diff["output"] < 1e-4 and "verified with onnxruntime" in result.summary()
    assert model.training  # the mode it came in
    x = torch.rand(7, 3, 16, 16)
    (got,) = _run(result.path, x)
    with torch.no_grad():
        np.testing.assert_allclose(got, model.eval()(x).numpy(), atol=1e-5)
    assert [p.name for p in result.path.parent.iterdir()] == ["model.onnx"]  # no temporary file left


def test_composed_segmentation_model_and_dict_outputs_keep_their_names(tmp_path):
    seg = build_model("small_resnet", {"width": 4}, neck_name="UNetDecoder", head_name="SegmentationHead",
                      num_classes=2)
    result = export_onnx(seg, tmp_path / "seg.onnx", torch.rand(2, 3, 16, 16))
    assert result.output_names == ["output"] and _run(result.path, torch.rand(1, 3, 16, 16))[0].shape == (1, 2, 16, 16)

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 3)

        def forward(self, x):
            features = self.body(x)
            return {"embeddings": features, "prediction": features.softmax(-1)}

    result = export_onnx(TwoHeads(), tmp_path / "two.onnx", torch.rand(2, 4))
    assert result.output_names == ["embeddings", "prediction"] and set(result.max_abs_diff) == {"embeddings",
                                                                                              "prediction"}


def test_a_graph_that_baked_in_the_batch_size_fails_verification_and_writes_nothing(tmp_path):
    class BatchDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.scale * (2.0 if x.shape[0] == 2 else 1.0)  # traced as the constant 2.0

    target = tmp_path / "model.onnx"
    with pytest.raises(ExportError) as error:
        export_onnx(BatchDependent(), target, torch.ones(2, 3))
    message = str(error.value)
    assert "output 'output'" in message and "differ" in message and "atol" in message and str(target) in message
    assert not target.exists() and list(tmp_path.iterdir()) == []
    assert export_onnx(BatchDependent(), target, torch.ones(2, 3), verify=False).max_abs_diff == {}


def test_verify_onnx_names_the_difference_of_a_file_that_no_longer_matches(tmp_path):
    model = nn.Linear(3, 2)
    path = export_onnx(model, tmp_path / "m.onnx", torch.ones(2, 3)).path
    assert verify_onnx(path, model, torch.rand(5, 3))["output"] < 1e-5
    with torch.no_grad():
        model.weight[0, 0] += 0.5
    with pytest.raises(ExportError, match=r"differ on output 'output' by up to 0\.[0-9]+"):
        verify_onnx(path, model, torch.ones(5, 3))


def test_existing_files_folders_and_links_are_never_replaced_unless_ours(tmp_path):
    model = _net()
    foreign = tmp_path / "notes.onnx"
    foreign.write_bytes(b"my own notes")
    with pytest.raises(ExportError, match=r"not written by trainforge.*overwrite=True"):
        export_onnx(model, foreign, input_shape=(3, 8, 8))
    assert foreign.read_bytes() == b"my own notes"
    export_onnx(model, foreign, input_shape=(3, 8, 8), overwrite=True)
    assert foreign.read_bytes() != b"my own notes"
    ours = export_onnx(model, tmp_path / "a.onnx", input_shape=(3, 8, 8)).path
    export_onnx(nn.Sequential(model, nn.ReLU()), ours, input_shape=(3, 8, 8))  # our own file: replaced
    with pytest.raises(ExportError, match="not a file"):
        export_onnx(model, tmp_path, input_shape=(3, 8, 8))
    (tmp_path / "link.onnx").symlink_to(foreign)
    with pytest.raises(ExportError, match="symbolic link"):
        export_onnx(model, tmp_path / "link.onnx", input_shape=(3, 8, 8), overwrite=True)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "needs an example"),
        ({"input_shape": (3, 8)}, "input_shape=(3, 8)"),
        ({"input_shape": (3, 0, 8)}, "positive ints"),
        ({"input_shape": (3, 8, 8), "example_input": torch.ones(1, 3, 8, 8)}, "not both"),
        ({"example_input": torch.tensor(1.0)}, "batch tensor"),
        ({"input_shape": (3, 8, 8), "exporter": "onnx"}, "exporter='onnx'"),
        ({"input_shape": (3, 8, 8), "exporter": "dynamo", "opset_version": 16}, "opset 18 or newer"),
        ({"input_shape": (3, 8, 8), "opset_version": "17"}, "opset_version='17'"),
        ({"input_shape": (3, 8, 8), "atol": -1}, "atol=-1"),
    ],
)
def test_bad_arguments_name_themselves(tmp_path, kwargs, words):
    with pytest.raises(ConfigError) as error:
        export_onnx(_net(), tmp_path / "m.onnx", **kwargs)
    assert words in str(error.value)
    assert not (tmp_path / "m.onnx").exists()


def test_models_export_cannot_represent_are_refused_with_the_fix(tmp_path):
    class Detections(nn.Module):
        def forward(self, x):
            return [{"boxes": x[:, :4], "labels": x[:, 0].long()}]

    with pytest.raises(ExportError, match=r"returns a list of dict.*wrap it"):
        export_onnx(Detections(), tmp_path / "d.onnx", torch.ones(2, 5))
    with pytest.raises(TypeError, match=r"needs a torch\.nn\.Module or a Trainer, got str"):
        export_onnx("resnet18", tmp_path / "d.onnx", input_shape=(3, 8, 8))


def test_missing_onnx_packages_give_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ExportError, match=r"pip install 'trainforge\[onnx\]'"):
        export_onnx(_net(), tmp_path / "m.onnx", input_shape=(3, 8, 8))


def test_dynamo_exporter_gives_the_same_model(tmp_path):
    model = _net()
    result = export_onnx(model, tmp_path / "d.onnx", input_shape=(3, 8, 8), exporter="dynamo", opset_version=18)
    assert result.exporter == "dynamo" and result.max_abs_diff["output"] < 1e-4
    (got,) = _run(result.path, torch.rand(4, 3, 8, 8))
    assert got.shape == (4, 5)
