"""A TrainAndTest run SIGKILLed mid-epoch and resumed ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "train_and_test_resumable.py"
ROOT = Path(__file__).resolve().parents[2]


def run(run_dir: Path, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(SCRIPT), str(run_dir)] + ([] if kill_at is None else ["--kill-at", str(kill_at)])
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_train_and_test_killed_mid_epoch_resumes_to_identical_weights(tmp_path):
    with ThreadPoolExecutor(1) as pool:  # the uninterrupted run beside the killed ones: wall time of the chain only
        pending = pool.submit(run, tmp_path / "reference")
        killed_and_resumed(tmp_path)
        reference = pending.result()
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = json.loads((tmp_path / "reference" / "final.json").read_text())
    got = json.loads((tmp_path / "killed" / "final.json").read_text())
    assert got["resumed"] == "last" and expected["resumed"] is None
    assert got["step"] == expected["step"] == 46
    assert got["hash"] == expected["hash"]
    assert got["test_loss"] == expected["test_loss"]
    best = tmp_path / "killed" / "checkpoints"
    assert sorted(p.name for p in best.iterdir() if p.is_dir() and not p.name.startswith(".")) == sorted(
        p.name for p in (tmp_path / "reference" / "checkpoints").iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def killed_and_resumed(tmp_path: Path) -> None:
    # 1437 samples / 64 = 23 steps per epoch; tests and checkpoints at steps 7, 14, 21, 23 (epoch end)...
    killed = run(tmp_path / "killed", kill_at=18)  # mid-epoch, 4 steps after the checkpoint of step 14
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "killed" / "final.json").exists()
    killed_again = run(tmp_path / "killed", kill_at=30)  # resumed, then killed again in the second epoch
    assert killed_again.returncode == -signal.SIGKILL, killed_again.stderr[-3000:]
    resumed = run(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
