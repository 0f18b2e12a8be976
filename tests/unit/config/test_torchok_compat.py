"""TorchOk / MMCV names read before the schema: ``paramwise_cfg`` mapped onto parameter-group rules that
give every parameter MMCV's learning rate and weight decay, ``gradient_clip_algorithm``, and a stale config
stopping with one error that lists every problem."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from trainforge.config.build import _param_groups, check_experiment
from trainforge.config.schema import OptimizationPair, parse
from trainforge.config.torchok import adapt, read_experiment
from trainforge.errors import ConfigError
from trainforge.trainer import Trainer
from trainforge.training_config import TrainingConfig

ROOT = Path(__file__).resolve().parents[3]
DIGITS = yaml.safe_load((ROOT / "configs" / "classification_digits.yaml").read_text())


class Net(nn.Module):
    """Every kind of parameter MMCV's rules tell apart: conv weight and bias, norm weight and bias, a
    depth-wise conv with a bias, and a backbone/neck split for custom_keys."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, groups=8))
        self.neck = nn.Sequential(nn.Conv2d(8, 4, 1), nn.GroupNorm(2, 4))
        self.head = nn.Linear(4, 2)


def mmcv_reference(model: nn.Module, lr: float, wd: float, cfg: dict) -> dict[str, tuple[float, float]]:
    """MMCV's DefaultOptimizerConstructor.add_params, written out from its source (the oracle)."""
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    custom = cfg.get("custom_keys", {})
    keys = sorted(sorted(custom), key=len, reverse=True)
    out = {}
    for prefix, module in model.named_modules():
        is_norm = isinstance(module, norms)
        is_dw = isinstance(module, nn.Conv2d) and module.in_channels == module.groups
        for name, _ in module.named_parameters(recurse=False):
            full = f"{prefix}.{name}" if prefix else name
            group_lr, group_wd = lr, wd
            for key in keys:
                if key in full:
                    group_lr = lr * custom[key].get("lr_mult", 1.0)
                    group_wd = wd * custom[key].get("decay_mult", 1.0)
                    break
            else:
                if name == "bias" and not is_norm:
                    group_lr = lr * cfg.get("bias_lr_mult", 1.0)
                if is_norm:
                    group_wd = wd * cfg.get("norm_decay_mult", 1.0)
                elif is_dw:
                    group_wd = wd * cfg.get("dwconv_decay_mult", 1.0)
                elif name == "bias":
                    group_wd = wd * cfg.get("bias_decay_mult", 1.0)
            out[full] = (group_lr, group_wd)
    return out


def ours(model: nn.Module, lr: float, wd: float, cfg: dict) -> tuple[dict[str, tuple[float, float]], list[str]]:
    values = {"optimization": [{"optimizer": {"name": "SGD", "params": {"lr": lr, "weight_decay": wd},
                                              "paramwise_cfg": copy.deepcopy(cfg)}}]}
    notes: list[str] = []
    assert adapt(values, notes) == []
    pair = parse(OptimizationPair, values["optimization"][0], "optimization[0]")
    names = [n for n, _ in model.named_parameters()]
    groups = _param_groups(model, names, pair, "optimization[0]")
    by_id = {id(p): (g["lr"], g.get("weight_decay", wd)) for g in groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in model.named_parameters()}, notes


@pytest.mark.parametrize("cfg", [
    {"bias_lr_mult": 2.0, "bias_decay_mult": 0.0},  # fcos_resnet50_coco.yaml
    {"bias_lr_mult": 2.0, "bias_decay_mult": 0.0, "custom_keys": {"backbone": {"lr_mult": 0.1, "decay_mult": 0.002}}},
    {"custom_keys": {"backbone": {"lr_mult": 0.5}, "backbone.1": {"decay_mult": 0.0}, "neck.0": {"lr_mult": 3.0}},
     "bias_decay_mult": 0.5},  # the longest key wins, whatever the order
    {"norm_decay_mult": 0.0, "dwconv_decay_mult": 0.25, "bias_lr_mult": 1.5, "bypass_duplicate": True},
])
def test_paramwise_cfg_gives_every_parameter_mmcvs_lr_and_decay(cfg: dict) -> None:
    model = Net()
    got, notes = ours(model, 0.01, 1e-4, cfg)
    expected = mmcv_reference(model, 0.01, 1e-4, cfg)
    assert set(got) == set(expected)
    for name in expected:
        assert got[name] == pytest.approx(expected[name]), name
    assert any("paramwise_cfg (MMCV's) is read as optimization[0].param_groups" in n for n in notes)


