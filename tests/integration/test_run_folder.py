"""Metrics, logs, run folder and report of real ``Trainer.fit()`` runs on digits: metric values equal
scikit-learn's on the same predictions (per phase and per loader), TensorBoard and ``metrics.jsonl`` hold the
expected tags at the expected steps, the report references only valid PNGs whose data match the logs, and
the console shows a bar or lines on rank 0 only."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from torch import nn
from torch.utils.data import Subset, TensorDataset

from trainforge import Callback, Trainer, TrainingConfig
from trainforge.loggers import BaseLogger, read_metrics_jsonl
from trainforge.report import CLASSIFICATION_FILE, METRIC_VALUES_FILE, load_classification_data, load_metric_values

METRICS = ["Accuracy", {"name": "F1Score", "params": {"average": "macro"}}, {"name": "ConfusionMatrix"}]
EPOCHS, BATCH, EVERY = 2, 32, 3
STEPS_PER_EPOCH = 10  # 320 training samples / 32


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def config(tmp_path: Path, **overrides) -> TrainingConfig:
    values = dict(output_dir=str(tmp_path), max_epochs=EPOCHS, batch_size=BATCH, lr=0.01, seed=0,
                  log_every_n_steps=EVERY, metrics=METRICS, print_steps=1000, checkpoint=None)
    values.update(overrides)
    return TrainingConfig(**values)


class TrainPredictions(Callback):
    """The arg-max predictions and targets of every training step, per epoch (what train metrics saw)."""

    def __init__(self) -> None:
        self.epochs: list[list[tuple[torch.Tensor, torch.Tensor]]] = []

    def on_epoch_start(self, state):
        self.epochs.append([])

    def on_batch_end(self, state):
        self.epochs[-1].append((state.outputs["output"].argmax(1).cpu(), state.batch["target"].cpu()))


@pytest.fixture(scope="module")
def data(digits):
    train, valid = digits
    noisy_x = torch.stack([valid[i][0] for i in range(120, 220)])
    noisy_y = torch.tensor([int(valid[i][1]) for i in range(120, 220)])
    noise = torch.randn(noisy_x.shape, generator=torch.Generator().manual_seed(0))
    return Subset(train, range(320)), Subset(valid, range(120)), TensorDataset(noisy_x + 0.4 * noise, noisy_y)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """One full run: two validation loaders, TensorBoard, report and checkpoints."""
    train, main, noisy = data
    recorder = TrainPredictions()
    cfg = config(tmp_path_factory.mktemp("run"),
                 checkpoint={"monitor": "valid/accuracy", "mode": "max", "save_top_k": 1, "save_last": True})
    trainer = Trainer(mlp(), cfg, train_data=train, valid_data={"main": main, "noisy": noisy},
                      callbacks=[recorder])
    trainer.class_names = [f"digit{i}" for i in range(10)]
    state = trainer.fit()
    # snapshots: a later evaluate() updates the trainer's state and its last non-scalar metrics
    final = Final(dict(state.metrics), trainer.last_non_scalar_metrics)
    return trainer, final, recorder, Path(trainer.run_dir)


class Final:
    """What ``fit()`` ended with."""

    def __init__(self, metrics: dict, non_scalars: dict) -> None:
        self.metrics, self.non_scalars = metrics, non_scalars


def predictions(trainer, dataset):
    outputs = trainer.predict(dataset)
    preds = torch.cat([o["output"].argmax(1) for o in outputs])
    index = torch.cat([o["index"] for o in outputs])
    targets = torch.tensor([int(dataset[i][1]) for i in index.tolist()])
    return targets.numpy(), preds.numpy()


# -- metric values equal scikit-learn's --------------------------------------------------------------------
@pytest.mark.parametrize("prefix, which", [("valid", 1), ("valid_noisy", 2)])
def test_validation_metrics_per_loader_equal_sklearn(run, data, prefix, which):
    trainer, state, _, _ = run
    y, p = predictions(trainer, data[which])  # the weights of the last evaluation
    assert state.metrics[f"{prefix}/accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-6)
    assert state.metrics[f"{prefix}/f1_score"] == pytest.approx(f1_score(y, p, average="macro"), abs=1e-6)
    matrix = state.non_scalars[f"{prefix}/confusion_matrix"]
    assert matrix.device.type == "cpu"
    assert matrix.tolist() == confusion_matrix(y, p, labels=list(range(10))).tolist()
    assert f"{prefix}/confusion_matrix" not in state.metrics  # scalars only in state.metrics


def test_train_metrics_equal_sklearn_on_the_epochs_predictions(run):
    _, state, recorder, run_dir = run
    p, y = (torch.cat(t).numpy() for t in zip(*recorder.epochs[-1]))
    assert len(y) == 320
    assert state.metrics["train/accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-6)
    assert state.metrics["train/f1_score"] == pytest.approx(f1_score(y, p, average="macro"), abs=1e-6)
    matrix = state.non_scalars["train/confusion_matrix"]
    assert matrix.tolist() == confusion_matrix(y, p, labels=list(range(10))).tolist()
    # at the logging cadence: the epoch so far, never the previous epoch's value
    records = {r["step"]: r["metrics"] for r in read_metrics_jsonl(run_dir / "metrics.jsonl") if r["phase"] == "train"}
    for step in (3, 15):  # 3rd step of epoch 1; 5th step of epoch 2
        epoch, within = divmod(step - 1, STEPS_PER_EPOCH)
        p, y = (torch.cat(t).numpy() for t in zip(*recorder.epochs[epoch][: within + 1]))
        assert records[step]["train/accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-6)


def test_evaluate_names_each_phase_and_loader(run, data):
    trainer, state, _, _ = run
    _, main, noisy = data
    results = trainer.evaluate({"a": main, "b": noisy}, phase="test")
    assert sorted(results) == ["test/accuracy", "test/f1_score", "test/loss",
                               "test_b/accuracy", "test_b/f1_score", "test_b/loss"]
    for name in ("accuracy", "f1_score", "loss"):
        assert results[f"test/{name}"] == pytest.approx(state.metrics[f"valid/{name}"], abs=1e-6)
        assert results[f"test_b/{name}"] == pytest.approx(state.metrics[f"valid_noisy/{name}"], abs=1e-6)
    non_scalars = trainer.last_non_scalar_metrics
    assert torch.equal(non_scalars["test_b/confusion_matrix"], state.non_scalars["valid_noisy/confusion_matrix"])
    assert torch.equal(non_scalars["test/confusion_matrix"], state.non_scalars["valid/confusion_matrix"])
    y, p = predictions(trainer, noisy)
    assert trainer.evaluate(noisy)["valid/accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-6)


# -- logs ----------------------------------------------------------------------------------------------------
def logged_steps() -> list[int]:
    ends = [STEPS_PER_EPOCH * (e + 1) for e in range(EPOCHS)]
    return sorted({s for s in range(1, STEPS_PER_EPOCH * EPOCHS + 1) if s % EVERY == 0} | set(ends))


def test_metrics_jsonl_has_training_values_at_the_logging_cadence(run):
    _, state, _, run_dir = run
    records = read_metrics_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in records if r["phase"] == "train"]
    assert [r["step"] for r in train] == logged_steps()
    for record in train:
        assert {"train/loss", "lr", "train/accuracy", "throughput/samples_per_s",
                "throughput/step_time_s"} <= set(record["metrics"])
        assert record["epoch"] == (record["step"] - 1) // STEPS_PER_EPOCH
    valid = [r for r in records if r["phase"] == "valid"]
    assert [r["step"] for r in valid] == [10, 20]
    assert set(valid[-1]["metrics"]) == {f"{g}/{m}" for g in ("valid", "valid_noisy")
                                         for m in ("loss", "accuracy", "f1_score")}
    for name, value in valid[-1]["metrics"].items():
        assert value == pytest.approx(state.metrics[name], abs=1e-9)
    assert train[-1]["metrics"]["train/accuracy"] == pytest.approx(state.metrics["train/accuracy"], abs=1e-9)


def test_tensorboard_holds_scalars_hparams_images_and_confusion_matrices(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, state, _, run_dir = run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "lr", "train/accuracy", "valid/loss", "valid/accuracy", "valid_noisy/f1_score",
            "throughput/samples_per_s", "throughput/step_time_s"} <= scalars
    for tag in ("train/loss", "throughput/samples_per_s"):
        assert [e.step for e in events.Scalars(tag)] == logged_steps()
    assert [e.step for e in events.Scalars("lr")] == list(range(1, logged_steps()[-1] + 1))  # every step
    assert [e.step for e in events.Scalars("valid/accuracy")] == [10, 20]
    assert events.Scalars("valid/accuracy")[-1].value == pytest.approx(state.metrics["valid/accuracy"], abs=1e-6)

    images = events.Tags()["images"]
    assert "inputs/train" in images
    grid = events.Images("inputs/train")[0]
    assert grid.step == logged_steps()[0] and grid.width > 8 and grid.height > 8  # at the first logging point
    for tag in ("valid/confusion_matrix", "valid_noisy/confusion_matrix"):
        assert [e.step for e in events.Images(tag)] == [10, 20]

    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["lr"].number_value == pytest.approx(0.01)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    tags = {info.name.tag for info in experiment.experiment.metric_infos}
    assert {"valid/accuracy", "valid_noisy/accuracy", "train/loss"} <= tags


# -- run folder --------------------------------------------------------------------------------------------
def test_run_folder_layout_config_and_env(run):
    trainer, _, _, run_dir = run
    for name in ("config.yaml", "env.json", "metrics.jsonl", "hparams.json", "report/index.html"):
        assert (run_dir / name).is_file(), name
    for name in ("checkpoints", "tensorboard", "report"):
        assert (run_dir / name).is_dir() and any((run_dir / name).iterdir()), name
    assert TrainingConfig.from_yaml(run_dir / "config.yaml") == trainer.config
    env = json.loads((run_dir / "env.json").read_text())
    assert env["versions"]["torch"] == importlib.metadata.version("torch")
    assert env["versions"]["trainforge"] and env["versions"]["torchmetrics"]
    assert "git_sha" in env and (env["git_sha"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_sha"]))
    assert env["command"] == sys.argv
    assert env["python"] == sys.version.split()[0] and env["cpu_count"] >= 1 and "cuda" in env


def test_default_run_folder_is_runs_experiment_timestamp(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)  # not a git repository: git_sha is None, the key is still there
    cfg = config(tmp_path, output_dir=None, experiment_name="exp", max_epochs=1, tensorboard=False, report=False)
    trainer = Trainer(mlp(), cfg, train_data=Subset(data[0], range(64)))
    trainer.fit()
    folders = list((tmp_path / "runs" / "exp").iterdir())
    assert len(folders) == 1 and re.fullmatch(r"\d{8}-\d{6}", folders[0].name)
    assert Path(trainer.run_dir).resolve() == folders[0].resolve()
    assert json.loads((folders[0] / "env.json").read_text())["git_sha"] is None
    assert (folders[0] / "metrics.jsonl").is_file()  # always written, even without TensorBoard or report


# -- report -------------------------------------------------------------------------------------------------
class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.found += [value for key, value in attrs if key in ("src", "href") and not value.startswith("#")]


def test_report_references_only_valid_figures_and_its_curves_match_the_log(run):
    import base64
    import io
    from xml.etree import ElementTree

    from PIL import Image

    _, _, _, run_dir = run
    report = run_dir / "report"
    html = (report / "index.html").read_text()
    parser = _References()
    parser.feed(html)
    assert "http" not in html.replace("http-equiv", "") and "<script" not in html  # opens with no network
    for ref in parser.found:
        path = (report / ref).resolve()
        assert path.is_file() and report.resolve() in path.parents, ref
    svgs = [ref for ref in parser.found if ref.endswith(".svg")]
    assert set(parser.found) == {*svgs, "data/curves.json"}
    for ref in svgs:
        root = ElementTree.parse(report / ref).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg", ref
        for element in root.iter("{http://www.w3.org/2000/svg}image"):  # embedded PNGs decode
            head, _, data = element.get("href").partition(",")
            assert head == "data:image/png;base64", ref
            with Image.open(io.BytesIO(base64.b64decode(data))) as image:
                assert image.format == "PNG"
                image.verify()
    expected = {"curve_loss.svg", "curve_accuracy.svg", "curve_f1_score.svg", "lr_learning_rate.svg",
                "throughput_samples_per_s.svg", "throughput_step_time_s.svg", "confusion_matrix.svg",
                "per_class.svg", "metric_valid_noisy_confusion_matrix.svg",  # valid/ is confusion_matrix.svg
                "samples_best.svg", "samples_worst.svg", "samples_confused.svg"}
    assert expected <= set(svgs)
    assert "digit3" in html  # class names in the per-class table
    assert ">digit3</text>" in (report / "confusion_matrix.svg").read_text()  # and on the matrix's axes

    curves = json.loads((report / "data" / "curves.json").read_text())
    assert set(curves["figures"]["curve_loss.svg"]) == {"train/loss", "valid/loss", "valid_noisy/loss"}
    last: dict[str, dict[int, float]] = {}
    for record in read_metrics_jsonl(run_dir / "metrics.jsonl"):
        for name, value in record["metrics"].items():
            last.setdefault(name, {})[record["step"]] = value
    for name, series in curves["series"].items():
        assert series["steps"] == sorted(last[name]), name
        assert series["values"] == pytest.approx([last[name][s] for s in series["steps"]]), name


def test_report_data_is_the_metrics(run):
    _, state, _, run_dir = run
    saved = load_classification_data(run_dir / CLASSIFICATION_FILE)
    assert torch.equal(saved["confusion_matrix"], state.non_scalars["valid/confusion_matrix"])
    values = load_metric_values(run_dir / METRIC_VALUES_FILE)["values"]
    assert set(values) == {"train/confusion_matrix", "valid/confusion_matrix", "valid_noisy/confusion_matrix"}
    for name, value in values.items():
        assert torch.equal(value, state.non_scalars[name]), name
    assert saved["class_names"][3] == "digit3"
    assert 0 < len(saved["targets"]) <= 60 and saved["images"].shape[1:] == (1, 8, 8)
    assert float(saved["images"].min()) >= 0 and float(saved["images"].max()) <= 1


# -- loggers passed in, non-scalar metrics, top-k ------------------------------------------------------------
class RecordingLogger(BaseLogger):
    def __init__(self) -> None:
        self.metrics: list[tuple[int, dict]] = []
        self.figures: list[tuple[str, int]] = []
        self.hparams: list[tuple[dict, dict]] = []
        self.closed = False

    def log_metrics(self, metrics, step, phase=None, *, epoch=None):
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params, final_metrics=None):
        self.hparams.append((dict(params), dict(final_metrics or {})))

    def log_figure(self, tag, figure, step):
        self.figures.append((tag, step))

    def close(self):
        self.closed = True


def test_logger_in_callbacks_per_class_and_curve_metrics_and_clamped_top_k(tmp_path, data):
    train, main, _ = data
    logger = RecordingLogger()
    metrics = [{"name": "Accuracy", "params": {"top_k": 20}, "alias": "top20"},
               {"name": "Accuracy", "params": {"average": None}, "alias": "per_class", "phases": ["VALID"]},
               {"name": "ROC", "params": {"thresholds": 11}, "phases": ["VALID"]}]
    cfg = config(tmp_path, max_epochs=1, metrics=metrics, tensorboard=False)
    trainer = Trainer(mlp(), cfg, train_data=Subset(train, range(96)), valid_data=main, callbacks=[logger])
    with pytest.warns(UserWarning, match="top_k=20 is more than the 10 classes"):
        state = trainer.fit()
    assert state.metrics["valid/top20"] == 1.0 and state.metrics["train/top20"] == 1.0
    non_scalars = trainer.last_non_scalar_metrics
    assert non_scalars["valid/per_class"].shape == (10,)
    fpr, tpr, _ = non_scalars["valid/roc"]
    assert fpr.shape == tpr.shape == (10, 11)
    assert sorted(logger.figures) == [("valid/per_class", 3), ("valid/roc", 3)]
    assert any("train/loss" in m for _, m in logger.metrics) and logger.closed
    assert logger.hparams[0][1]["valid/top20"] == 1.0
    report = Path(trainer.run_dir) / "report"
    assert (report / "metric_valid_per_class.svg").is_file() and (report / "metric_valid_roc.svg").is_file()


# -- console -------------------------------------------------------------------------------------------------
def test_progress_bar_on_a_terminal(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    cfg = config(tmp_path, max_epochs=1, print_steps=None, progress_bar=True, tensorboard=False, report=False)
    Trainer(mlp(), cfg, train_data=Subset(data[0], range(96)), valid_data=data[1]).fit()
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "━" in out and "3/3" in out  # a rich bar, drawn to the end
    assert "valid/accuracy=" in out and "step 3 |" not in out


def test_progress_bar_mode_prints_nothing_on_other_ranks(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("RANK", "1")  # no process group: only the rank checks run
    cfg = config(tmp_path / "run", max_epochs=1, print_steps=None, progress_bar=True, report=True)
    Trainer(mlp(), cfg, train_data=Subset(data[0], range(96)), valid_data=data[1]).fit()
    assert capsys.readouterr().out == ""
    assert not (tmp_path / "run").exists()


def test_without_a_terminal_the_bar_becomes_lines_at_the_logging_cadence(tmp_path, data, capsys):
    cfg = config(tmp_path, max_epochs=1, print_steps=None, progress_bar=True, log_every_n_steps=2,
                 tensorboard=False, report=False)
    Trainer(mlp(), cfg, train_data=Subset(data[0], range(128)), valid_data=data[1]).fit()
    lines = [line.split(" |")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert lines == ["epoch 1/1 step 2", "epoch 1/1 step 4", "epoch 1/1 done"]


def test_report_of_non_image_inputs_has_no_sample_grids(tmp_path, digits):
    flat = TensorDataset(torch.stack([digits[1][i][0].flatten() for i in range(90)]),
                         torch.tensor([int(digits[1][i][1]) for i in range(90)]))
    cfg = config(tmp_path, max_epochs=1, tensorboard=False)
    trainer = Trainer(nn.Linear(64, 10), cfg, train_data=flat, valid_data=flat)
    trainer.fit()
    saved = load_classification_data(tmp_path / CLASSIFICATION_FILE)
    assert saved["images"] is None and int(saved["confusion_matrix"].sum()) == 90
    figures = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"confusion_matrix.svg", "per_class.svg"} <= figures and "samples_worst.svg" not in figures


def test_a_failing_report_warns_and_keeps_the_run(tmp_path, data, monkeypatch, capsys):
    import trainforge.report

    def broken(run_dir):
        raise RuntimeError("disk full")

    monkeypatch.setattr(trainforge.report, "build_report", broken)
    cfg = config(tmp_path, max_epochs=1, tensorboard=False)
    trainer = Trainer(mlp(), cfg, train_data=Subset(data[0], range(64)), valid_data=data[1])
    with pytest.warns(UserWarning, match=f"disk full.*trainforge report {re.escape(str(tmp_path))}"):
        state = trainer.fit()
    assert state.epoch == 1 and "report:" not in capsys.readouterr().out
    assert (tmp_path / "metrics.jsonl").is_file()


DDP_SCRIPT = """
import json, os, sys
import torch
from torch import nn
from torch.utils.data import Subset
from trainforge import Trainer, TrainingConfig
from trainforge.data import load_digits_split

