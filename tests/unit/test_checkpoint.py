"""Checkpoint I/O: round trips, the manifest and latest pointer, discovery order, corruption (B9), full
disk (B6), failed pruning (B7), malicious pickles (B14) and hostile archives (B18)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import random
import shlex
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trainforge
from trainforge import checkpoint as ckpt
from trainforge.checkpoint import (
    assert_finite,
    atomic_write_bytes,
    clean_stale,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_state_file,
    read_latest,
    read_manifest,
    remove_checkpoint,
    save_checkpoint,
    verify_checkpoint,
    write_latest,
)
from trainforge.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointWriteError,
    ModelLoadError,
    UnsafeCheckpointError,
)


# -- helpers ---------------------------------------------------------------------------------------
def tiny_state(step: int) -> dict:
    return {"w": torch.full((4,), float(step)), "progress": {"global_step": step}}


def save_step(directory: Path, step: int, **kwargs) -> Path:
    return save_checkpoint(directory / f"step-{step:06d}", tiny_state(step), {"global_step": step}, **kwargs)


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def forge_checkpoint(directory: Path, state_bytes: bytes, metadata: dict | None = None) -> Path:
    """A checkpoint directory around arbitrary ``state.pt`` bytes, with a manifest that matches them,
    so loading gets past the checksum to the unpickler (what an attacker would ship)."""
    directory.mkdir(parents=True)
    (directory / "state.pt").write_bytes(state_bytes)
    manifest = {
        "format_version": 1,
        "trainforge_version": "0.0.0",
        "files": {"state.pt": {"sha256": hashlib.sha256(state_bytes).hexdigest(), "size": len(state_bytes)}},
        "metadata": metadata or {},
    }
    manifest["manifest_sha256"] = ckpt._manifest_digest(manifest)
    (directory / "MANIFEST.json").write_text(json.dumps(manifest))
    return directory


def scratch_entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def assert_same(a, b, where="state"):
    """Exact equality of nested containers: tensors bitwise with the same dtype, other values ==."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def tiny_training():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, optimizer


def train_step(model, optimizer, seed):
    generator = torch.Generator().manual_seed(seed)
    loss = model(torch.randn(2, 3, 6, 6, generator=generator)).pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def realistic_state(model, optimizer) -> dict:
    np_rng = np.random.RandomState(3)
    np_rng.standard_normal()  # leaves a cached gaussian, so every field of the state matters
    name, keys, pos, has_gauss, cached = np_rng.get_state()
    return {
        "model": model.state_dict(),
        "optimizers": [optimizer.state_dict()],
        "rng": {
            "python": random.Random(5).getstate(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                      "has_gauss": has_gauss, "cached_gaussian": cached},
            "torch": torch.Generator().manual_seed(7).get_state(),
        },
        "progress": {"epoch": 1, "global_step": 12, "epoch_step": 4},
        "config": {"lr": 1e-2, "name": "tiny", "nothing": None, "nested": {"deep": [1, 2.5, "x", True]}},
    }  # fmt: skip


# -- round trip and format -------------------------------------------------------------------------
def test_realistic_state_round_trips_bitwise_and_resumes_identically(tmp_path):
    model, optimizer = tiny_training()
    for seed in range(2):
        train_step(model, optimizer, seed)
    state = realistic_state(model, optimizer)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "step-000012", state, {"global_step": 12}))
    assert_same(state, loaded)

    # the restored RNGs continue the same streams
    python_rng = random.Random()
    python_rng.setstate(loaded["rng"]["python"])
    assert python_rng.random() == random.Random(5).random()
    np_state = loaded["rng"]["numpy"]
    restored = np.random.RandomState()
    restored.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                        np_state["has_gauss"], np_state["cached_gaussian"]))  # fmt: skip
    reference = np.random.RandomState(3)
    reference.standard_normal()
    assert restored.standard_normal() == reference.standard_normal()

    # a model and optimizer restored from the checkpoint take the same next step, bit for bit
    model2, optimizer2 = tiny_training()
    model2.load_state_dict(loaded["model"])
    optimizer2.load_state_dict(loaded["optimizers"][0])
    train_step(model, optimizer, 99)
    train_step(model2, optimizer2, 99)
    assert_same(model.state_dict(), model2.state_dict())


