"""The ``trainforge`` command line: ``report RUN_DIR`` through a real subprocess on a run folder made by a
short fit, and its errors (a clear message naming the path, exit code 2, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from trainforge import Trainer, TrainingConfig
from trainforge.cli import build_parser, main
from trainforge.errors import ConfigError, RegistryError

ROOT = Path(__file__).resolve().parents[2]


def trainforge_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainforge.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)


@pytest.fixture(scope="module")
def run_dir(digits, tmp_path_factory) -> Path:
    """A run folder from a short fit that wrote no report itself."""
    train, valid = digits
    torch.manual_seed(0)
    cfg = TrainingConfig(output_dir=str(tmp_path_factory.mktemp("run")), max_epochs=1, batch_size=32,
                         log_every_n_steps=2, tensorboard=False, report=False, checkpoint=None, print_steps=1000)
    trainer = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), cfg, train_data=Subset(train, range(128)),
                      valid_data=Subset(valid, range(64)))
    trainer.fit()
    return Path(trainer.run_dir)


def test_report_subcommand_builds_the_page(run_dir):
    assert not (run_dir / "report").exists()
    done = trainforge_cli("report", str(run_dir))
    assert done.returncode == 0, done.stderr
    page = run_dir / "report" / "index.html"
    assert done.stdout.strip() == f"report: {page}"
    html = page.read_text()
    assert "curve_loss.svg" in html and (run_dir / "report" / "curve_loss.svg").is_file()


def test_report_of_a_missing_folder_names_it_and_exits_2(tmp_path):
    missing = tmp_path / "no-such-run"
    done = trainforge_cli("report", str(missing))
    assert done.returncode == 2
    assert done.stderr.startswith("trainforge report: error: run folder") and str(missing) in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_report_errors_in_process(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2  # a folder without metrics.jsonl
    assert str(tmp_path / "metrics.jsonl") in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "metrics": {"x": 1}}\nnot json\n{"step": 2}\n')
    assert main(["report", str(tmp_path)]) == 2  # damaged: a bad line that is not the last one
    err = capsys.readouterr().err
    assert "is damaged" in err and f"{tmp_path / 'metrics.jsonl'}:2" in err
    file = tmp_path / "file.txt"
    file.write_text("x")
    assert main(["report", str(file)]) == 2
    assert f"run folder {file} does not exist or is not a folder" in capsys.readouterr().err


def test_report_is_a_listed_command_with_help():
    parser = build_parser()
    assert "report" in parser.format_help()
    args = parser.parse_args(["report", "runs/x", "--strict"])
    assert args.run_dir == "runs/x" and args.strict and not args.open


def test_config_defaults_lists_every_field_with_help(capsys):
    import dataclasses

    from trainforge.cli import main
    from trainforge.training_config import TrainingConfig

    assert main(["config", "defaults"]) == 0
    out = capsys.readouterr().out
    for field in dataclasses.fields(TrainingConfig):
        assert f"{field.name}: " in out and field.metadata["help"] in out


def test_config_check_names_the_bad_key_and_exits_2(tmp_path, capsys):
    from trainforge.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("max_epoch: 3\n")
    assert main(["config", "check", str(path)]) == 2
    assert "has no key 'max_epoch'; did you mean 'max_epochs'?" in capsys.readouterr().err
    path.write_text("max_epochs: 3\nlr: 0.1\n")
    assert main(["config", "check", str(path)]) == 0
    assert "max_epochs: 3" in capsys.readouterr().out


def test_demo_command_trains_and_prints_final_metrics(tmp_path, capsys):
    from trainforge.cli import main

    assert main(["demo", "--output-dir", str(tmp_path / "demo"), "--max-epochs", "1", "--print-steps", "20"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1 step 20" in out and "final metrics:" in out and "valid/accuracy=" in out
    assert (tmp_path / "demo" / "report" / "index.html").is_file()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("checkpoint: {monitr: valid/loss}\n", "checkpoint has no key 'monitr'; did you mean 'monitor'?"),
        ("optimizer: Adamm\n", "unknown optimizer 'Adamm'. Close matches: adam"),
        ("metrics: [Acuracy]\n", "unknown metric 'Acuracy'. Close matches: Accuracy"),
        ("checkpoint: {monitor: valid/acuracy, mode: max}\n",
         "checkpoint.monitor='valid/acuracy' is not a metric this run logs; did you mean 'valid/accuracy'?"),
        ("early_stopping: {monitor: eval_epoch_metric, mode: max}\n",
         "early_stopping.monitor='eval_epoch_metric' is not a metric this run logs (another framework's name); "
         "use 'valid/accuracy'"),
        ("checkpoint: {filename: 'ep{epoch}-{stepp}'}\n", "has a placeholder {stepp}; did you mean {step}?"),
        ("epoch_num: 2\n", "has no key 'epoch_num' (Towhee's name); use 'max_epochs'"),
    ],
)
def test_config_check_runs_the_validation_training_runs(tmp_path, capsys, monkeypatch, digits, text, expected):
    monkeypatch.chdir(tmp_path)  # a Trainer without output_dir would write runs/ here
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trainforge config: error: {path}") and expected in err, err
    with pytest.raises((ConfigError, RegistryError)) as error:  # the same file given to training
        trainer = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), TrainingConfig.from_yaml(path),
                          train_data=digits[0], valid_data=digits[1])
        trainer.setup()
    assert expected in str(error.value) and str(error.value).split(f"{path}: ")[-1] in err
    assert not (tmp_path / "runs").exists()


def test_config_check_accepts_what_training_accepts(tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text("lr: 1e-3\noptimizer: SGD\noptimizer_params: {momentum: 0.9}\nmetrics: [Accuracy, F1Score]\n"
                    "checkpoint: {monitor: valid/f1_score, mode: max, filename: 'ep{epoch:02d}-{score:.3f}'}\n"
                    "early_stopping: {monitor: valid/loss, patience: 2}\n")
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: valid\n") and "lr: 0.001\n" in out