run_dir, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
train, valid = load_digits_split(seed=0)
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
config = TrainingConfig(output_dir=run_dir, max_epochs=2, batch_size=32, lr=0.01, print_steps=1000, checkpoint=None,
                        metrics=["Accuracy", "ConfusionMatrix"], log_every_n_steps=3)
valid_data = {"a": Subset(valid, range(101)), "b": Subset(valid, range(101, 150))}
trainer = Trainer(model, config, train_data=Subset(train, range(256)), valid_data=valid_data)
state = trainer.fit()
with open(os.path.join(out, f"rank{os.environ['RANK']}.json"), "w") as file:
    json.dump({"metrics": {k: v for k, v in state.metrics.items() if isinstance(v, float)},
               "non_scalars": {k: v.tolist() for k, v in trainer.last_non_scalar_metrics.items()}}, file)
"""


@pytest.mark.slow
def test_two_processes_reduce_every_metric_and_rank_0_reports_on_the_whole_set(tmp_path):
    """Under torchrun (gloo, 2 processes): training metrics computed at the cadence (a collective) do not
    hang, confusion matrices count every sample, and the report pass on rank 0 alone covers all 101."""
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT)
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "--max-restarts=0", str(script), str(run_dir), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    scalars = [{k: v for k, v in r["metrics"].items() if not k.startswith("throughput/")} for r in ranks]
    assert scalars[0] == scalars[1] and ranks[0]["non_scalars"] == ranks[1]["non_scalars"]
    counts = {name: sum(map(sum, matrix)) for name, matrix in ranks[0]["non_scalars"].items()}
    assert counts == {"train/confusion_matrix": 256, "valid/confusion_matrix": 101, "valid_b/confusion_matrix": 49}
    saved = load_classification_data(run_dir / CLASSIFICATION_FILE)
    assert saved["confusion_matrix"].tolist() == ranks[0]["non_scalars"]["valid/confusion_matrix"]
    train_steps = [r["step"] for r in read_metrics_jsonl(run_dir / "metrics.jsonl") if r["phase"] == "train"]
    assert train_steps == [3, 4, 6, 8]  # 4 steps per epoch per rank; written once, by rank 0
    assert result.stdout.count("report: ") == 1