def test_manifest_records_version_checksums_and_metadata(tmp_path):
    metadata = {"global_step": 3, "epoch": 0, "monitor": "valid/loss", "score": 0.25, "best": None}
    path = save_checkpoint(tmp_path / "ckpt" / "step-000003", tiny_state(3), metadata)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    data = (path / "state.pt").read_bytes()
    assert manifest["format_version"] == 1
    assert manifest["trainforge_version"] == trainforge.__version__
    assert manifest["files"] == {"state.pt": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
    assert manifest["metadata"] == metadata
    assert read_manifest(path) == manifest
    assert sorted(p.name for p in path.iterdir()) == ["MANIFEST.json", "state.pt"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest", "step-000003"]


def test_resaving_a_name_replaces_it_completely(tmp_path):
    save_checkpoint(tmp_path / "last", tiny_state(1), {"global_step": 1})
    path = save_checkpoint(tmp_path / "last", tiny_state(2), {"global_step": 2})
    assert load_checkpoint(path)["w"].tolist() == [2.0] * 4
    assert read_manifest(path)["metadata"] == {"global_step": 2}
    assert scratch_entries(tmp_path) == []


def test_latest_pointer(tmp_path):
    save_step(tmp_path, 1)
    assert read_latest(tmp_path) == "step-000001"
    save_step(tmp_path, 2, update_latest=False)
    assert read_latest(tmp_path) == "step-000001"
    write_latest(tmp_path, "step-000002")
    assert (tmp_path / "latest").read_text() == "step-000002\n"
    for bad in ("../x", "a/b", "", "..", "x.tmp-1-ab", "latest"):
        with pytest.raises(ValueError, match="invalid checkpoint name"):
            write_latest(tmp_path, bad)
    (tmp_path / "latest").write_text("../../etc")
    assert read_latest(tmp_path) is None
    assert scratch_entries(tmp_path) == []


def test_invalid_arguments_fail_before_anything_is_written(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="invalid checkpoint name"):
        save_checkpoint(tmp_path / "x.tmp-1-ab", tiny_state(1))
    with pytest.raises(TypeError, match=r"\.item\(\)"):
        save_checkpoint(tmp_path / "c", tiny_state(1), {"score": torch.tensor(0.5)})
    with pytest.raises(TypeError, match="must be a dict"):
        save_checkpoint(tmp_path / "c", [torch.ones(1)])
    monkeypatch.setenv("TRAINFORGE_FAULT", "kill_in_save:typo")
    with pytest.raises(ValueError, match="unknown kill point"):
        save_checkpoint(tmp_path / "c", tiny_state(1))
    assert list(tmp_path.iterdir()) == []


def test_fault_values_of_other_modules_are_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINFORGE_FAULT", "kill_after_step:3")
    verify_checkpoint(save_step(tmp_path, 1))


def test_state_that_weights_only_loading_would_reject_is_refused_at_save(tmp_path):
    with pytest.raises(CheckpointError, match=r"numpy.*torch\.from_numpy"):
        save_checkpoint(tmp_path / "c", {"rng": np.random.get_state()})
    assert list(tmp_path.iterdir()) == []


def test_assert_finite_names_the_first_bad_tensor():
    good = {"model": {"w": torch.ones(3)}, "steps": torch.tensor([1, 2]), "best": float("inf")}
    assert_finite(good)
    for bad_value in (float("nan"), float("inf"), -float("inf")):
        moments = {"exp_avg": torch.tensor([0.0, bad_value])}
        state = {"model": {"w": torch.ones(2)}, "optimizers": [{"state": {0: moments}}]}
        with pytest.raises(CheckpointError, match=r"state\['optimizers'\]\[0\]\['state'\]\[0\]\['exp_avg'\] holds 1"):
            assert_finite(state)


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = atomic_write_bytes(tmp_path / "f.bin", b"old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", full_disk)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert scratch_entries(tmp_path) == []


# -- discovery order -------------------------------------------------------------------------------
def test_list_and_find_order_by_step_and_skip_uncommitted(tmp_path):
    for step in (30, 10, 20):
        save_step(tmp_path, step)
    save_checkpoint(tmp_path / "no-step", tiny_state(0))  # no global_step: oldest
    partial = tmp_path / "step-000040"
    partial.mkdir()
    (partial / "state.pt").write_bytes(torch_bytes(tiny_state(40)))  # killed before its manifest
    forge_checkpoint(tmp_path / "step-000050.tmp-1-abcd", torch_bytes(tiny_state(50)), {"global_step": 50})
    (tmp_path / "notes").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["no-step", "step-000010", "step-000020", "step-000030"]
    assert find_resume_checkpoint(tmp_path).name == "step-000030"


def test_find_prefers_the_newest_committed_even_when_latest_lags(tmp_path):
    save_step(tmp_path, 1)
    save_step(tmp_path, 2, update_latest=False)  # as after a kill between commit and pointer update
    assert read_latest(tmp_path) == "step-000001"
    assert find_resume_checkpoint(tmp_path).name == "step-000002"


def test_latest_breaks_ties_between_equal_steps(tmp_path):
    save_checkpoint(tmp_path / "step-000005", tiny_state(5), {"global_step": 5})
    save_checkpoint(tmp_path / "last", tiny_state(5), {"global_step": 5})
    assert find_resume_checkpoint(tmp_path).name == "last"
    write_latest(tmp_path, "step-000005")
    assert find_resume_checkpoint(tmp_path).name == "step-000005"


def test_find_in_missing_or_empty_directory(tmp_path):
    assert find_resume_checkpoint(tmp_path / "absent") is None
    assert find_resume_checkpoint(tmp_path) is None
    assert list_checkpoints(tmp_path) == []


def test_dangling_latest_warns_and_scans(tmp_path):
    save_step(tmp_path, 1)
    write_latest(tmp_path, "step-000099")
    with pytest.warns(UserWarning, match="step-000099"):
        assert find_resume_checkpoint(tmp_path).name == "step-000001"


def test_clean_stale_removes_scratch_and_restores_a_checkpoint_moved_aside(tmp_path):
    save_checkpoint(tmp_path / "last", tiny_state(3), {"global_step": 3})
    save_step(tmp_path, 2)
    (tmp_path / "step-000004.tmp-1-aa").mkdir()
    (tmp_path / "latest.tmp-1-bb").write_bytes(b"step")
    mine = tmp_path / f"step-000005.tmp-{os.getpid()}-cc"  # a save running in this process
    mine.mkdir()
    shutil.copytree(tmp_path / "step-000002", tmp_path / "step-000002.old-1-dd")  # superseded copy
    os.replace(tmp_path / "last", tmp_path / "last.old-1-ee")  # a kill came before the new "last" landed

    assert find_resume_checkpoint(tmp_path).name == "last.old-1-ee"  # the only copy, so still found
    removed = clean_stale(tmp_path)
    assert sorted(p.name for p in removed) == ["latest.tmp-1-bb", "step-000002.old-1-dd", "step-000004.tmp-1-aa"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last", "latest", mine.name, "step-000002"])
    assert find_resume_checkpoint(tmp_path).name == "last"
    assert load_checkpoint(tmp_path / "last")["w"].tolist() == [3.0] * 4


# -- corruption (B9) -------------------------------------------------------------------------------
def flip_byte(file: Path, where: str) -> None:
    data = bytearray(file.read_bytes())
    index = {"start": 0, "middle": len(data) // 2, "end": len(data) - 1}[where]
    data[index] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["state.pt", "MANIFEST.json"])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_flipped_byte_is_detected_and_resume_falls_back(tmp_path, name, where):
    save_step(tmp_path, 1)
    newest = save_step(tmp_path, 2)
    expected_sha = read_manifest(newest)["files"]["state.pt"]["sha256"]
    flip_byte(newest / name, where)
    with pytest.raises(CheckpointCorruptError) as info:
        load_checkpoint(newest)
    message = str(info.value)
    assert str(newest / name) in message
    if name == "state.pt":
        actual_sha = hashlib.sha256((newest / name).read_bytes()).hexdigest()
        assert expected_sha in message and actual_sha in message
    with pytest.raises(CheckpointCorruptError):
        verify_checkpoint(newest)
    with pytest.warns(UserWarning, match="step-000002"):
        assert find_resume_checkpoint(tmp_path).name == "step-000001"


@pytest.mark.parametrize("keep", [0, 1, 100, 0.5, -1])
def test_truncated_state_is_detected_and_resume_falls_back(tmp_path, keep):
    save_step(tmp_path, 1)
    newest = save_step(tmp_path, 2)
    file = newest / "state.pt"
    data = file.read_bytes()
    length = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    file.write_bytes(data[:length])
    expected = rf"state\.pt is corrupt: SHA-256 expected .*size expected {len(data)}"
    with pytest.raises(CheckpointCorruptError, match=expected):
        load_checkpoint(newest)
    with pytest.warns(UserWarning, match="skipping corrupt checkpoint .*step-000002"):
        assert find_resume_checkpoint(tmp_path).name == "step-000001"


def test_missing_files_and_manifests(tmp_path):
    broken = save_step(tmp_path, 2)
    (broken / "state.pt").unlink()
    with pytest.raises(CheckpointCorruptError, match=r"listed in MANIFEST\.json but missing"):
        load_checkpoint(broken)
    partial = tmp_path / "partial"
    partial.mkdir()
    with pytest.raises(CheckpointCorruptError, match="never committed"):
        load_checkpoint(partial)
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "absent")


def test_manifest_cannot_point_outside_its_directory(tmp_path):
    path = forge_checkpoint(tmp_path / "c", torch_bytes(tiny_state(1)))
    manifest = json.loads((path / "MANIFEST.json").read_text())
    manifest["files"]["../outside"] = {"sha256": "0" * 64, "size": 0}
    manifest["manifest_sha256"] = ckpt._manifest_digest(manifest)
    (path / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorruptError, match=r"invalid file name '\.\./outside'"):
        load_checkpoint(path)


def test_newer_format_asks_for_an_upgrade(tmp_path):
    path = save_step(tmp_path, 1)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    manifest["format_version"] = 99
    (path / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"format 99.*upgrade trainforge"):
        read_manifest(path)


# -- full disk (B6) --------------------------------------------------------------------------------
def assert_disk_full_error(info, target: Path) -> None:
    message = str(info.value)
    assert "no space left on device" in message.lower() and str(target) in message
    assert info.value.errno == errno.ENOSPC


def test_enospc_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    previous = save_checkpoint(tmp_path / "last", tiny_state(1), {"global_step": 1})
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    monkeypatch.setenv("TRAINFORGE_FAULT", "enospc_in_save")
    for target in (tmp_path / "last", tmp_path / "step-000002"):
        with pytest.raises(CheckpointWriteError) as info:
            save_checkpoint(target, tiny_state(2), {"global_step": 2})
        assert_disk_full_error(info, target)
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "latest"]
    assert read_latest(tmp_path) == "last"
    monkeypatch.delenv("TRAINFORGE_FAULT")
    assert load_checkpoint(previous)["w"].tolist() == [1.0] * 4


def test_enospc_hidden_by_torch_is_still_reported(tmp_path, monkeypatch):
    """E4: torch says "unexpected pos" with no errno; free space tells the real cause."""

    def failing_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    monkeypatch.setattr(ckpt.os, "statvfs", lambda path: Full())
    with pytest.raises(CheckpointWriteError) as info:
        save_step(tmp_path, 1)
    assert_disk_full_error(info, tmp_path / "step-000001")
    assert "unexpected pos" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_puts_the_previous_checkpoint_back(tmp_path, monkeypatch):
    real_replace = os.replace

    def failing_replace(src, dst):
        if ".tmp-" in str(src):  # moving the old "last" aside works; renaming the new one in fails
            raise PermissionError(errno.EACCES, "Permission denied")
        real_replace(src, dst)

    save_checkpoint(tmp_path / "last", tiny_state(1), {"global_step": 1})
    monkeypatch.setattr(ckpt.os, "replace", failing_replace)
    with pytest.raises(CheckpointWriteError, match=r"could not save checkpoint .*last.*Permission denied") as info:
        save_checkpoint(tmp_path / "last", tiny_state(2))
    assert info.value.errno == errno.EACCES
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last")["w"].tolist() == [1.0] * 4
    assert scratch_entries(tmp_path) == []


def test_failed_latest_update_says_the_checkpoint_is_committed(tmp_path, monkeypatch):
    save_step(tmp_path, 1)

    def full_disk(directory, name):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "write_latest", full_disk)
    with pytest.raises(CheckpointWriteError, match=r"step-000002 is committed, but .*latest was not updated"):
        save_step(tmp_path, 2)
    assert read_latest(tmp_path) == "step-000001"
    assert find_resume_checkpoint(tmp_path).name == "step-000002"


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 1 MB tmpfs (works as root, as in CI); skipped only where mounting is not permitted."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                                 capture_output=True, text=True)  # fmt: skip
    except FileNotFoundError:
        pytest.skip("no mount command")
    if mounted.returncode != 0:
        pytest.skip(f"mount not permitted: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_real_full_disk_keeps_previous_checkpoint(tiny_tmpfs):
    previous = save_checkpoint(tiny_tmpfs / "last", tiny_state(1), {"global_step": 1})
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(tiny_tmpfs / "last", {"w": torch.zeros(512 * 1024)}, {"global_step": 2})  # 2 MB
    assert_disk_full_error(info, tiny_tmpfs / "last")
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["last", "latest"]
    assert load_checkpoint(previous)["w"].tolist() == [1.0] * 4


# -- pruning (B7) ----------------------------------------------------------------------------------
def test_failed_delete_is_logged_and_retryable(tmp_path, monkeypatch, caplog):
    old = save_step(tmp_path, 1)
    save_step(tmp_path, 2)

    def failing_rmtree(path, *args, **kwargs):
        raise PermissionError(errno.EBUSY, "Device or resource busy", str(path))

    monkeypatch.setattr(ckpt.shutil, "rmtree", failing_rmtree)
    with caplog.at_level(logging.WARNING, logger="trainforge.checkpoint"):
        assert remove_checkpoint(old) is False
    assert "step-000001" in caplog.text and "retry" in caplog.text
    verify_checkpoint(old)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000001", "step-000002"]
    monkeypatch.undo()
    assert remove_checkpoint(old) is True
    assert remove_checkpoint(old) is True  # already gone
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002"]


# -- malicious pickles (B14) -----------------------------------------------------------------------
class RunsShell:
    def __init__(self, sentinel: Path) -> None:
        self.command = f"touch {shlex.quote(str(sentinel))}"

    def __reduce__(self):
        return (os.system, (self.command,))


class LoadsFromBytes:
    """Composer's case: a nested full torch.load through torch.storage._load_from_bytes."""

    def __init__(self, sentinel: Path) -> None:
        self.inner = torch_bytes(RunsShell(sentinel))

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.inner,))