def test_paramwise_keys_without_an_equivalent_are_named_with_the_fix() -> None:
    values = {"optimization": [{"optimizer": {"name": "SGD", "params": {"lr": 0.1}, "paramwise_cfg": {
        "dcn_offset_lr_mult": 0.1, "bias_lr_mult": 2.0, "custom_keys": {"head": {"lr_mult": 1, "momentum": 0}},
        "bias_lr_mul": 2}}}]}
    problems = adapt(values, [])
    text = "\n".join(problems)
    assert "paramwise_cfg.dcn_offset_lr_mult: trainforge's models have no deformable convolutions" in text
    assert "paramwise_cfg.custom_keys.head: only lr_mult and decay_mult" in text and "momentum" in text
    assert "paramwise_cfg.bias_lr_mul is not an MMCV paramwise option" in text and "param_groups" in text
    assert "param_groups" not in values["optimization"][0]  # nothing half-mapped


def test_a_custom_key_that_matches_nothing_is_an_error_naming_it() -> None:
    values = {"optimization": [{"optimizer": {"name": "SGD", "params": {"lr": 0.1},
                                              "paramwise_cfg": {"custom_keys": {"rel_pos.mlp": {"decay_mult": 0}}}}}]}
    assert adapt(values, []) == []
    pair = parse(OptimizationPair, values["optimization"][0], "optimization[0]")
    model = Net()
    with pytest.raises(ConfigError, match=r"param_groups\[0\]\.pattern='\*rel_pos\.mlp\*' matches no parameter"):
        _param_groups(model, [n for n, _ in model.named_parameters()], pair, "optimization[0]")


def _digits(**trainer: object) -> dict:
    cfg = copy.deepcopy(DIGITS)
    cfg["trainer"].update(trainer)
    return cfg


def test_gradient_clip_algorithm_value_is_checked_with_the_choices() -> None:
    cfg, _ = read_experiment(_digits(gradient_clip_val=1.0, gradient_clip_algorithm="value"))
    assert cfg.trainer.gradient_clip_algorithm == "value"
    with pytest.raises(ConfigError, match=r"trainer\.gradient_clip_algorithm='l2' is not allowed; expected one of "
                                          r"norm, value"):
        read_experiment(_digits(gradient_clip_algorithm="l2"))
    with pytest.raises(ConfigError, match="gradient_clip_algorithm='max' is not allowed; expected one of norm, value"):
        TrainingConfig(gradient_clip_algorithm="max")


@pytest.mark.parametrize("algorithm", ["value", "norm"])
def test_gradient_clip_algorithm_clips_each_element_or_the_norm(tmp_path: Path, algorithm: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 4) * 100  # large inputs: every gradient element is far above the clip value
    data = torch.utils.data.TensorDataset(x, torch.randn(16, 3) * 100)
    model = nn.Linear(4, 3)
    before = model.weight.detach().clone()
    cfg = TrainingConfig(output_dir=str(tmp_path / algorithm), max_epochs=1, batch_size=16, optimizer="SGD", lr=1.0,
                         scheduler=None, gradient_clip_val=0.01, gradient_clip_algorithm=algorithm,
                         checkpoint=None, tensorboard=False, report=False, loss="MSELoss", metrics=[])
    Trainer(model, cfg, train_data=data).fit()
    step = (model.weight.detach() - before).abs()
    if algorithm == "value":  # SGD with lr=1: each element moved by exactly the clipped gradient
        assert torch.allclose(step, torch.full_like(step, 0.01), atol=1e-6)
    else:
        assert step.norm() <= 0.01 + 1e-6 and step.max() < 0.01 - 1e-4


