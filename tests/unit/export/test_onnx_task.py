"""ONNXTask: metrics from onnxruntime equal the torch model's, predictions keep the output names, and every
bad path, provider and input mapping gets an error naming the key and the fix."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from trainforge import Trainer
from trainforge.data import load_digits_split
from trainforge.errors import ConfigError
from trainforge.export import export_onnx
from trainforge.registry import get_registry
from trainforge.tasks import ONNXTask
from trainforge.tasks.onnx import OnnxModel, feed_keys, resolve_providers

CPU = ["CPUExecutionProvider"]


def _config(tmp_path, name: str) -> dict:
    return {"output_dir": str(tmp_path / name), "tensorboard": False, "checkpoint": None, "report": False,
            "metrics": ["Accuracy", "F1Score"]}


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    train, valid = load_digits_split()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    folder = tmp_path_factory.mktemp("digits")
    trainer = Trainer(model, {"output_dir": str(folder / "train"), "max_epochs": 2, "lr": 0.05, "tensorboard": False,
                              "checkpoint": None, "report": False, "print_steps": 1000}, train_data=train)
    trainer.fit()
    path = trainer.export_onnx(folder / "digits.onnx").path
    return model, path, valid


def test_onnx_metrics_equal_the_torch_models(tmp_path, digits_model):
    model, path, valid = digits_model
    expected = Trainer(model, _config(tmp_path, "torch")).evaluate(valid, phase="TEST")
    task = ONNXTask(path_to_onnx=path, providers=CPU, config=_config(tmp_path, "onnx"))
    got = task.evaluate(valid, phase="TEST")
    assert set(got) == {"test/accuracy", "test/f1_score"}  # no loss: an ONNX model has none
    assert got["test/accuracy"] == pytest.approx(expected["test/accuracy"], abs=1e-6) and got["test/accuracy"] > 0.5
    assert got["test/f1_score"] == pytest.approx(expected["test/f1_score"], abs=1e-6)
    assert get_registry("tasks").get("ONNXTask") is ONNXTask


def test_predict_returns_each_output_by_name(tmp_path, digits_model):
    model, path, valid = digits_model
    task = ONNXTask(path_to_onnx=path, providers=CPU, config=_config(tmp_path, "predict"))
    batches = task.predict(valid)
    logits = torch.cat([b["output"] for b in batches])
    with torch.no_grad():
        torch.testing.assert_close(logits, model(valid.tensors[0]), atol=1e-4, rtol=1e-4)
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(len(valid)))


def test_unavailable_providers_fall_back_to_the_cpu_with_a_warning_and_typos_fail(caplog):
    with caplog.at_level(logging.WARNING, logger="trainforge.tasks.onnx"):
        assert resolve_providers(["TensorrtExecutionProvider"]) == CPU
    assert "TensorrtExecutionProvider" in caplog.text and "running on CPUExecutionProvider" in caplog.text
    with pytest.raises(ConfigError, match=r"'CUDAExecutionProvidr' is not an onnxruntime .*did you mean "
                                          r"'CUDAExecutionProvider'"):
        resolve_providers(["CUDAExecutionProvidr"])
    with pytest.raises(ConfigError, match="must be a list"):
        resolve_providers("CPUExecutionProvider")
    with pytest.raises(ConfigError, match=r"providers\[0\]=3: expected a provider name"):
        resolve_providers([3])


def test_bad_files_name_themselves(tmp_path):
    with pytest.raises(ConfigError, match="no such ONNX file"):
        OnnxModel(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ConfigError, match=f"{junk} is not a valid ONNX model"):
        OnnxModel(junk)
    with pytest.raises(ConfigError, match="needs path_to_onnx"):
        ONNXTask()
    with pytest.raises(TypeError, match="runs an OnnxModel"):
        ONNXTask(nn.Linear(2, 2))


def test_an_onnx_task_is_never_trained(tmp_path, digits_model):
    _, path, valid = digits_model
    task = ONNXTask(path_to_onnx=path, providers=CPU, config=_config(tmp_path, "fit"), train_data=valid)
    with pytest.raises(ConfigError, match=r"only tests and predicts .*trainforge export"):
        task.fit()


def test_input_mapping_torchok_names_and_errors(tmp_path, caplog):
    assert feed_keys(["input"], None) == {"input": "input"}
    with caplog.at_level(logging.WARNING, logger="trainforge.tasks.onnx"):
        assert feed_keys(["input"], {"input.1": "image"}) == {"input": "image"}  # TorchOk's default input name
    assert "'input.1'" in caplog.text
    with pytest.raises(ConfigError, match="keys_mapping_onnx2dataset is required: the model takes 2 inputs"):
        feed_keys(["a", "b"], None)
    with pytest.raises(ConfigError, match=r"keys_mapping_onnx2dataset.c: the model has no input 'c'"):
        feed_keys(["a", "b"], {"a": "input", "c": "mask"})
    with pytest.raises(ConfigError, match="does not map the model's input 'b'"):
        feed_keys(["a", "b"], {"a": "input"})

    class Images(Dataset):  # TorchOk's key for the image, read from trainforge's "input"
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict:
            return {"input": torch.full((3,), float(i)), "target": torch.tensor(i % 2)}

    path = export_onnx(nn.Linear(3, 2), tmp_path / "m.onnx", torch.ones(2, 3)).path
    task = ONNXTask(path_to_onnx=path, providers=CPU, keys_mapping_onnx2dataset={"input": "image"},
                    config=_config(tmp_path, "map"))
    assert len(task.predict(Images())) == 1
    task = ONNXTask(path_to_onnx=path, providers=CPU, keys_mapping_onnx2dataset={"input": "pixels"},
                    config=_config(tmp_path, "bad"))
    with pytest.raises(ConfigError, match=r"reads batch\['pixels'\], but batches have \['index', 'input', 'target'\]"):
        task.predict(Images())


def test_external_data_outside_the_models_folder_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../etc/passwd")
    graph = helper.make_graph([helper.make_node("Add", ["input", "w"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 2])], [weight])
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "evil.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ConfigError) as error:
        OnnxModel(path, CPU)
    assert f"{path} is not a valid ONNX model" in str(error.value) and "'../../etc/passwd'" in str(error.value)


def test_inputs_the_model_cannot_take_are_named_with_both_shapes(tmp_path):
    path = export_onnx(nn.Linear(3, 2), tmp_path / "fixed.onnx", torch.ones(2, 3), dynamic_batch=False).path
    model = OnnxModel(path, CPU)
    with pytest.raises(ConfigError, match=r"could not run .*fixed.onnx on input \(5, 3\) float32 \(the model takes "
                                          r"input \[2, 3\]"):
        model(torch.ones(5, 3))
