"""Hypothesis fuzzing of experiment configs and command-line overrides (RELIABILITY B28) and refusal of
``_target_`` instantiation and Python tags (B16): the only exception that ever escapes is ``ConfigError``."""

from __future__ import annotations

import copy
import importlib
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainforge.config import check_experiment, parse_experiment
from trainforge.config.schema import to_dict
from trainforge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
BASE = yaml.safe_load((ROOT / "configs" / "classification_digits.yaml").read_text())
#: Modules a config must never get imported (E12: Hydra's instantiate blocklist is not a boundary).
FORBIDDEN_IMPORTS = ("os", "posix", "subprocess", "builtins", "pdb", "shutil", "socket", "pickle")

values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["", "../../etc/passwd", "valid/loss", "AdamW", "TRAIN", "ÿ☃", "${oc.env:HOME}", "1e-3"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, item in node.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _paths(item, (*prefix, i))
    return found


PATHS = [p for p in _paths(BASE) if p]


def _get(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


@st.composite
def mutated(draw: st.DrawFn) -> dict:
    cfg = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = cfg
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(values)
            elif action == "delete" and isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or retyped this path
    return cfg


@pytest.fixture
def import_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = importlib.import_module

    def spy(name: str, package: str | None = None) -> Any:
        seen.append(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", spy)
    return seen


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=mutated())
def test_fuzzed_configs_raise_only_config_errors(cfg: dict, import_spy: list[str], tmp_path: Path) -> None:
    try:
        parsed = parse_experiment(cfg)
        check_experiment(parsed)
    except ConfigError as error:
        assert str(error).strip()
    else:
        assert parse_experiment(to_dict(parsed)) == parsed  # a valid config round-trips
        assert all(not isinstance(v, float) or math.isfinite(v)
                   for v in (parsed.optimization[0].optimizer.params.get("lr", 1.0),))
    leaves = {v for p in _paths(cfg) if p for v in [_get(cfg, p)] if isinstance(v, str)}
    assert not [n for n in import_spy if n.split(".")[0] in FORBIDDEN_IMPORTS or n in leaves], import_spy
    assert list(tmp_path.iterdir()) == []


overrides = st.lists(
    st.builds(lambda k, v: f"{k}={v}",
              st.sampled_from(["trainer.max_epochs", "optimization.0.optimizer.params.lr", "data.TRAIN.0.limit",
                               "+trainer.max_epoch", "task.name", "metrics", "+data.TRIAN", "joint_loss",
                               "callbacks.0.params.monitor", "~task", "seed_params.seed", "+x._target_"]),
              st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=10)
              | st.sampled_from(["1", "-1", "0", "nan", "inf", "null", "[]", "{}", "1e999", "${oc.env:HOME}",
                                 "${now:%H}", "os.system", "'a,b'", "[1,2"])),
    min_size=1, max_size=3,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=overrides)
def test_fuzzed_overrides_raise_only_config_errors(extra: list[str], tmp_path: Path) -> None:
    from trainforge.config.hydra_cli import ConfigSource, compose

    source = ConfigSource(ROOT / "configs", "classification_digits")
    try:
        cfg, _ = compose(source, extra)
        check_experiment(parse_experiment(cfg))
    except ConfigError as error:
        assert str(error).strip()
    assert list(tmp_path.iterdir()) == []


SENTINEL = "trainforge_b16_sentinel"


@pytest.mark.parametrize("attack", [
    {"task": {"name": "ClassificationTask", "params": {"_target_": "os.system", "command": f"touch {SENTINEL}"}}},
    {"callbacks": [{"name": "ModelCheckpoint", "params": {"_target_": "torch.load", "weights_only": False}}]},
    {"logger": {"_target_": "builtins.eval", "source": "print(1)"}},
    {"metrics": [{"name": "Accuracy", "params": {"x": {"_target_": "pdb.Pdb._getval", "arg": "1"}}}]},
    {"optimization": [{"optimizer": {"_target_": "${x}"}}]},
])
def test_target_instantiation_is_refused_with_its_key_path(attack: dict, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = {**copy.deepcopy(BASE), **attack}
    with pytest.raises(ConfigError, match=r"_target_.*registered name") as error:
        check_experiment(parse_experiment(cfg))
    section = next(iter(attack))
    assert str(error.value).startswith(f"config: {section}")
    assert not (tmp_path / SENTINEL).exists()


def test_python_tags_are_refused(tmp_path: Path) -> None:
    from trainforge.config.hydra_cli import ConfigSource, check_file

    (tmp_path / "evil.yaml").write_text(f"task: !!python/object/apply:os.system ['touch {tmp_path / SENTINEL}']\n")
    with pytest.raises(ConfigError, match=r"evil\.yaml"):
        check_file(ConfigSource(tmp_path, "evil"))
    assert not (tmp_path / SENTINEL).exists()
