from __future__ import annotations

import io
import json
import sys
import types

import pytest
import torch

from trainforge.callbacks import CallRecipe
from trainforge.engine import Recipe, batch_size
from trainforge.errors import RegistryError
from trainforge.loggers import (
    BaseLogger,
    ConsoleLogger,
    JsonlLogger,
    Logger,
    TensorBoardLogger,
    Throughput,
    build_logger,
    list_loggers,
    log_confusion_matrix,
    read_metrics_jsonl,
)


# -- JSONL -----------------------------------------------------------------------------------------
def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    with JsonlLogger(path) as logger:
        assert isinstance(logger, Logger)
        logger.log_metrics({"train/loss": torch.tensor(0.25), "train/accuracy": 0.5}, step=3, epoch=0)
        logger.log_metrics({"valid/loss": 0.75, "valid/confusion_matrix": torch.eye(2)}, step=5, epoch=0)
        logger.log_metrics({"train/loss": 0.125, "lr": 0.01}, step=8, phase="train", epoch=1)
        logger.log_metrics({"valid/confusion_matrix": torch.eye(2)}, step=9)  # nothing scalar: no line
    records = read_metrics_jsonl(path)
    assert [(r["step"], r["epoch"], r["phase"], r["metrics"]) for r in records] == [
        (3, 0, "train", {"train/loss": 0.25, "train/accuracy": 0.5}),
        (5, 0, "valid", {"valid/loss": 0.75}),
        (8, 1, "train", {"train/loss": 0.125, "lr": 0.01}),
    ]
    assert all(isinstance(r["time"], float) for r in records)
    assert path.read_text().count("\n") == 3


def test_jsonl_flushes_at_most_every_interval_on_flush_and_close_and_appends_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    logger = JsonlLogger(path, flush_every_s=3600)
    logger.log_metrics({"train/loss": 1.0}, step=1)
    assert len(read_metrics_jsonl(path)) == 1  # the first line goes out at once
    logger.log_metrics({"train/loss": 0.9}, step=2)
    assert len(read_metrics_jsonl(path)) == 1  # buffered: within the interval
    logger.flush()
    assert len(read_metrics_jsonl(path)) == 2
    logger.close()
    every_line = JsonlLogger(tmp_path / "each.jsonl", flush_every_s=0)
    for step in (1, 2, 3):
        every_line.log_metrics({"train/loss": 1.0}, step=step)
        assert len(read_metrics_jsonl(tmp_path / "each.jsonl")) == step
    every_line.close()
    logger = JsonlLogger(path)
    logger.close()
    with JsonlLogger(path) as resumed:
        resumed.log_metrics({"train/loss": 0.5}, step=3)
    assert [r["step"] for r in read_metrics_jsonl(path)] == [1, 2, 3]


