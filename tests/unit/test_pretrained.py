"""Partial loading for fine-tuning (TorchOk's ``load_checkpoint``): TorchOk's documented merges, deepest
prefix wins, exclusions, strict errors naming keys, shapes and files, every source kind, and the Trainer
wiring (applied before the optimizer and EMA; never on top of a resumed run)."""

from __future__ import annotations

import pytest
import torch
from helpers import cfg, mlp
from torch import nn
from torch.utils.data import Subset

from trainforge import Trainer, TrainingConfig
from trainforge.errors import ConfigError, ModelLoadError
from trainforge.export import export_safetensors
from trainforge.pretrained import load_pretrained, read_weights


class Toy(nn.Module):
    """TorchOk's documentation example: keys backbone.linear.{1,2} and head.linear.{1,2,3}, all zero."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.linear = nn.ParameterDict({k: nn.Parameter(torch.zeros(1)) for k in ("1", "2")})
        self.head = nn.Module()
        self.head.linear = nn.ParameterDict({k: nn.Parameter(torch.zeros(1)) for k in ("1", "2", "3")})


def values(model: nn.Module) -> dict[str, float]:
    return {k: v.item() for k, v in model.state_dict().items()}


def save(path, tensors: dict[str, float]):
    torch.save({k: torch.tensor([v]) for k, v in tensors.items()}, path)
    return path


@pytest.fixture
def files(tmp_path):
    keys = ["backbone.linear.1", "backbone.linear.2", "head.linear.1", "head.linear.2", "head.linear.3"]
    return {
        "base": save(tmp_path / "base.ckpt", dict.fromkeys(keys, 1.0)),
        "head": save(tmp_path / "head.pt", {"linear.1": 3.0, "linear.2": 5.0, "linear.3": 7.0}),
        "head_absolute": save(tmp_path / "head_abs.pt", {"head.linear.1": 3.0, "head.linear.2": 5.0,
                                                          "head.linear.3": 7.0}),
        "head_linear_2": save(tmp_path / "head3.pt", {"linear.2": 10.0}),
    }


# -- TorchOk's documented semantics -------------------------------------------------------------------
@pytest.mark.parametrize("head", ["head", "head_absolute"])
def test_torchok_documented_merges(files, head):
    model = Toy()
    load_pretrained(model, files["base"], {"head": files[head]})
    assert values(model) == {"backbone.linear.1": 1, "backbone.linear.2": 1, "head.linear.1": 3,
                             "head.linear.2": 5, "head.linear.3": 7}
    model = Toy()
    result = load_pretrained(model, files["base"], {"head": files[head], "head.linear.2": files["head_linear_2"]})
    assert values(model)["head.linear.2"] == 10 and result.sources["head.linear.2"] == str(files["head_linear_2"])
    model = Toy()
    result = load_pretrained(model, files["base"], {"head": files[head], "head.linear.2": files["head_linear_2"]},
                             exclude_keys="head.linear.3", strict=False)
    assert values(model) == {"backbone.linear.1": 1, "backbone.linear.2": 1, "head.linear.1": 3,
                             "head.linear.2": 10, "head.linear.3": 0}
    assert result.excluded == ["head.linear.3"] and result.missing == []


def test_the_deepest_prefix_wins_whatever_the_order_and_shallower_fills_the_rest(tmp_path, files):
    deeper = save(tmp_path / "deeper.pt", {"1": 20.0})  # only head.linear.1, relative to "head.linear"
    model = Toy()
    result = load_pretrained(model, files["base"], {"head.linear": deeper, "head": files["head"]})
    assert values(model)["head.linear.1"] == 20 and values(model)["head.linear.2"] == 5
    assert result.sources["head.linear.1"] == str(deeper) and result.sources["head.linear.3"] == str(files["head"])


def test_relative_true_and_false_resolve_what_the_per_key_guess_cannot(tmp_path):
    model = nn.ModuleDict({"head": nn.ModuleDict({"head": nn.Linear(1, 1, bias=False)})})  # key head.head.weight
    file = tmp_path / "head.pt"
    torch.save({"head.weight": torch.full((1, 1), 4.0)}, file)
    with pytest.raises(ModelLoadError, match=r"unexpected \(1\): 'head.weight' \(1, 1\) from .*head.pt"):
        load_pretrained(model, overrides={"head": file})  # TorchOk's guess: "head.weight" is already absolute
    load_pretrained(model, overrides={"head": file}, relative=True)
    assert model["head"]["head"].weight.item() == 4.0


def test_absolute_override_may_be_a_whole_model_checkpoint(tmp_path, files):
    other = save(tmp_path / "other.pt", {"backbone.linear.1": 8.0, "backbone.linear.2": 8.0, "head.linear.1": 9.0,
                                          "head.linear.2": 9.0, "head.linear.3": 9.0})
    model = Toy()
    load_pretrained(model, files["base"], {"head": other}, relative=False)
    assert values(model) == {"backbone.linear.1": 1, "backbone.linear.2": 1, "head.linear.1": 9,
                             "head.linear.2": 9, "head.linear.3": 9}
    with pytest.raises(ModelLoadError, match=r"head.pt has no keys under 'head'.*set relative=True"):
        load_pretrained(Toy(), files["base"], {"head": files["head"]}, relative=False)


def test_exclusion_matches_whole_name_components(tmp_path):
    def net():
        torch.manual_seed(0)
        return nn.ModuleDict({"fc": nn.Linear(2, 2), "fc2": nn.Linear(2, 2)})

    file = tmp_path / "w.pt"
    torch.save({k: torch.full_like(v, 3.0) for k, v in net().state_dict().items()}, file)
    model = net()
    initial = model["fc"].weight.detach().clone()
    result = load_pretrained(model, file, exclude_keys=["fc"])
    assert torch.equal(model["fc"].weight, initial) and bool((model["fc2"].weight == 3).all())
    assert result.excluded == ["fc.bias", "fc.weight"]


# -- errors -----------------------------------------------------------------------------------------
def test_strict_errors_name_keys_shapes_and_files_and_load_nothing(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).state_dict()
    state["9.weight"] = torch.zeros(7)
    del state["2.bias"]
    file = tmp_path / "other.pth"
    torch.save(state, file)
    with pytest.raises(ModelLoadError) as caught:
        load_pretrained(model, file)
    message = str(caught.value)
    assert f"'0.weight': {file} has (5, 4), model (3, 4)" in message
    assert f"'2.weight': {file} has (2, 5), model (2, 3)" in message
    assert "missing (1): '2.bias' (2,)" in message and f"unexpected (1): '9.weight' (7,) from {file}" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ModelLoadError, match=r"shape mismatch .* even with strict=False"):
        load_pretrained(model, file, strict=False)  # a wrong shape is never skipped silently


def test_non_strict_skips_missing_and_unexpected_keys_with_a_warning(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    file = tmp_path / "part.pt"
    torch.save({"0.weight": torch.ones(3, 4), "extra.weight": torch.ones(1)}, file)
    with pytest.warns(UserWarning, match=r"missing \(3\): '0.bias'.*\n.*unexpected \(1\): 'extra.weight'"):
        result = load_pretrained(model, file, strict=False)
    assert bool((model[0].weight == 1).all()) and result.missing == ["0.bias", "1.weight", "1.bias"]
    assert result.unexpected == ["extra.weight"]


def test_prefixes_and_exclusions_that_name_nothing_are_config_errors(files):
    with pytest.raises(ConfigError, match=r"overrides: 'haed' names no module .*close matches: 'head'"):
        load_pretrained(Toy(), files["base"], {"haed": files["head"]})
    with pytest.raises(ConfigError, match=r"exclude_keys: 'head.linear.4' names no module"):
        load_pretrained(Toy(), files["base"], exclude_keys=["head.linear.4"])
    with pytest.raises(ConfigError, match="needs base_path or overrides"):
        load_pretrained(Toy())


def test_unreadable_sources_name_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no weights file at .*missing\.pt"):
        read_weights(tmp_path / "missing.pt")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match=r"not a trainforge checkpoint .*checkpoints/last"):
        read_weights(tmp_path / "run")
    torch.save({"w": torch.ones(1), "opts": {"lr": 0.1}}, tmp_path / "mixed.pt")
    with pytest.raises(ModelLoadError, match=r"mixed.pt is not a state dict: .* 'opts' holds dict"):
        read_weights(tmp_path / "mixed.pt")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10" * 20)
    with pytest.raises(ModelLoadError, match=r"garbage\.safetensors"):
        read_weights(tmp_path / "garbage.safetensors")


# -- every source kind ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(digits):
    return Subset(digits[0], range(256))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, small):
    tmp = tmp_path_factory.mktemp("pretrained")
    trainer = Trainer(mlp(1), cfg(tmp, checkpoint={"save_top_k": 1, "save_last": True}), train_data=small)
    trainer.fit()
    return trainer.run_dir, {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("kind", ["pt", "lightning", "safetensors", "checkpoint"])
def test_every_source_kind_loads_bitwise(tmp_path, trained_run, kind):
    run_dir, expected = trained_run
    path = {
        "pt": tmp_path / "w.pt",
        "lightning": tmp_path / "w.ckpt",
        "safetensors": tmp_path / "w.safetensors",
        "checkpoint": run_dir / "checkpoints" / "last",
    }[kind]
    if kind == "pt":
        torch.save(expected, path)
    elif kind == "lightning":
        torch.save({"state_dict": expected, "epoch": 3}, path)
    elif kind == "safetensors":
        export_safetensors(expected, path)
    model = mlp(0)
    result = load_pretrained(model, path)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    assert set(result.sources.values()) == {str(path)}


# -- the Trainer -------------------------------------------------------------------------------------
def test_config_load_checkpoint_is_applied_before_the_ema_and_the_optimizer(tmp_path, trained_run, small):
    run_dir, expected = trained_run
    options = {"base_path": str(run_dir / "checkpoints" / "last"), "exclude_keys": ["3"]}
    model = mlp(0)
    initial_head = model[3].weight.detach().clone()
    trainer = Trainer(model, cfg(tmp_path, ema_decay=0.9, load_checkpoint=options), train_data=small)
    trainer.setup()
    assert torch.equal(model[1].weight, expected["1.weight"]) and torch.equal(model[3].weight, initial_head)
    shadow = trainer.ema.state_dict()["shadow"]
    assert torch.equal(shadow["1.weight"], expected["1.weight"])  # the average starts from the pretrained weights
    assert trainer.optimizer.param_groups[0]["params"][0] is model[1].weight


def test_unknown_load_checkpoint_key_names_its_path():
    with pytest.raises(ConfigError, match=r"load_checkpoint.overridden_name2ckpt_path is not a setting; "
                                          r"did you mean 'overrides'"):
        TrainingConfig(load_checkpoint={"base_path": "a.pt", "overridden_name2ckpt_path": {"head": "b.pt"}})
    with pytest.raises(ConfigError, match=r"load_checkpoint.exclude_key is not a setting; did you mean 'exclude_keys'"):
        TrainingConfig(load_checkpoint={"base_path": "a.pt", "exclude_key": ["head"]})
    with pytest.raises(ConfigError, match=r"load_checkpoint.overrides.head=3 has type int"):
        TrainingConfig(load_checkpoint={"overrides": {"head": 3}})


def test_resume_wins_over_load_checkpoint_with_a_warning(tmp_path, trained_run, small):
    run_dir, _ = trained_run
    first = Trainer(mlp(0), cfg(tmp_path, checkpoint={"save_top_k": 1, "save_last": True}), train_data=small)
    first.fit()
    resumed_weights = {k: v.clone() for k, v in first.model.state_dict().items()}
    pretrained = {"base_path": str(run_dir / "checkpoints" / "last")}  # other weights (seed 1)
    config = cfg(tmp_path, checkpoint={"save_top_k": 1, "save_last": True}, load_checkpoint=pretrained)
    again = Trainer(mlp(0), config, train_data=small)
    with pytest.warns(UserWarning, match="load_checkpoint was not applied: a resumed run continues"):
        again.fit(resume_from=first.run_dir)  # the saved run is complete: nothing more to train
    assert all(torch.equal(v, resumed_weights[k]) for k, v in again.model.state_dict().items())
    at_start = []

    class Snapshot:
        def on_fit_start(self, state):
            at_start.append(fresh.model[1].weight.detach().clone())

    fresh = Trainer(mlp(0), cfg(tmp_path / "fresh", load_checkpoint=pretrained), train_data=small,
                    callbacks=[Snapshot()])
    fresh.fit(resume_from="auto")  # nothing to resume in a new folder: a new run gets the pretrained weights
    assert torch.equal(at_start[0], trained_run[1]["1.weight"])
