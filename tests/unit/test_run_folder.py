"""The run folder keeps what the user had and belongs to one run, proven through ``Trainer.fit`` on small
real data (digits): saving over a user's folder is refused, a second Trainer on a locked folder is
refused, a fresh run over another run's files is refused (or moved aside with ``overwrite``), resume picks
only this run's checkpoints, names from a config are one path component, links and FIFOs planted in a
run folder are never written through or read (RELIABILITY B19), Ctrl-C checkpoints and exits 130, a
cut-off ``metrics.jsonl`` line is repaired, a second ``fit`` logs its epochs, ``last`` is a hard link,
and a user's ``ModelCheckpoint`` replaces the default one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from helpers import cfg, mlp
from torch.utils.data import Subset

from trainforge import Callback, Trainer, TrainingConfig
from trainforge.callbacks import ModelCheckpoint
from trainforge.checkpoint import (
    find_resume_checkpoint,
    load_checkpoint,
    read_latest,
    read_manifest,
    save_checkpoint,
    verify_checkpoint,
)
from trainforge.errors import CheckpointCorruptError, CheckpointError, ConfigError, RunFolderError
from trainforge.loggers import read_metrics_jsonl
from trainforge.run_folder import LOCK_FILE, read_run_id

CKPT = {"monitor": None, "mode": "min", "save_top_k": 1, "save_last": True, "every_n_epochs": 1}


@pytest.fixture(scope="module")
def small(digits):
    train, valid = digits
    return Subset(train, range(128)), Subset(valid, range(64))  # 2 steps per epoch at batch 64


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` with its type, size and mtime (links not followed)."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            info = path.lstat()
            found[str(path.relative_to(folder))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def sentinel_next_to(run_dir: Path) -> Path:
    sentinel = run_dir.parent / "sentinel"
    sentinel.mkdir(parents=True)
    (sentinel / "precious.txt").write_text("the user's file\n")
    (sentinel / "sub").mkdir()
    return sentinel


# -- nothing the user had is lost ----------------------------------------------------------------------
def test_save_over_a_folder_that_is_not_a_checkpoint_is_refused_and_left_untouched(tmp_path, small):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('hello')\n")
    (project / "README.md").write_text("my project\n")
    trainer = Trainer(mlp(), cfg(tmp_path), train_data=small[0])
    trainer.fit()
    before = snapshot(project)
    with pytest.raises(CheckpointError, match=rf"refusing to save a checkpoint at {project}: .*not a trainforge"):
        trainer.save(project)
    with pytest.raises(CheckpointError, match="is a file"):
        trainer.save(project / "README.md")
    assert snapshot(project) == before and not list(tmp_path.glob("project.*"))
    first = trainer.save(tmp_path / "saved")  # a checkpoint is replaced by a newer save; an empty folder too
    again = trainer.save(first)
    (tmp_path / "empty").mkdir()
    empty = trainer.save(tmp_path / "empty")
    verify_checkpoint(again), verify_checkpoint(empty)


def test_export_weights_creates_missing_parent_folders(tmp_path, small):
    from trainforge.export import load_safetensors

    trainer = Trainer(mlp(), cfg(tmp_path), train_data=small[0])
    trainer.fit()
    path = trainer.export_weights(tmp_path / "exports" / "v1" / "model.safetensors")
    tensors, _ = load_safetensors(path)
    assert torch.equal(tensors["1.weight"], trainer.model[1].weight.detach())


class SendSignal(Callback):
    def __init__(self, signum, step):
        self.signum, self.step = signum, step

    def on_batch_end(self, state):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def test_ctrl_c_finishes_the_step_writes_last_prints_the_resume_call_and_exits_130(tmp_path, small, capsys):
    config = cfg(tmp_path, max_epochs=3, checkpoint=CKPT)
    trainer = Trainer(mlp(), config, train_data=small[0], callbacks=[SendSignal(signal.SIGINT, 3)])
    with pytest.raises(SystemExit) as caught:
        trainer.fit()
    assert caught.value.code == 130 and trainer.global_step == 3
    out = capsys.readouterr().out
    assert f"SIGINT: stopped after step 3; wrote {trainer.run_dir / 'checkpoints' / 'last'}" in out
    assert f"trainer.fit(resume_from={str(trainer.run_dir)!r})" in out
    assert read_manifest(trainer.run_dir / "checkpoints" / "last")["metadata"]["global_step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    assert not (trainer.run_dir / LOCK_FILE).exists()
    resumed = Trainer(mlp(), config, train_data=small[0])
    assert resumed.fit(resume_from=str(trainer.run_dir)).global_step == 6


def test_ctrl_c_with_checkpoints_off_still_writes_last(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=3), train_data=small[0], callbacks=[SendSignal(signal.SIGINT, 2)])
    with pytest.raises(SystemExit, match="130"):
        trainer.fit()
    resumed = Trainer(mlp(), cfg(tmp_path, max_epochs=3), train_data=small[0])
    assert resumed.fit(resume_from="auto").global_step == 6 and resumed.recipe.state.epoch == 3


def test_a_line_cut_short_by_a_crash_is_repaired_when_the_run_resumes(tmp_path, small):
    config = cfg(tmp_path, max_epochs=1, checkpoint=CKPT, log_every_n_steps=1)
    Trainer(mlp(), config, train_data=small[0]).fit()
    metrics = Path(config.output_dir) / "metrics.jsonl"
    with open(metrics, "a") as file:
        file.write('{"step": 3, "epoch": 1, "phase": "train", "metr')  # the crash hit mid-write
    config.max_epochs = 2
    with pytest.warns(UserWarning, match=r"metrics.jsonl: removed an incomplete last line \(\d+ bytes\)"):
        Trainer(mlp(), config, train_data=small[0]).fit(resume_from="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no line is skipped or refused any more
        records = read_metrics_jsonl(metrics)
    assert sorted({r["step"] for r in records}) == [1, 2, 3, 4]


def test_a_second_fit_with_more_epochs_logs_them(tmp_path, small):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = cfg(tmp_path, max_epochs=2, tensorboard=True, log_every_n_steps=1)
    trainer = Trainer(mlp(), config, train_data=small[0], valid_data=small[1])
    trainer.fit()
    config.max_epochs = 4
    assert trainer.fit().global_step == 8
    records = read_metrics_jsonl(trainer.run_dir / "metrics.jsonl")
    assert {r["step"] for r in records if "train/loss" in r["metrics"]} == set(range(1, 9))
    assert {r["step"] for r in records if "valid/accuracy" in r["metrics"]} == {2, 4, 6, 8}
    events = EventAccumulator(str(trainer.run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("valid/accuracy")] == [2, 4, 6, 8]


# -- a run folder belongs to one run ------------------------------------------------------------------------
def test_a_second_trainer_on_a_folder_in_use_is_refused_and_never_interleaves(tmp_path, small):
    refusals = []

    class StartAnother(Callback):
        def on_epoch_end(self, state):
            other = Trainer(mlp(), cfg(tmp_path, max_epochs=1), train_data=small[0])
            with pytest.raises(RunFolderError, match=rf"in use by pid {os.getpid()} on {socket.gethostname()}"):
                other.fit(resume_from="auto")
            refusals.append(state.global_step)

    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=2, log_every_n_steps=1), train_data=small[0],
                      callbacks=[StartAnother()])
    trainer.fit()
    assert refusals == [2, 4]
    steps = [r["step"] for r in read_metrics_jsonl(trainer.run_dir / "metrics.jsonl") if r["phase"] == "train"]
    assert sorted(set(steps)) == [1, 2, 3, 4] and len(steps) == len(set(steps)) + 2  # each epoch end once more
    assert not (trainer.run_dir / LOCK_FILE).exists()  # released at the end of fit


def test_the_lock_is_released_when_fit_fails(tmp_path, small):
    class Boom(Callback):
        def on_epoch_end(self, state):
            raise RuntimeError("boom")

    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=2, checkpoint=CKPT), train_data=small[0], callbacks=[Boom()])
    with pytest.raises(Exception, match="boom"):
        trainer.fit()
    assert not (trainer.run_dir / LOCK_FILE).exists()
    assert Trainer(mlp(), cfg(tmp_path, max_epochs=2, checkpoint=CKPT), train_data=small[0]).fit(
        resume_from="auto").global_step == 4


def test_a_setup_that_fails_outside_fit_leaves_no_lock(tmp_path, small):
    broken = Trainer(mlp(), cfg(tmp_path, loss="NoSuchLoss"), train_data=small[0], valid_data=small[1])
    with pytest.raises(Exception, match="NoSuchLoss"):
        broken.evaluate()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    Trainer(mlp(), cfg(tmp_path), train_data=small[0]).fit()  # the folder is free


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_a_live_one_is_not(tmp_path, small):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "token": "old"}))
    with pytest.warns(UserWarning, match=rf"took over the lock of pid {dead.pid}.*no longer running"):
        Trainer(mlp(), cfg(tmp_path), train_data=small[0]).fit()
    (run_dir / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "x"}))
    with pytest.raises(RunFolderError, match="in use by pid 1 on elsewhere"):
        Trainer(mlp(), cfg(tmp_path), train_data=small[0]).fit(resume_from="auto")


def test_a_fresh_run_over_another_run_is_refused_naming_the_options(tmp_path, small):
    config = cfg(tmp_path, checkpoint=CKPT)
    Trainer(mlp(), config, train_data=small[0]).fit()
    run_dir = Path(config.output_dir)
    before = snapshot(run_dir)
    with pytest.raises(RunFolderError, match=r"already holds a run .*resume_from=.*overwrite=True"):
        Trainer(mlp(1), config, train_data=small[0]).fit()
    assert snapshot(run_dir) == before


def test_overwrite_moves_only_our_files_aside_and_deletes_nothing(tmp_path, small):
    config = cfg(tmp_path, checkpoint=CKPT, tensorboard=True)
    first = Trainer(mlp(), config, train_data=small[0])
    first.fit()
    run_dir = first.run_dir
    (run_dir / "notes.txt").write_text("mine\n")
    (run_dir / "data").mkdir()
    old_metrics = (run_dir / "metrics.jsonl").read_bytes()
    second = Trainer(mlp(1), cfg(tmp_path, checkpoint=CKPT, overwrite=True), train_data=small[0])
    with pytest.warns(UserWarning, match="overwrite=True: the previous run's files were moved to"):
        second.fit()
    (aside,) = run_dir.glob("overwritten-*")
    assert (run_dir / "notes.txt").read_text() == "mine\n" and (run_dir / "data").is_dir()
    assert (aside / "metrics.jsonl").read_bytes() == old_metrics
    verify_checkpoint(aside / "checkpoints" / "last")
    assert sorted(p.name for p in aside.iterdir()) == sorted(
        ["checkpoints", "config.yaml", "env.json", "hparams.json", "metrics.jsonl", "run.json", "tensorboard"])
    assert read_run_id(run_dir) != read_run_id(aside) and read_run_id(run_dir) is not None
    assert read_manifest(run_dir / "checkpoints" / "last")["metadata"]["run_id"] == read_run_id(run_dir)


def test_resume_picks_only_checkpoints_written_by_this_run(tmp_path, small):
    ours = cfg(tmp_path, max_epochs=2, checkpoint=CKPT)
    Trainer(mlp(), ours, train_data=small[0]).fit()  # step 4
    other = cfg(tmp_path / "other", max_epochs=3, checkpoint=CKPT)
    Trainer(mlp(), other, train_data=small[0]).fit()  # step 6, another run
    import shutil

    shutil.copytree(Path(other.output_dir) / "checkpoints" / "epoch003-step000006",
                    Path(ours.output_dir) / "checkpoints" / "epoch003-step000006")
    steps = []

    class FirstStep(Callback):
        def on_batch_end(self, state):
            steps.append(state.global_step)

    ours.max_epochs = 3
    resumed = Trainer(mlp(), ours, train_data=small[0], callbacks=[FirstStep()])
    with pytest.warns(UserWarning, match=r"skipping 1 checkpoint\(s\) not written by run .*epoch003-step000006"):
        resumed.fit(resume_from="auto")
    assert steps == [5, 6]  # continued from this run's step 4, not from the other run's step 6


def test_default_run_folders_are_unique_even_within_one_second(tmp_path, small, monkeypatch):
    import trainforge.run_folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trainforge.run_folder, "timestamp", lambda: "20260101-000000")
    folders = []
    for seed in (0, 1, 2):
        trainer = Trainer(mlp(seed), cfg(tmp_path, output_dir=None, experiment_name="same"), train_data=small[0])
        trainer.fit()
        folders.append(trainer.run_dir)
    assert [p.name for p in folders] == ["20260101-000000", "20260101-000000-1", "20260101-000000-2"]
    assert all(len(read_metrics_jsonl(p / "metrics.jsonl")) > 0 for p in folders)


# -- paths stay where they belong ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", ".", "../elsewhere", "a/b", "a\\b", "/abs", "a\0b", "", "C:evil"])
def test_experiment_name_must_be_one_path_component(name):
    with pytest.raises(ConfigError, match=r"experiment_name=.* is not one plain name"):
        TrainingConfig(experiment_name=name)


@pytest.mark.parametrize("template", ["../x{epoch}", "/tmp/x{step}", "a/{epoch}", "{epoch}\\x", "..", "last"])
def test_checkpoint_filename_must_format_to_one_path_component(tmp_path, small, template):
    with pytest.raises(ConfigError, match=r"^checkpoint.filename=.*(not one plain name|keeps for itself)"):
        Trainer(mlp(), cfg(tmp_path, checkpoint={**CKPT, "filename": template}), train_data=small[0]).fit()
    with pytest.raises(ConfigError, match=r"checkpoint\.filename"):
        ModelCheckpoint(tmp_path, filename=template)
    with pytest.raises(ConfigError, match="does not format"):
        ModelCheckpoint(tmp_path, filename="{epoch}-{loss}")


def test_tilde_in_output_dir_is_the_home_folder(tmp_path, small, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(mlp(), cfg(tmp_path, output_dir="~/runs/x", checkpoint=CKPT), train_data=small[0])
    trainer.fit()
    assert trainer.run_dir == tmp_path / "home" / "runs" / "x" and not (tmp_path / "~").exists()
    verify_checkpoint(tmp_path / "home" / "runs" / "x" / "checkpoints" / "last")
    assert trainer.export_weights("~/model.safetensors") == tmp_path / "home" / "model.safetensors"


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.yaml", "env.json", "checkpoints", "report", "tensorboard"])
def test_a_link_planted_in_the_run_folder_is_never_written_through(tmp_path, small, name):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sentinel = sentinel_next_to(run_dir)
    target = sentinel / "precious.txt" if "." in name else sentinel / "sub"
    (run_dir / name).symlink_to(target)
    before = snapshot(sentinel)
    with pytest.raises(RunFolderError, match=rf"{run_dir / name} is a symbolic link"):
        Trainer(mlp(), cfg(tmp_path, checkpoint=CKPT, tensorboard=True, report=True), train_data=small[0]).fit()
    assert snapshot(sentinel) == before


def test_the_metrics_file_is_never_opened_through_a_link(tmp_path):
    from trainforge.loggers import JsonlLogger

    sentinel = sentinel_next_to(tmp_path / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").symlink_to(sentinel / "precious.txt")
    with pytest.raises(OSError, match="symbolic link"):
        JsonlLogger(tmp_path / "run" / "metrics.jsonl")
    assert (sentinel / "precious.txt").read_text() == "the user's file\n"


class Blocked(BaseException):
    """Not an OSError, so no ``except OSError`` on the way swallows it."""


class Alarm:
    """Fails the test instead of hanging when a read blocks (a FIFO opened without O_NONBLOCK)."""

    def __enter__(self):
        def on_alarm(signum, frame):
            raise Blocked("blocked on a FIFO")

        self.previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(20)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)


@pytest.mark.parametrize("member", ["state.pt", "MANIFEST.json"])
@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_checkpoint_member_that_is_a_fifo_or_link_is_refused_without_opening_it(tmp_path, small, member, kind):
    config = cfg(tmp_path, max_epochs=2, checkpoint={**CKPT, "save_top_k": -1, "save_last": False})
    Trainer(mlp(), config, train_data=small[0]).fit()
    folder = Path(config.output_dir) / "checkpoints"
    newest = folder / "epoch002-step000004"
    file = newest / member
    outside = tmp_path / f"outside-{member}"
    file.rename(outside)  # the very same bytes: only the kind of file is wrong
    if kind == "fifo":
        os.mkfifo(file)
    else:
        file.symlink_to(outside)
    expected = "a FIFO" if kind == "fifo" else "a symbolic link"
    with Alarm():
        with pytest.raises(CheckpointCorruptError, match=rf"{file} is {expected}.*, not a regular file"):
            load_checkpoint(newest)
        with pytest.warns(UserWarning, match=f"epoch002-step000004.*{expected}"):
            assert find_resume_checkpoint(folder) == folder / "epoch001-step000002"
        config.max_epochs = 3
        with pytest.warns(UserWarning, match="epoch002-step000004"):
            state = Trainer(mlp(), config, train_data=small[0]).fit(resume_from="auto")
    assert state.global_step == 6


def test_a_fifo_named_latest_does_not_block(tmp_path):
    save_checkpoint(tmp_path / "step-000001", {"w": torch.ones(1)}, {"global_step": 1})
    (tmp_path / "latest").unlink()
    os.mkfifo(tmp_path / "latest")
    with Alarm():
        assert read_latest(tmp_path) is None
        assert find_resume_checkpoint(tmp_path).name == "step-000001"


def _manifest_digest(manifest: dict) -> str:
    import hashlib

    rest = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_b19_paths_from_config_or_a_manifest_never_leave_the_run_folder(tmp_path, small, monkeypatch):
    """RELIABILITY B19: ``..``, absolute paths and links leading outside the run folder are rejected; a
    sentinel folder next to the run folder is unchanged (listing and mtimes)."""
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    sentinel = sentinel_next_to(run_dir)
    before = snapshot(sentinel)
    config = cfg(tmp_path, checkpoint=CKPT, tensorboard=True, report=True)
    trainer = Trainer(mlp(), config, train_data=small[0])
    trainer.fit()
    for bad in ({"experiment_name": "../sentinel", "output_dir": None}, {"experiment_name": str(sentinel)},
                {"checkpoint": {**CKPT, "filename": "../../sentinel/x{epoch}"}},
                {"checkpoint": {**CKPT, "filename": str(sentinel / "x{epoch}")}}):
        with pytest.raises(ConfigError):
            Trainer(mlp(), cfg(tmp_path, **{**config.to_dict(), "overwrite": True, **bad}), train_data=small[0]).fit()
    # a manifest that lists a file outside its folder
    last = run_dir / "checkpoints" / "last"
    manifest = json.loads((last / "MANIFEST.json").read_text())
    manifest["files"]["../../../sentinel/precious.txt"] = {"sha256": "0" * 64, "size": 16}
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (last / "MANIFEST.json").unlink()
    (last / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorruptError, match=r"invalid file name '\.\./\.\./\.\./sentinel/precious\.txt'"):
        load_checkpoint(last)
    (run_dir / "checkpoints" / "latest").write_text("../../sentinel\n")
    assert read_latest(run_dir / "checkpoints") is None
    # links planted in the run folder towards the sentinel
    for name, target in (("report", sentinel / "sub"), ("metrics.jsonl", sentinel / "precious.txt")):
        moved = run_dir / f"{name}.moved"
        (run_dir / name).rename(moved)
        (run_dir / name).symlink_to(target)
        with pytest.raises(RunFolderError, match="symbolic link"):
            Trainer(mlp(), config, train_data=small[0]).fit(resume_from="auto")
        (run_dir / name).unlink()
        moved.rename(run_dir / name)
    assert snapshot(sentinel) == before


# -- the checkpoint callback --------------------------------------------------------------------------------
def test_last_is_a_hard_link_to_the_newest_checkpoint_and_survives_pruning(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=3, checkpoint=CKPT), train_data=small[0])
    trainer.fit()
    folder = trainer.run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch003-step000006", "last", "latest"]  # 1 and 2 pruned
    newest, last = folder / "epoch003-step000006" / "state.pt", folder / "last" / "state.pt"
    assert last.stat().st_ino == newest.stat().st_ino and last.stat().st_nlink == 2  # one copy of the bytes
    assert read_latest(folder) == "last" and find_resume_checkpoint(folder) == folder / "last"
    from trainforge.checkpoint import remove_checkpoint

    remove_checkpoint(folder / "epoch003-step000006")  # the bytes stay while `last` names them
    verify_checkpoint(folder / "last")
    assert read_manifest(folder / "last")["metadata"]["global_step"] == 6


def test_save_top_k_zero_keeps_last_alone(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=2, checkpoint={**CKPT, "save_top_k": 0}), train_data=small[0])
    trainer.fit()
    folder = trainer.run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last", "latest"]
    assert (folder / "last" / "state.pt").stat().st_nlink == 1
    assert read_manifest(folder / "last")["metadata"]["global_step"] == 4


def test_a_users_model_checkpoint_replaces_the_default_one(tmp_path, small):
    mine = ModelCheckpoint(tmp_path / "mine", save_top_k=-1, save_last=False)
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=2, checkpoint=CKPT), train_data=small[0], callbacks=[mine])
    trainer.fit()
    assert trainer.checkpoint_callback is mine
    assert sum(isinstance(c, ModelCheckpoint) for c in trainer.recipe.callbacks._keyed().values()) == 1
    assert not (trainer.run_dir / "checkpoints").exists()
    assert sorted(p.name for p in (tmp_path / "mine").iterdir() if p.is_dir()) == [
        "epoch001-step000002", "epoch002-step000004"]
    config = cfg(tmp_path, max_epochs=3, checkpoint=CKPT)
    again = ModelCheckpoint(tmp_path / "mine", save_top_k=-1, save_last=False)
    resumed = Trainer(mlp(), config, train_data=small[0], callbacks=[again])
    assert resumed.fit(resume_from="auto").global_step == 6  # auto resume looks where the checkpoints are


def test_kornia_model_checkpoint_filepath_and_best_score_as_logged(tmp_path, small):
    seen = []

    class Record(Callback):
        def on_epoch_end(self, state):
            seen.append(state.metrics["valid/accuracy"])

    checkpoint = ModelCheckpoint(filepath=str(tmp_path / "outputs"), monitor="valid/accuracy", mode="max")
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=3, lr=0.003), train_data=small[0], valid_data=small[1],
                      callbacks={"on_checkpoint": checkpoint, "on_epoch_end": Record()})
    trainer.fit()
    assert checkpoint.dirpath == tmp_path / "outputs" and checkpoint.best_model_path.parent == tmp_path / "outputs"
    assert checkpoint.best_model_score == max(seen) > 0
    assert read_manifest(checkpoint.best_model_path)["metadata"]["score"] == max(seen)
    unset = ModelCheckpoint(monitor="valid/accuracy")  # given to a Trainer: the run folder's checkpoints/
    trainer = Trainer(mlp(), cfg(tmp_path / "b", max_epochs=1), train_data=small[0], valid_data=small[1],
                      callbacks=[unset])
    trainer.fit()
    assert unset.dirpath == trainer.run_dir / "checkpoints" and (unset.dirpath / "last").is_dir()
    with pytest.raises(ConfigError, match="filepath is Kornia's name for dirpath"):
        ModelCheckpoint(tmp_path / "a", filepath=tmp_path / "b")