def test_read_tolerates_a_truncated_last_line_only(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with JsonlLogger(path) as logger:
        for step in range(1, 4):
            logger.log_metrics({"train/loss": 1.0 / step}, step=step)
    full = path.read_text()
    path.write_text(full + full.splitlines()[0][:25])  # a crash in the middle of a write
    with pytest.warns(UserWarning, match="cut short"):
        records = read_metrics_jsonl(path)
    assert [r["step"] for r in records] == [1, 2, 3]
    lines = full.splitlines()
    path.write_text("\n".join([lines[0], lines[1][:10], lines[2]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics_jsonl(path)


def test_jsonl_hparams_and_nan(tmp_path):
    with JsonlLogger(tmp_path / "metrics.jsonl") as logger:
        logger.log_metrics({"train/loss": float("nan")}, step=1)
        logger.log_hyperparams({"optimizer": {"name": "SGD", "lr": 0.1}}, {"valid/accuracy": torch.tensor(0.9)})
    (record,) = read_metrics_jsonl(tmp_path / "metrics.jsonl")
    assert record["metrics"]["train/loss"] != record["metrics"]["train/loss"]  # NaN survives
    hparams = json.loads((tmp_path / "hparams.json").read_text())
    assert hparams["params"] == {"optimizer.name": "SGD", "optimizer.lr": 0.1}
    assert hparams["final_metrics"]["valid/accuracy"] == pytest.approx(0.9)


def test_file_loggers_write_nothing_on_other_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with JsonlLogger(tmp_path / "metrics.jsonl") as logger:
        logger.log_metrics({"train/loss": 1.0}, step=1)
    with TensorBoardLogger(tmp_path / "tb") as tb:
        tb.log_metrics({"train/loss": 1.0}, step=1)
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "tb").exists()


# -- TensorBoard -----------------------------------------------------------------------------------
def test_tensorboard_scalars_images_figures_and_hparams_in_one_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = tmp_path / "tb"
    logger = TensorBoardLogger(log_dir)
    for step in (1, 2, 3):
        logger.log_metrics({"train/loss": 1.0 / step, "lr": 0.1 * step, "epoch": 0}, step=step)
    logger.log_metrics({"valid/accuracy": torch.tensor(0.8), "valid/cm": torch.eye(3)}, step=3, phase="valid")
    logger.log_images("samples/train", torch.rand(6, 3, 8, 8), step=3)
    log_confusion_matrix(logger, "valid/confusion_matrix", torch.tensor([[5, 1], [2, 7]]), 3, ["cat", "dog"])
    logger.log_hyperparams({"optimizer": {"lr": 0.1}, "model": "mlp"}, {"valid/accuracy": 0.8, "test/accuracy": 0.7})
    logger.close()

    assert [p for p in log_dir.iterdir() if p.is_dir()] == []  # no hparams sub-run
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert sorted(tags["scalars"]) == ["epoch", "lr", "test/accuracy", "train/loss", "valid/accuracy"]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [e.step for e in events.Scalars("valid/accuracy")] == [3]  # logged once, not again by hparams
    assert [e.step for e in events.Scalars("test/accuracy")] == [3]  # final-only metric written for hparams
    assert {"samples/train", "valid/confusion_matrix"} <= set(tags["images"])
    figure = events.Images("valid/confusion_matrix")[0]
    assert figure.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and figure.width > 100
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    assert b"optimizer.lr" in hparams["_hparams_/session_start_info"]


# -- optional back-ends ----------------------------------------------------------------------------
def test_mlflow_and_visdom_missing_give_install_hints(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "visdom", None)
    with pytest.raises(ImportError, match=r"pip install 'trainforge\[mlflow\]'"):
        build_logger("mlflow", tracking_uri="file:./mlruns")
    with pytest.raises(ImportError, match="pip install visdom"):
        build_logger("visdom", env="mine")


def test_visdom_logger_never_wipes_the_environment(monkeypatch):
    calls = []

    class FakeVisdom:
        def __init__(self, **kwargs):
            calls.append(("__init__", kwargs))

        def __getattr__(self, name):
            return lambda *args, **kwargs: calls.append((name, kwargs))

    monkeypatch.setitem(sys.modules, "visdom", types.SimpleNamespace(Visdom=FakeVisdom))
    logger = build_logger("visdom", env="users-env")
    logger.log_metrics({"train/loss": 0.5, "lr": 0.1}, step=4)
    logger.log_images("samples", torch.rand(2, 3, 4, 4), step=4)
    logger.log_hyperparams({"lr": 0.1})
    logger.close()
    names = [name for name, _ in calls]
    assert names == ["__init__", "line", "line", "images", "text"]
    assert not {"delete_env", "close", "clear_event_handlers"} & set(names)
    assert all(kwargs.get("env") == "users-env" for name, kwargs in calls if name != "__init__")
    assert calls[1][1]["update"] == "append" and calls[1][1]["win"] == "train/loss"


def test_mlflow_logger_calls_the_client_api(monkeypatch, tmp_path):
    calls = []

    class FakeClient:
        def __init__(self, tracking_uri=None):
            calls.append(("client", tracking_uri))

        def get_experiment_by_name(self, name):
            return None

        def create_experiment(self, name):
            return "7"

        def create_run(self, experiment_id, run_name=None):
            calls.append(("create_run", experiment_id, run_name))
            return types.SimpleNamespace(info=types.SimpleNamespace(run_id="run-1"))

        def __getattr__(self, name):
            return lambda *args, **kwargs: calls.append((name, args, kwargs))

    fake = types.ModuleType("mlflow")
    fake.tracking = types.SimpleNamespace(MlflowClient=FakeClient)
    entities = types.ModuleType("mlflow.entities")
    entities.Metric = lambda key, value, timestamp, step: (key, value, step)
    entities.Param = lambda key, value: (key, value)
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setitem(sys.modules, "mlflow.entities", entities)
    logger = build_logger("mlflow", tracking_uri=f"file:{tmp_path}", run_name="r")
    logger.log_metrics({"train/loss": torch.tensor(0.5), "cm": torch.eye(2)}, step=3)
    logger.log_hyperparams({"optimizer": {"lr": 0.1}}, {"valid/accuracy": 0.9})
    logger.log_images("samples", torch.rand(2, 1, 4, 4), step=3)
    logger.close()
    assert calls[:2] == [("client", f"file:{tmp_path}"), ("create_run", "7", "r")]
    assert calls[2] == ("log_batch", ("run-1",), {"metrics": [("train/loss", 0.5, 3)]})
    assert calls[3] == ("log_batch", ("run-1",), {"params": [("optimizer.lr", "0.1")]})
    assert calls[4] == ("log_metric", ("run-1", "final/valid/accuracy", 0.9), {})
    assert calls[5][0] == "log_image" and calls[5][1][1].shape == (8, 14, 3)
    assert calls[6] == ("set_terminated", ("run-1",), {})


def test_build_logger_by_name():
    assert list_loggers() == ["console", "jsonl", "mlflow", "tensorboard", "visdom"]
    with pytest.raises(RegistryError, match="tensorboard"):
        build_logger("tensorbaord")
    with pytest.raises(RegistryError, match="Known loggers"):
        build_logger("wandb")
    assert isinstance(build_logger("console"), ConsoleLogger)


def test_base_logger_optional_methods_are_no_ops():
    class Minimal(BaseLogger):
        def log_metrics(self, metrics, step, phase=None, *, epoch=None):
            self.seen = (dict(metrics), step)

    logger = Minimal()
    assert isinstance(logger, Logger)
    logger.log_figure("x", None, 1)
    logger.log_images("x", torch.zeros(1, 1, 2, 2), 1)
    logger.log_hyperparams({"a": 1})
    logger.close()


# -- console and throughput, through a real loop ---------------------------------------------------
class Clock:
    """A fake clock that a prologue callback advances by ``tick`` seconds before each batch."""

    def __init__(self, tick: float = 0.5) -> None:
        self.now = 0.0
        self.tick = tick

    def __call__(self) -> float:
        return self.now

    def on_batch_start(self, state):
        self.now += self.tick


class SlowEvaluation:
    """Inside a nested evaluation recipe: each evaluation batch takes 100 s of the fake clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def on_batch_end(self, state):
        self.clock.now += 100


class CountingValue:
    """A metric value that counts its host conversions (what a sync would cost)."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.reads = 0

    def item(self) -> float:
        self.reads += 1
        return self.value


class PostLoss:
    def __init__(self, value):
        self.value = value

    def on_batch_end(self, state):
        state.metrics["train/loss"] = self.value
        state.metrics["lr"] = 0.1
        state.metrics["global_step"] = state.global_step  # a counter: never printed


def _recipe(clock, sizes=(4, 4, 4, 2)):
    recipe = Recipe(lambda batch: None, [{"input": torch.zeros(n, 3)} for n in sizes])
    recipe.callbacks.add(clock, "prologue")
    return recipe


def test_console_print_steps_prints_exactly_the_expected_lines():
    clock, out, loss = Clock(), io.StringIO(), CountingValue(0.5)
    recipe = _recipe(clock)
    recipe.callbacks.add(PostLoss(loss))
    evaluation = Recipe(lambda batch: None, [0])  # 100 s of evaluation after step 3: left out of samples/s
    evaluation.callbacks.add(SlowEvaluation(clock))
    recipe.callbacks.add(CallRecipe(evaluation, every=3, prefix="valid"))
    recipe.callbacks.add(ConsoleLogger(print_steps=2, stream=out, clock=clock), "epilogue")
    recipe.run(2)
    assert out.getvalue().splitlines() == [
        "epoch 1/2 step 2 | train/loss=0.5 lr=0.1 | 8 samples/s",
        "epoch 1/2 step 4 | train/loss=0.5 lr=0.1 | 6 samples/s",
        "epoch 1/2 done | train/loss=0.5 lr=0.1 | 7 samples/s",
        "epoch 2/2 step 6 | train/loss=0.5 lr=0.1 | 8 samples/s",
        "epoch 2/2 step 8 | train/loss=0.5 lr=0.1 | 6 samples/s",
        "epoch 2/2 done | train/loss=0.5 lr=0.1 | 7 samples/s",
    ]
    assert loss.reads == 6  # converted at the print cadence only, not at each of the 8 steps


def test_console_is_silent_when_not_rank_zero(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    clock, out = Clock(), io.StringIO()
    recipe = _recipe(clock)
    recipe.callbacks.add(PostLoss(0.5))
    recipe.callbacks.add(ConsoleLogger(print_steps=1, stream=out, clock=clock), "epilogue")
    recipe.callbacks.add(ConsoleLogger(stream=out, clock=clock), "epilogue")
    recipe.run(1)
    assert out.getvalue() == ""


def test_console_progress_bar_refreshes_at_its_cadence():
    from rich.console import Console

    clock, loss = Clock(), CountingValue(0.25)
    buffer = io.StringIO()
    recipe = _recipe(clock, sizes=(2,) * 10)
    recipe.callbacks.add(PostLoss(loss))
    logger = ConsoleLogger(console=Console(file=buffer, width=160, force_terminal=False), refresh_steps=5, clock=clock)
    recipe.callbacks.add(logger, "epilogue")
    recipe.run(2)
    text = buffer.getvalue()
    assert "epoch 2/2" in text and "train/loss=0.25" in text and "samples/s" in text and "10/10" in text
    assert loss.reads == 2 * (2 + 1)  # two refreshes per epoch of 10 steps, plus the epoch end
    assert logger._progress is None  # stopped at fit_end


def test_throughput_posts_window_means_and_leaves_evaluation_out():
    clock = Clock(tick=0.5)
    evaluation = Recipe(lambda batch: None, [0])
    evaluation.callbacks.add(SlowEvaluation(clock))
    recipe = _recipe(clock, sizes=(4, 4, 4, 2, 2))
    seen = []
    recipe.callbacks.add(Throughput(log_every=2, synchronize=False, clock=clock), "prologue")
    recipe.callbacks.add(CallRecipe(evaluation, every=3, prefix="valid"))
    recipe.callbacks.add(type("Seen", (), {"on_batch_end": lambda self, s: seen.append(
        (s.global_step, s.metrics.get("throughput/samples_per_s"), s.metrics.get("throughput/step_time_s")))})())
    state = recipe.run(1)
    # steps 1-2: 8 samples in 1 s; steps 3-4: 6 samples in 1 s (the 100 s evaluation after step 3 is paused)
    assert seen[1] == (2, 8.0, 0.5) and seen[3] == (4, 6.0, 0.5)
    # epoch end: the partial window of step 5 (2 samples in 0.5 s)
    assert state.metrics["throughput/samples_per_s"] == 4.0 and state.metrics["throughput/step_time_s"] == 0.5


def test_samples_are_counted_by_the_recipe_batch_size_function():
    assert batch_size((torch.zeros(7, 2), torch.zeros(7))) == 7
    assert batch_size({"input": [1, 2, 3]}) == 3
    assert batch_size(object()) == 0
    recipe = Recipe(lambda batch: None, [torch.zeros(3, 2), torch.zeros(5, 2)])
    seen = []
    recipe.callbacks.add(type("Seen", (), {"on_batch_start": lambda self, s: seen.append(s.batch_size)})())
    assert recipe.run(2).samples == 16 and seen == [3, 5, 3, 5]
    custom = Recipe(lambda batch: None, [torch.zeros(3, 2)], batch_size_fn=lambda batch: 10)
    assert custom.run(1).samples == 10


def test_learning_rate_reaches_tensorboard_at_every_optimizer_step_through_fit(tmp_path, digits):
    """The warm-up is visible in TensorBoard even when metrics are logged every 50 steps."""
    from helpers import cfg, mlp
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import Subset

    from trainforge import Trainer

    config = cfg(tmp_path, tensorboard=True, max_epochs=2, batch_size=32, scheduler="linear", warmup_steps=5,
                 log_every_n_steps=50)
    Trainer(mlp(), config, train_data=Subset(digits[0], range(256)), valid_data=Subset(digits[1], range(64))).fit()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    lr = events.Scalars("lr")
    assert [e.step for e in lr] == list(range(1, 17))  # 8 steps an epoch, 2 epochs, each step once
    values = [e.value for e in lr]
    assert values[:5] == pytest.approx([0.01 * k / 5 for k in range(1, 6)], rel=1e-5)  # the warm-up
    assert values[-1] == pytest.approx(0.0, abs=1e-9)  # linear decay to zero at the last step


def test_learning_rate_in_tensorboard_once_per_optimizer_step_when_accumulating(tmp_path, digits):
    from helpers import cfg, mlp
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import Subset

    from trainforge import Trainer

    config = cfg(tmp_path, tensorboard=True, batch_size=32, accumulate_grad_batches=2, scheduler="linear",
                 warmup_steps=2)
    Trainer(mlp(), config, train_data=Subset(digits[0], range(256))).fit()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("lr")] == [2, 4, 6, 8]  # 8 batches, 4 optimizer steps