def test_fcos_config_with_the_listed_fixes_loads_and_notes_what_was_read(monkeypatch) -> None:
    """Follow the error's advice on TorchOk's fcos_resnet50_coco.yaml: the result validates, with the
    paramwise_cfg, COCODetection, FitResize, PadIfNeeded and MLFlowLoggerX names read as ours."""
    from helpers import EXTERNAL

    from trainforge.config.hydra_cli import compose, locate

    monkeypatch.setenv("DB_URI", "x")
    monkeypatch.setenv("S3_ARTIFACT_BUCKET", "y")
    path = EXTERNAL / "torchok" / "configs" / "detection" / "fcos_resnet50_coco.yaml"
    values, _ = compose(locate(str(path), None, None), [])
    with pytest.raises(ConfigError) as error:
        read_experiment(values, source="fcos")
    assert str(error.value).count("\n  ") == 5  # task, joint_loss, metrics, monitor, freeze: one error, five items
    assert "freeze_modules[0].module_name='backbone'" in str(error.value) and "model.backbone.body" in str(error.value)
    fixed = copy.deepcopy(values)
    params = fixed["task"]["params"]
    fixed["task"] = {"name": "ObjectDetectionTask", "params": {
        "backbone_name": "small_resnet", "backbone_params": {"width": 16, "depth": 3}, "head_name": "FCOSHead",
        "head_params": {"image_size": [400, 672], "fpn_channels": 64, "levels": 3, "score_thresh": 0.05,
                        "detections_per_img": 100, "topk_candidates": 1000, "nms_thresh": 0.5},
        "num_classes": 81, "inputs": params["inputs"]}}
    del fixed["joint_loss"], fixed["metrics"]
    fixed["callbacks"][0]["params"]["monitor"] = "valid/detection/map_50"
    fixed["callbacks"][1]["params"]["freeze_modules"][0]["module_name"] = "model.backbone.body"
    cfg, notes = read_experiment(fixed, source="fcos")
    notes = check_experiment(cfg, "train", notes)
    text = "\n".join(notes)
    assert cfg.optimization[0].param_groups[-1].pattern == "*.bias"
    assert "read as optimization[0].param_groups" in text
    assert "COCODetection is read as CocoDetection(data_folder=" in text
    assert "annotations/instances_train2017.json" in text
    assert "FitResize(max_height=400, max_width=672) is read as albumentations' LongestMaxSize" in text
    assert "params.value is read as fill" in text and "'MLFlowLoggerX' is read as 'MLflowLogger'" in text
    assert cfg.trainer.gradient_clip_algorithm == "norm" and cfg.trainer.gradient_clip_val == 35


