"""``TrainingConfig`` as a hostile user meets it: typos and other frameworks' key names in Python and in
YAML, nested keys, out-of-range values, and Towhee's names, ``tensorboard`` dict and YAML files (issue 13)."""

from __future__ import annotations

import pytest
from helpers import EXTERNAL

from trainforge import TrainingConfig
from trainforge.errors import ConfigError

TOWHEE = EXTERNAL / "towhee"


def test_python_typo_is_a_config_error_with_the_close_match():
    with pytest.raises(ConfigError, match=r"^TrainingConfig has no key 'max_epoch'; did you mean 'max_epochs'\?$"):
        TrainingConfig(max_epoch=2)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("epoch_num", 2, r"'epoch_num' \(Towhee's name\); use 'max_epochs'"),
        ("num_epochs", 2, r"'num_epochs' \(Kornia's name\); use 'max_epochs'"),
        ("seed_params", {"seed": 1}, r"'seed_params' \(TorchOk's name\); use seed=N"),
        ("val_check_interval", 100, r"'val_check_interval' \(Lightning's name\); use eval_strategy='steps'"),
        ("max_steps", 100, r"'max_steps' \(Lightning's and Towhee's name\); trainforge trains whole epochs"),
        ("learning_rate", 0.1, r"'learning_rate' \(Lightning's and Hugging Face's name\); use 'lr'"),
        ("gpus", 1, r"'gpus' \(Lightning's name\); use device='cuda'"),
        ("val_batch_size", 8, r"'val_batch_size' \(Towhee's name\); use 'eval_batch_size'"),
    ],
)
def test_other_frameworks_names_point_to_ours(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        TrainingConfig(**{key: value})
    with pytest.raises(ConfigError, match=expected):
        TrainingConfig.from_yaml_string(f"{key}: {value!r}\n".replace("'", '"'), source="run.yaml")


def test_every_unknown_key_of_a_file_is_named_at_once(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epoch_num: 2\nlearning_rate: 1e-3\nbatch_sise: 8\nfoo: 1\n")
    with pytest.raises(ConfigError) as error:
        TrainingConfig.from_yaml(path)
    message = str(error.value)
    assert message.startswith(f"{path} has no keys 'epoch_num', 'learning_rate', 'batch_sise', 'foo':")
    assert "- 'epoch_num' (Towhee's name); use 'max_epochs'" in message
    assert "- 'batch_sise'; did you mean 'batch_size'?" in message
    assert "- 'foo': no such setting" in message


def test_nested_keys_are_checked_against_the_callbacks(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint has no key 'monitr'; did you mean 'monitor'\?"):
        TrainingConfig(checkpoint={"monitr": "valid/loss"})
    with pytest.raises(ConfigError, match=r"early_stopping has no key 'patiense'; did you mean 'patience'\?"):
        TrainingConfig(early_stopping={"monitor": "valid/loss", "patiense": 3})
    with pytest.raises(ConfigError, match="early_stopping needs a monitor"):
        TrainingConfig(early_stopping={"patience": 3})
    with pytest.raises(ConfigError, match="early_stopping: a value has the wrong type"):
        TrainingConfig(early_stopping={"monitor": "valid/loss", "patience": "3"})
    with pytest.raises(ConfigError, match=r"checkpoint\.dirpath is set by the trainer"):
        TrainingConfig(checkpoint={"dirpath": "/tmp/elsewhere"})
    path = tmp_path / "run.yaml"
    path.write_text("checkpoint:\n  monitor: valid/loss\n  every_n_epoch: 1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: checkpoint has no key 'every_n_epoch'; did you mean"):
        TrainingConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("ep{epoch}-{stepp}", r"placeholder \{stepp\}; did you mean \{step\}\?"),
        ("ep{epoch:03q}", "cannot be filled"),
        ("ep{epoch", "is not a valid template"),
        ("../ep{epoch}", "holds a path separator"),
        ("last", "a name trainforge keeps for itself"),
    ],
)
def test_checkpoint_file_name_templates_are_checked_at_construction(template, expected):
    with pytest.raises(ConfigError, match=expected):
        TrainingConfig(checkpoint={"filename": template})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("seed", -1, r"seed must be in \[0, 2\*\*63\), got -1"),
        ("seed", 2**63, r"seed must be in \[0, 2\*\*63\)"),
        ("eval_batch_size", 0, "eval_batch_size must be >= 1, got 0"),
        ("data_timeout", -1.0, "data_timeout must be >= 0 seconds"),
        ("eval_steps", 0, "eval_steps must be >= 1"),
        ("print_steps", 0, "print_steps must be >= 1"),
        ("lr", -0.1, "lr must be a finite number >= 0, got -0.1"),
        ("lr", float("nan"), "lr must be a finite number >= 0"),
    ],
)
def test_out_of_range_settings(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        TrainingConfig(**{key: value})


@pytest.mark.parametrize(
    ("value", "ours"), [(16, "16-mixed"), ("bf16", "bf16-mixed"), (32, "32"), ("16-true", "16-mixed")]
)
def test_lightning_precision_spellings_point_to_ours(value, ours):
    with pytest.raises(ConfigError, match=rf"precision={value!r} is another framework's spelling; use '{ours}'"):
        TrainingConfig(precision=value)


def test_lr_zero_and_the_edges_of_ranges_are_allowed():
    assert TrainingConfig(lr=0.0).lr == 0.0  # torch allows it (a frozen run, a probe)
    assert TrainingConfig(seed=0).seed == 0 and TrainingConfig(seed=2**63 - 1).seed == 2**63 - 1
    assert TrainingConfig(data_timeout=0.0, eval_batch_size=1).eval_batch_size == 1


# -- Towhee (issue 13) ------------------------------------------------------------------------------
def test_towhee_constructor_call_runs_or_names_our_spelling(tmp_path):
    cfg = TrainingConfig(output_dir=str(tmp_path / "out"), batch_size=1, print_steps=1,
                         tensorboard={"log_dir": "mylogdir"})
    assert cfg.tensorboard_dir(tmp_path / "out") == tmp_path / "out" / "mylogdir"
    with pytest.raises(ConfigError, match=r"'epoch_num' \(Towhee's name\); use 'max_epochs'"):
        TrainingConfig(output_dir=str(tmp_path / "out"), epoch_num=2, batch_size=1)


def test_tensorboard_values(tmp_path):
    assert TrainingConfig(tensorboard=True).tensorboard_dir(tmp_path) == tmp_path / "tensorboard"
    assert TrainingConfig(tensorboard=False).tensorboard_dir(tmp_path) is None
    assert TrainingConfig(tensorboard=None).tensorboard_dir(tmp_path) is None  # Towhee's way to turn it off
    assert TrainingConfig(tensorboard={"log_dir": None}).tensorboard_dir(tmp_path) == tmp_path / "tensorboard"
    chosen = tmp_path / "shared" / "tb"
    assert TrainingConfig(tensorboard={"log_dir": str(chosen)}).tensorboard_dir(tmp_path / "run") == chosen
    with pytest.raises(ConfigError, match="leaves the run folder"):
        TrainingConfig(tensorboard={"log_dir": "../../elsewhere"})
    with pytest.raises(ConfigError, match=r"tensorboard has no key\(s\) \['comment'\]; accepted: log_dir"):
        TrainingConfig(tensorboard={"log_dir": "tb", "comment": ""})
    with pytest.raises(ConfigError, match="expected a folder path"):
        TrainingConfig(tensorboard={"log_dir": ""})
    with pytest.raises(ConfigError, match="tensorboard='yes' has type str"):
        TrainingConfig(tensorboard="yes")


def test_towhee_config2_names_every_key_we_do_not_have():
    with pytest.raises(ConfigError) as error:
        TrainingConfig.load_from_yaml(TOWHEE / "config2.yaml")
    message = str(error.value)
    assert message.startswith(f"{TOWHEE / 'config2.yaml'} is a Towhee config; fix these keys")
    for line in (
        "- callback.model_checkpoint (Towhee's name); use 'checkpoint'",
        "- train.epoch_num (Towhee's name); use 'max_epochs'",
        "- train.dataloader_drop_last (Towhee's name); use 'drop_last'",
        "- train.val_batch_size (Towhee's name); use 'eval_batch_size'",
        "- learning.lr_scheduler_type (Towhee's name); use 'scheduler'",
        "- metrics.metric (Towhee's name); use 'metrics', a list",
        "- logging.logging_dir (Towhee's name); use tensorboard={'log_dir': DIR}",
        "- train.max_steps (Lightning's and Towhee's name); trainforge trains whole epochs",
        "- device.sync_bn: trainforge has no such setting",
        "- callback.tensorboard: tensorboard has no key(s) ['comment']; accepted: log_dir",
        "- logging.logging_strategy (Towhee's and Hugging Face's name); metrics are logged every log_every_n_steps",
        "- learning.optimizer: optimizer={'name_': 'AdamW', 'lr': 0.001} has type dict; expected str (write the name",
    ):
        assert line in message, (line, message)
    assert "train.batch_size" not in message and "learning.lr:" not in message  # ours: fine as they are


def test_towhee_old_layout_is_an_error_naming_the_keys():
    with pytest.raises(ConfigError) as error:
        TrainingConfig.load_from_yaml(TOWHEE / "config.yaml")
    message = str(error.value)
    assert "this is Towhee's old layout (settings under '<section>.args')" in message
    assert "- train.args.epoch_num (Towhee's name); use 'max_epochs'" in message
    assert "- learning.args.adam_beta1 (Towhee's and Hugging Face's name); use optimizer_params" in message
    assert "- train.args.do_train: trainforge has no such setting" in message
    assert "- train.args.eval_steps: eval_steps='None' has type str; expected int or None (YAML writes" in message


def test_towhee_sections_with_our_names_load_and_save_round_trips(tmp_path):
    path = tmp_path / "towhee.yaml"
    path.write_text("train:\n  batch_size: 8\n  max_epochs: 2\nlearning:\n  lr: 5.0e-05\n  loss: CrossEntropyLoss\n"
                    "metrics:\n  metrics: [Accuracy]\n")
    cfg = TrainingConfig.load_from_yaml(path)
    assert (cfg.batch_size, cfg.max_epochs, cfg.lr) == (8, 2, 5e-05)
    cfg.save_to_yaml(tmp_path / "saved.yaml")
    saved = tmp_path / "saved.yaml"
    assert TrainingConfig.load_from_yaml(saved) == cfg == TrainingConfig.from_yaml(saved)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_an_empty_settings_file_is_an_error_not_every_default(tmp_path, capsys, text) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train.yaml holds no settings \(it is empty or only comments\)"):
        TrainingConfig.from_yaml(path)
    with pytest.raises(ConfigError, match=r"<string> holds no settings"):
        TrainingConfig.from_yaml_string(text)
    from trainforge.cli import main

    assert main(["config", "check", str(path)]) != 0  # it printed "valid" and every default
    assert "holds no settings" in capsys.readouterr().err
    path.write_text("max_epochs: 3\n", encoding="utf-8")
    assert TrainingConfig.from_yaml(path).max_epochs == 3
