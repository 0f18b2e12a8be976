"""B4/B5/B8: a process SIGKILLed at each point of a checkpoint save leaves a directory from which
``find_resume_checkpoint`` picks the last committed checkpoint, which loads and verifies, and from which
``clean_stale`` removes every scratch entry. Each kill point is a real process, forked by one driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trainforge.checkpoint import (
    clean_stale,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_latest,
    verify_checkpoint,
)

DRIVER = Path(__file__).resolve().parent / "scripts" / "checkpoint_kill_child.py"

# kill point -> (first name, second name, what resume must pick, what `latest` says after the kill)
CASES = {
    "after_state": ("step-000001", "step-000002", "step-000001", "step-000001"),
    "before_manifest": ("step-000001", "step-000002", "step-000001", "step-000001"),
    "before_rename": ("step-000001", "step-000002", "step-000001", "step-000001"),
    "after_aside": ("last", "last", "last", "last"),
    # committed under its final name before the pointer moved: it is the newest committed checkpoint
    "before_latest": ("step-000001", "step-000002", "step-000002", "step-000001"),
}


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    """Run the driver once; it forks one process per kill point. Returns {point: (directory, rc)}."""
    root = tmp_path_factory.mktemp("kills")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRAINFORGE_FAULT", None)
    cases = [f"{point}:{first}:{second}" for point, (first, second, _, _) in CASES.items()]
    done = subprocess.run([sys.executable, str(DRIVER), str(root), *cases], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    return {point: (root / point, codes[point]) for point in CASES}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL (POSIX)")
@pytest.mark.parametrize("point", sorted(CASES))
def test_kill_during_save_resumes_from_last_committed(killed_runs, point):
    directory, returncode = killed_runs[point]
    _, second, expected, latest = CASES[point]
    assert returncode == -signal.SIGKILL, f"the save survived kill point {point} (exit status {returncode})"
    assert read_latest(directory) == latest  # never dangling, never a partial directory

    chosen = find_resume_checkpoint(directory)
    if point == "after_aside":  # before clean_stale the moved-aside copy is the only one
        assert chosen.name.startswith("last.old-")
    else:
        assert chosen.name == expected
    verify_checkpoint(chosen)
    step = int(expected[-1]) if expected != "last" else 1
    assert load_checkpoint(chosen)["w"].tolist() == [float(step)] * 8
    assert all(".tmp-" not in p.name for p in list_checkpoints(directory))

    scratch = sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name)
    removed = sorted(p.name for p in clean_stale(directory))
    if point == "before_latest":
        assert scratch == [] and removed == []
    else:
        assert removed == [name for name in scratch if ".tmp-" in name] and removed, scratch
    assert not [p for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert find_resume_checkpoint(directory).name == expected
    assert load_checkpoint(directory / expected)["progress"]["global_step"] == step
    if point == "before_rename":  # the killed save had completed its manifest, and still was not chosen
        assert any(name.startswith(f"{second}.tmp-") for name in scratch)