def _leaf_paths(node: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, item in node.items():
            found += _leaf_paths(item, (*prefix, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _leaf_paths(item, (*prefix, i))
    return found


def _fcos_raw() -> dict:
    from helpers import EXTERNAL

    return yaml.safe_load((EXTERNAL / "torchok" / "configs" / "detection" / "fcos_gcvit-t_coco.yaml").read_text())


FCOS_PATHS = _leaf_paths(_fcos_raw())


def test_fuzzed_torchok_detection_configs_raise_only_config_errors() -> None:
    """Hypothesis mutates TorchOk's FCOS config anywhere (paramwise_cfg, head_params, metrics, callbacks...):
    reading it raises nothing but ``ConfigError`` (RELIABILITY B28)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    leaves = st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=True) | st.text(max_size=6) \
        | st.sampled_from(["MMDetectionMAP", "FitResize", "COCODetection", "*", "[", "valid/MMDetMAP_50"])
    anything = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), inner, max_size=3),
                            max_leaves=5)

    @st.composite
    def mutated(draw: st.DrawFn) -> dict:
        cfg = _fcos_raw()
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(FCOS_PATHS))
            parent = cfg
            try:
                for key in path[:-1]:
                    parent = parent[key]
                parent[path[-1]] = draw(anything)
            except (KeyError, IndexError, TypeError):
                continue  # an earlier mutation removed or retyped this path
        return cfg

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated())
    def run(values: dict) -> None:
        try:
            read_experiment(values, source="fuzz")
        except ConfigError:
            pass

    run()


def _fake_coco2017(root: Path, images: int = 4) -> Path:
    """COCO 2017's layout (train2017/, val2017/, annotations/instances_*.json) with generated images: one
    bright rectangle per image, annotated as category 1 (COCO ids start at 1)."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        entries, annotations = [], []
        for i in range(images):
            pixels = rng.integers(0, 40, (60, 90, 3)).astype(np.uint8)
            x, y, w, h = (int(v) for v in (rng.integers(5, 40), rng.integers(5, 25), rng.integers(15, 40),
                                              rng.integers(15, 30)))
            pixels[y:y + h, x:x + w] = 220
            Image.fromarray(pixels).save(root / split / f"{i:012d}.jpg")
            entries.append({"id": i + 1, "file_name": f"{i:012d}.jpg", "height": 60, "width": 90})
            annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0})
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": entries, "annotations": annotations, "categories": [{"id": 1, "name": "box"}]}))
    return root


def test_fcos_config_with_the_listed_fixes_trains_on_a_coco2017_folder(tmp_path: Path, monkeypatch) -> None:
    """The fixed TorchOk FCOS config trains one short epoch: COCODetection read as CocoDetection on the COCO
    2017 layout, FitResize / PadIfNeeded through albumentations, the paramwise_cfg groups in the optimizer
    (bias lr x2, no bias decay), gradient clipping by norm, the checkpoint monitoring the task's own mAP."""
    from helpers import EXTERNAL

    from trainforge.config.build import build_experiment

    monkeypatch.chdir(tmp_path)
    folder = _fake_coco2017(tmp_path / "coco")
    values = yaml.safe_load((EXTERNAL / "torchok" / "configs" / "detection" / "fcos_resnet50_coco.yaml").read_text())
    values["task"] = {"name": "ObjectDetectionTask", "params": {
        "backbone_name": "small_resnet", "backbone_params": {"width": 16, "depth": 3}, "head_name": "FCOSHead",
        "head_params": {"image_size": [64, 96], "fpn_channels": 32, "levels": 2, "score_thresh": 0.05,
                        "nms_thresh": 0.5, "detections_per_img": 100, "topk_candidates": 1000},
        "num_classes": 2}}
    del values["joint_loss"], values["metrics"], values["logger"], values["hydra"]
    values["callbacks"][0]["params"]["monitor"] = "valid/detection/map_50"
    values["callbacks"][1]["params"]["freeze_modules"][0]["module_name"] = "model.backbone.body"
    values["trainer"].update({"accelerator": "cpu", "precision": 32, "max_epochs": 1, "report": False,
                              "progress_bar": False})
    for phase in ("TRAIN", "VALID"):
        pair = values["data"][phase][0]
        pair["dataloader"].update({"batch_size": 2, "num_workers": 0})
        pair["dataset"]["params"]["data_folder"] = str(folder)
        for item in pair["dataset"]["transform"]:
            if item["name"] in ("FitResize", "PadIfNeeded"):
                keys = ("max_height", "max_width") if item["name"] == "FitResize" else ("min_height", "min_width")
                item["params"].update(dict(zip(keys, (64, 96))))
    cfg, notes = read_experiment(values, source="fcos")
    experiment = build_experiment(cfg, tmp_path / "run", notes=notes)
    trainer = experiment.trainer
    assert experiment.data["TRAIN"].data_folder == folder / "train2017" and len(experiment.data["VALID"]) == 4
    biases = {id(p) for n, p in trainer.model.named_parameters() if n.endswith(".bias")}
    norms = {id(p) for m in trainer.model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))
             for p in m.parameters(recurse=False)}
    for group in trainer.optimizer.param_groups:
        kinds = {("bias" if id(p) in biases and id(p) not in norms else "other") for p in group["params"]}
        assert len(kinds) == 1
        expected = (0.002, 0.0) if kinds == {"bias"} else (0.001, 0.0001)
        assert (group["lr"], group["weight_decay"]) == pytest.approx(expected)
    state = trainer.fit()
    assert "valid/detection/map_50" in state.metrics and trainer.checkpoint_callback.best_model_path is not None


def test_torchok_bbox_dtype_on_our_detection_data_sets_is_noted_and_dropped() -> None:
    from trainforge.config.build import dataset_params
    from trainforge.data import CocoDetection

    notes: list[str] = []
    params = dataset_params(CocoDetection, {"data_folder": "d", "annotation_path": "a.json", "bbox_dtype": "float16"},
                            "data.TRAIN[0].dataset.params", notes)
    assert params == {"data_folder": "d", "annotation_path": "a.json"}
    assert notes == ["data.TRAIN[0].dataset.params.bbox_dtype is ignored: boxes are float32 xyxy pixels; "
                     "trainer.precision sets mixed precision"]
