"""The safe YAML loader (``trainforge.yaml_io``) as users meet it: through ``TrainingConfig.from_yaml``,
``trainforge config check`` and ``load_yaml`` — numbers as people write them, repeated keys, alias bombs,
binary and non-UTF-8 files, Python tags."""

from __future__ import annotations

import time

import pytest
import yaml

from trainforge import TrainingConfig
from trainforge.cli import main
from trainforge.errors import ConfigError
from trainforge.yaml_io import MAX_NODES, dump_yaml, load_yaml, load_yaml_text


def write(tmp_path, text: str | bytes, name: str = "run.yaml"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_numbers_as_people_write_them(tmp_path):
    path = write(tmp_path, "lr: 1e-3\nweight_decay: 5E-4\nmax_epochs: 3\nwarmup_ratio: .1\neval_strategy: no\n")
    cfg = TrainingConfig.from_yaml(path)
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float)
    assert cfg.weight_decay == 0.0005
    assert cfg.warmup_ratio == 0.1
    assert cfg.eval_strategy == "no"  # YAML 1.1 reads a bare `no` as False


def test_yaml_12_scalars():
    values = load_yaml_text("a: 1e3\nb: -2.5e-2\nc: [yes, off, true]\nd: 017\ne: 0x1f\nf: 1:30\ng: 2024-01-02\nh: ~\n")
    assert values == {"a": 1000.0, "b": -0.025, "c": ["yes", "off", True], "d": 17, "e": 31, "f": "1:30",
                      "g": "2024-01-02", "h": None}


def test_repeated_key_names_the_key_and_both_lines(tmp_path):
    path = write(tmp_path, "max_epochs: 3\nlr: 0.1\ncheckpoint:\n  monitor: valid/loss\n  monitor: valid/accuracy\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:5: key 'monitor' appears twice .*first at line 4"):
        TrainingConfig.from_yaml(path)
    top = write(tmp_path, "lr: 0.1\nmax_epochs: 2\nlr: 0.2\n", "top.yaml")
    with pytest.raises(ConfigError, match=r"top\.yaml:3: key 'lr' appears twice"):
        load_yaml(top)


def test_merge_keys_may_override_without_being_duplicates():
    values = load_yaml_text("base: &b {mode: min, patience: 3}\nearly: {<<: *b, patience: 5}\n")
    assert values["early"] == {"mode": "min", "patience": 5}


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        name, previous = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_fast(tmp_path):
    path = write(tmp_path, billion_laughs())
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"run\.yaml:\d+: the document expands to more than {MAX_NODES} values"):
        TrainingConfig.from_yaml(path)
    assert time.perf_counter() - start < 0.5
    assert main(["config", "check", str(path)]) == 2


def test_modest_aliases_are_fine_and_recursion_is_refused():
    assert load_yaml_text(billion_laughs(3))["c"][0][0] == ["lol"] * 9
    with pytest.raises(ConfigError, match="refers to a value that contains it"):
        load_yaml_text("a: &a [1, *a]\n")


def test_binary_and_non_utf8_files_name_the_file(tmp_path):
    latin = write(tmp_path, "experiment_name: caf\xe9\n".encode("latin-1"), "latin.yaml")
    with pytest.raises(ConfigError, match=r"latin\.yaml:1: not UTF-8 text \(byte 0xe9 at offset 20\)"):
        TrainingConfig.from_yaml(latin)
    binary = write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image.yaml")
    with pytest.raises(ConfigError, match=r"image\.yaml holds NUL bytes: a binary file"):
        TrainingConfig.from_yaml(binary)
    bom = write(tmp_path, "\ufeffexperiment_name: caf\xe9\n".encode(), "bom.yaml")
    assert TrainingConfig.from_yaml(bom).experiment_name == "caf\xe9"


def test_missing_folder_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_yaml(tmp_path)
    broken = write(tmp_path, "lr: [0.1, 0.2\nmax_epochs: 2\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:\d+: not valid YAML"):
        TrainingConfig.from_yaml(broken)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"<string>:1: nested more than 64 levels deep"):
        load_yaml_text("[" * 20_000)
    with pytest.raises(ConfigError, match="nested too deeply"):  # block nesting: Python's recursion limit
        load_yaml_text("".join(" " * i + "a:\n" for i in range(3000)))
    assert time.perf_counter() - start < 2.0
    brackets = "note: '" + "[" * 100 + "'  # [[[[ " + "{" * 80 + "\nsizes: [[1, 2], {a: [3]}]\n"
    assert load_yaml_text(brackets)["sizes"] == [[1, 2], {"a": [3]}]  # brackets in strings and comments


def test_python_tags_run_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = write(tmp_path, f"lr: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"could not determine a constructor for the tag.*python/object/apply"):
        TrainingConfig.from_yaml(path)
    assert not marker.exists()


def test_dump_round_trips_through_both_loaders(tmp_path):
    data = {"name": "1e-3", "strategy": "no", "flag": "on", "octal": "0o7", "lr": 1e-5, "n": 3, "none": None}
    text = dump_yaml(data)
    assert load_yaml_text(text) == data and yaml.safe_load(text) == data
    cfg = TrainingConfig(experiment_name="1e-3", eval_strategy="no", lr=3e-4)
    cfg.save_yaml(tmp_path / "saved.yaml")
    assert TrainingConfig.from_yaml(tmp_path / "saved.yaml") == cfg