PAYLOADS = {
    "top_level": lambda s: RunsShell(s),
    "nested_in_optimizer_state": lambda s: {
        "model": {"w": torch.ones(2)},
        "optimizers": [{"state": {0: {"exp_avg": RunsShell(s)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
    },
    "in_rng_state": lambda s: {"rng": {"torch": torch.get_rng_state(), "python": RunsShell(s)}},
    "load_from_bytes": lambda s: {"model": LoadsFromBytes(s)},
}
FORCE_UNSAFE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@pytest.mark.parametrize("force_unsafe_env", [False, True], ids=["plain", "env_forces_unsafe"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_malicious_checkpoint_executes_nothing(tmp_path, monkeypatch, payload, force_unsafe_env):
    if force_unsafe_env:
        monkeypatch.setenv(FORCE_UNSAFE, "1")
    sentinel = tmp_path / "SENTINEL"
    path = forge_checkpoint(tmp_path / "step-000001", torch_bytes(PAYLOADS[payload](sentinel)))
    verify_checkpoint(path)  # the checksum matches: the unpickler is what must refuse
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path / "state.pt") in message and "nothing was executed" in message
    assert ("posix.system" in message) or ("_load_from_bytes" in message)
    assert "weights_only=False" not in message
    torch_bytes_file = tmp_path / "weights.pt"
    torch_bytes_file.write_bytes((path / "state.pt").read_bytes())
    with pytest.raises(ModelLoadError, match=r"weights\.pt"):
        load_state_file(torch_bytes_file)
    assert not sentinel.exists()


def test_trust_is_the_only_unsafe_path_and_it_warns(tmp_path, caplog):
    """Positive control: the payload is real, and trust=True (the explicit opt-in) does run it."""
    sentinel = tmp_path / "SENTINEL"
    path = forge_checkpoint(tmp_path / "c", torch_bytes({"x": RunsShell(sentinel)}))
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path)
    assert not sentinel.exists()
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="trust=True"):
        load_checkpoint(path, trust=True)
    assert sentinel.exists()
    assert "weights_only=False" in caplog.text


def test_trusted_load_still_verifies_integrity(tmp_path):
    path = save_step(tmp_path, 1)
    flip_byte(path / "state.pt", "middle")
    with pytest.raises(CheckpointCorruptError):
        load_checkpoint(path, trust=True)


def test_benign_checkpoint_loads_with_env_forcing_unsafe(tmp_path, monkeypatch):
    monkeypatch.setenv(FORCE_UNSAFE, "1")
    assert load_checkpoint(save_step(tmp_path, 1))["w"].tolist() == [1.0] * 4


# -- hostile archives (B18) ------------------------------------------------------------------------
def rebuild_archive(data: bytes, replace: dict[str, bytes] | None = None, compress: str | None = None) -> bytes:
    """Rewrite a torch.save zip, replacing member contents and/or DEFLATE-compressing one member."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            suffix = info.filename.partition("/")[2]
            content = (replace or {}).get(suffix, source.read(info.filename))
            method = zipfile.ZIP_DEFLATED if suffix == compress else zipfile.ZIP_STORED
            archive.writestr(info.filename, content, compress_type=method)
    return out.getvalue()


@pytest.fixture
def no_torch_load(monkeypatch):
    """The pre-scan must refuse before torch.load runs (and allocates)."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was reached")

    monkeypatch.setattr(ckpt.torch, "load", refuse)


def zip_bomb() -> bytes:
    """E11 scaled down: a 2x2 tensor whose record is 16 MB of DEFLATE-compressed zeros (about 16 KB)."""
    data = torch_bytes({"w": torch.zeros(2, 2)})
    return rebuild_archive(data, {"data/0": bytes(16 << 20)}, compress="data/0")


def huge_declared_storage() -> bytes:
    """The pickle declares a 1 GiB storage for a 16-byte record."""
    data = torch_bytes({"w": torch.arange(4.0)})
    pickle_bytes = zipfile.ZipFile(io.BytesIO(data)).read("archive/data.pkl")
    patched = pickle_bytes.replace(b"X\x03\x00\x00\x00cpuq\x06K\x04t", b"X\x03\x00\x00\x00cpuq\x06J\x00\x00\x00\x10t")
    assert patched != pickle_bytes
    return rebuild_archive(data, {"data.pkl": patched})


def lying_member_size() -> bytes:
    """A stored member whose central-directory entry declares 1 GiB."""
    data = bytearray(torch_bytes({"w": torch.arange(4.0)}))
    entry = data.index(b"PK\x01\x02")  # the first central-directory entry
    data[entry + 24 : entry + 28] = (1 << 30).to_bytes(4, "little")  # its uncompressed size
    return bytes(data)


HOSTILE = {
    "compressed_zip_bomb": (zip_bomb, "compressed"),
    "storage_larger_than_file": (huge_declared_storage, "declares 1073741824 bytes"),
    "member_size_beyond_file": (lying_member_size, "declares 1073741824 bytes"),
    "garbage": (lambda: b"\x80\x02not a zip at all" * 10, "not a readable torch.save zip"),
    "empty": (lambda: b"", "not a readable torch.save zip"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_before_torch_load(tmp_path, no_torch_load, case):
    build, reason = HOSTILE[case]
    data = build()
    path = forge_checkpoint(tmp_path / "c", data)
    with pytest.raises(CheckpointCorruptError, match=reason) as info:
        load_checkpoint(path)
    assert str(path / "state.pt") in str(info.value)
    file = tmp_path / "weights.pt"
    file.write_bytes(data)
    with pytest.raises(ModelLoadError, match=reason):
        load_state_file(file)


def test_legacy_format_is_refused(tmp_path):
    file = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, file, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelLoadError, match="legacy"):
        load_state_file(file)


def test_load_state_file_errors_name_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match=r"absent\.pt"):
        load_state_file(tmp_path / "absent.pt")
    file = tmp_path / "np.pt"
    torch.save({"a": np.zeros(2)}, file)
    with pytest.raises(ModelLoadError, match=r"np\.pt.*numpy"):
        load_state_file(file)


def test_scan_reads_storages_of_real_checkpoints():
    model, optimizer = tiny_training()
    train_step(model, optimizer, 0)
    state = {**realistic_state(model, optimizer), "half": torch.ones(3, dtype=torch.float16),
             "f8": torch.zeros(5, dtype=torch.float8_e4m3fn), "view": torch.arange(10)[2:5]}  # fmt: skip
    data = torch_bytes(state)
    pickle_bytes = zipfile.ZipFile(io.BytesIO(data)).read("archive/data.pkl")
    declared = dict(ckpt._declared_storages(pickle_bytes))
    sizes = {i.filename.rpartition("/")[2]: i.file_size for i in zipfile.ZipFile(io.BytesIO(data)).infolist()}
    assert declared and all(declared[key] == sizes[key] for key in declared)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.floats(0, 1)))  # fmt: skip
def test_fuzzed_weight_files_only_raise_model_load_error(tmp_path, edits, cut):
    data = bytearray(torch_bytes({"w": torch.arange(6.0).reshape(2, 3), "n": 3, "s": "x"}))
    for position, value in edits:
        data[int(position * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    file = tmp_path / "fuzz.pt"
    file.write_bytes(bytes(data))
    try:
        load_state_file(file)
    except ModelLoadError as exc:
        assert "fuzz.pt" in str(exc)
