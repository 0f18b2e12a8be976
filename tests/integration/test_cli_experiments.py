"""``trainforge train|test|predict`` end to end through the real command line (in-process): run folders,
overrides, multirun sweeps, the Optuna sweeper, safety of the YAML reader, nothing written elsewhere."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from trainforge.cli import main

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "configs" / "classification_digits.yaml")
#: A short run: one epoch on 320 training samples, one validation batch, no TensorBoard or report.
QUICK = ["trainer.max_epochs=1", "optimization.0.scheduler=null", "+data.TRAIN.0.limit=640",
         "+trainer.limit_val_batches=1", "logger=null", "+trainer.report=false", "+trainer.progress_bar=false"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("experiment.yaml"))


def test_train_with_overrides_writes_one_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", DIGITS, *QUICK, "optimization.0.optimizer.params.lr=0.01"]) == 0
    (run,) = _folders(tmp_path / "runs")
    assert run.parent == tmp_path / "runs" / "classification_digits"
    resolved = yaml.safe_load((run / "experiment.yaml").read_text())
    assert resolved["optimization"][0]["optimizer"]["params"]["lr"] == 0.01
    assert resolved["trainer"]["max_epochs"] == 1
    metrics = json.loads((run / "train_metrics.json").read_text())
    assert metrics["valid/accuracy"] > 0.3  # chance is 0.1: it learned in 20 steps
    assert (run / "checkpoints").is_dir() and (run / "metrics.jsonl").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no outputs/, no .hydra beside it
    out = capsys.readouterr().out
    assert f"run folder: {run.resolve()}" in out and "final metrics:" in out


def test_config_path_and_name_and_test_mode(tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert main(["train", "-cp", str(ROOT / "configs"), "-cn", "classification_digits", *QUICK,
                 f"hydra.run.dir={first}"]) == 0
    assert (first / "experiment.yaml").is_file()
    test_set = "+data.TEST=[{dataset: {name: Digits, params: {split: valid}}, dataloader: {batch_size: 128}}]"
    assert main(["test", "--config", DIGITS, *QUICK, test_set, f"+resume_path={first}",
                 f"hydra.run.dir={tmp_path / 'tested'}"]) == 0
    tested = json.loads((tmp_path / "tested" / "test_metrics.json").read_text())
    trained = json.loads((first / "train_metrics.json").read_text())
    assert tested["test/accuracy"] > 0.3
    # the test set is the validation data, all 360 samples; the run validated on its first 256 only
    assert tested["test/accuracy"] != pytest.approx(0.1, abs=0.05) and "valid/accuracy" in trained


def test_predict_mode_with_plus_mode(tmp_path: Path) -> None:
    predict = "+data.PREDICT=[{dataset: {name: Digits, params: {split: valid}}}]"
    assert main(["train", "--config", DIGITS, *QUICK, predict, "+mode=predict",
                 f"hydra.run.dir={tmp_path / 'p'}"]) == 0
    saved = torch.load(tmp_path / "p" / "predictions_predict.pt", weights_only=True)
    assert saved["output"].shape == (360, 10) and sorted(saved["index"].tolist()) == list(range(360))


def test_multirun_makes_two_folders_with_different_configs(tmp_path: Path, capsys) -> None:
    assert main(["train", "--config", DIGITS, *QUICK, "--multirun",
                 "optimization.0.optimizer.params.lr=0.01,0.001"]) == 0
    runs = _folders(tmp_path / "runs")
    assert len(runs) == 2 and runs[0].parent == runs[1].parent
    lrs = [yaml.safe_load((r / "experiment.yaml").read_text())["optimization"][0]["optimizer"]["params"]["lr"]
           for r in runs]
    assert sorted(lrs) == [0.001, 0.01]
    sweep = runs[0].parent
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and "optimization.0.optimizer.params.lr" in summary[0]
    assert (sweep / "objective.png").stat().st_size > 1000
    assert "best (maximize valid/accuracy)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


@pytest.mark.slow
def test_optuna_sweep_of_four_trials_names_the_best(tmp_path: Path, capsys) -> None:
    import hydra_plugins.hydra_optuna_sweeper  # noqa: F401  (the dev extra installs it: a missing sweeper fails here)
    assert main(["train", "--config", DIGITS, *QUICK, "++data.TRAIN.0.limit=320", "--multirun",
                 "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=0",
                 "optimization.0.optimizer.params.lr=tag(log, interval(0.0001, 0.03))"]) == 0
    runs = _folders(tmp_path / "runs")
    assert len(runs) == 4
    out = capsys.readouterr().out
    assert "best (maximize valid/accuracy): job" in out
    best = yaml.safe_load((runs[0].parent / "optimization_results.yaml").read_text())
    values = [json.loads((r / "train_metrics.json").read_text())["valid/accuracy"] for r in runs]
    assert best["best_value"] == pytest.approx(max(values))


@pytest.mark.parametrize(("text", "words"), [
    ("task: !!python/object/apply:os.system ['echo pwned']\n", ["python/object"]),
    ("task: {name: A}\ntask: {name: B}\n", ["task"]),
])
def test_unsafe_or_broken_yaml_is_refused(tmp_path: Path, capsys, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and all(w in err for w in words)
    assert not (tmp_path / "runs").exists()


def test_bad_override_and_unknown_config_name(tmp_path: Path, capsys) -> None:
    assert main(["train", "--config", DIGITS, "trainer.max_epoch=1"]) == 2
    assert "+trainer.max_epoch" in capsys.readouterr().err  # Hydra's fix: append with +, or fix the key
    assert main(["train", "-cp", str(ROOT / "configs"), "-cn", "classification_digit"]) == 2
    assert "did you mean 'classification_digits'" in capsys.readouterr().err
    assert main(["train", "--config", DIGITS, "+trainer.max_epoch=1"]) == 2
    assert "did you mean 'max_epochs'" in capsys.readouterr().err


def test_ls_lists_names_with_help(capsys) -> None:
    assert main(["ls", "losses", "*Entropy*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("CrossEntropyLoss ") and len(line.split()) > 2 for line in lines)
    assert main(["ls"]) == 0
    assert "optimizers" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "trainforge", "--version"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("trainforge ")


@pytest.mark.slow
def test_make_demo_config_reaches_97_percent(tmp_path: Path, capsys) -> None:
    """What ``make demo`` runs: the whole classification_digits experiment (10 epochs)."""
    assert main(["train", "--config", DIGITS, "logger=null", "+trainer.report=false",
                 f"hydra.run.dir={tmp_path / 'demo'}"]) == 0
    metrics = json.loads((tmp_path / "demo" / "train_metrics.json").read_text())
    assert metrics["valid/accuracy"] >= 0.97, metrics
    out = capsys.readouterr().out
    assert "epoch 10/10" in out and "final metrics:" in out and "run folder:" in out


def test_a_sweep_over_a_broken_config_fails_once_before_any_job(tmp_path: Path, capsys) -> None:
    assert main(["train", "--config", DIGITS, "+trainer.max_epoch=1", "--multirun",
                 "optimization.0.optimizer.params.lr=0.1,0.2"]) == 2
    assert "did you mean 'max_epochs'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_config_schema_lists_every_key_with_help(capsys) -> None:
    assert main(["config", "schema"]) == 0
    out = capsys.readouterr().out
    for key in ("task.params:", "data.TRAIN[].dataloader.batch_size: 32", "optimization[].scheduler.pl_params.interval",
                "joint_loss.normalize_weights: True", "metrics[].phases", "seed_params.seed: 42"):
        assert key in out, key


def _valid_accuracy_by_epoch(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {row["epoch"]: row["metrics"]["valid/accuracy"] for row in rows if "valid/accuracy" in row["metrics"]}


def test_test_mode_evaluates_the_best_checkpoint_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run whose best checkpoint is not its newest (monitor valid/accuracy with mode min: the first, least
    trained epoch is the best): ``trainforge test resume_path=RUN`` evaluates the best one, an explicit
    checkpoint path is used as given; each says which weights it used."""
    cfg = yaml.safe_load(Path(DIGITS).read_text())
    cfg["callbacks"][0]["params"].update({"monitor": "valid/accuracy", "mode": "min", "save_top_k": 1})
    cfg["data"]["TEST"] = [copy.deepcopy(cfg["data"]["VALID"][0])]
    cfg["data"]["TRAIN"][0]["limit"] = 200
    cfg["trainer"].update({"max_epochs": 3, "report": False, "progress_bar": False, "accelerator": "cpu"})
    cfg["logger"] = None
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path)]) == 0
    (run,) = _folders(tmp_path / "runs")
    accuracy = _valid_accuracy_by_epoch(run)
    assert accuracy[0] < accuracy[2]  # so the best (min) is epoch 1's checkpoint, not the newest
    capsys.readouterr()

    assert main(["test", "--config", str(path), f"+resume_path={run}"]) == 0
    err = capsys.readouterr().err
    best = "epoch001-step000007"
    assert f"test uses resume_path={str(run)!r}: the best checkpoint by valid/accuracy (min): {best}" in err
    assert "not the newest last" in err
    tested = sorted(p for p in (tmp_path / "runs").rglob("test_metrics.json"))
    assert json.loads(tested[-1].read_text())["test/accuracy"] == pytest.approx(accuracy[0], abs=1e-6)

    assert main(["test", "--config", str(path), f"+resume_path={run / 'checkpoints' / 'last'}"]) == 0
    assert "the checkpoint given (last)" in capsys.readouterr().err
    tested = sorted(p for p in (tmp_path / "runs").rglob("test_metrics.json"))
    assert json.loads(tested[-1].read_text())["test/accuracy"] == pytest.approx(accuracy[2], abs=1e-6)
