"""Reliability battery, real processes (RELIABILITY.md B1, B2, B3, B26, B27): kill training at exact
points with SIGKILL or SIGTERM, resume, and require the final state to be bit-identical to an
uninterrupted run, with the same per-step losses and data order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "train_resumable.py"
STEPS_PER_EPOCH = 10  # 320 samples / batch 32; 3 epochs = 30 steps; checkpoints every 5 steps


def run(run_dir: Path, fault: str | None = None, workers: int = 0, seed: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop("TRAINFORGE_FAULT", None)
    if fault:
        env["TRAINFORGE_FAULT"] = fault
    command = [sys.executable, str(SCRIPT), str(run_dir), "--num-workers", str(workers), "--seed", str(seed)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def final(run_dir: Path) -> dict:
    return json.loads((run_dir / "final.json").read_text())


def step_log(run_dir: Path) -> dict[int, dict]:
    """Per-step records; a step replayed after a resume must repeat exactly what was logged before."""
    records: dict[int, dict] = {}
    for line in (run_dir / "steps.jsonl").read_text().splitlines():
        record = json.loads(line)
        previous = records.setdefault(record["step"], record)
        assert previous == record, f"step {record['step']} replayed differently after resume"
    return records


def killed_then_resumed(run_dir: Path, faults: list[str], workers: int = 0) -> dict:
    for fault in faults:
        result = run(run_dir, fault, workers)
        expected = -signal.SIGKILL if fault.startswith("kill") else 143
        assert result.returncode == expected, (fault, result.returncode, result.stderr[-2000:])
        assert not (run_dir / "final.json").exists()
    result = run(run_dir, None, workers)
    assert result.returncode == 0, result.stderr[-3000:]
    return final(run_dir)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    base = tmp_path_factory.mktemp("reference")
    jobs = {"w0": (base / "w0", 0, 0), "w2": (base / "w2", 2, 0), "seed1": (base / "seed1", 0, 1),
            "w0_again": (base / "w0_again", 0, 0)}
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(jobs, pool.map(lambda j: run(j[0], None, j[1], j[2]), jobs.values())))
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr[-3000:])
    return {name: path for name, (path, _, _) in jobs.items()}


def test_b26_same_seed_identical_other_seed_different_workers_irrelevant(references):
    w0, again, w2, seed1 = (final(references[k]) for k in ("w0", "w0_again", "w2", "seed1"))
    assert w0["hash"] == again["hash"] and step_log(references["w0"]) == step_log(references["w0_again"])
    assert w0["hash"] == w2["hash"], "num_workers 0 vs 2 changed the result"
    assert w0["hash"] != seed1["hash"], "the seed does nothing"
    assert w0["step"] == 30


# before the first checkpoint, right after one, mid-epoch, last batch of an epoch, first batch of the
# next, a checkpoint that is also an epoch end, late in the run, and the final step
KILL_STEPS = [3, 5, 7, 10, 11, 20, 24, 30]


@pytest.mark.parametrize("workers,steps", [(0, KILL_STEPS), (2, [4, 10, 21])])
def test_b1_kill_anywhere_resume_is_bitwise_equal(tmp_path, references, workers, steps):
    reference = references["w0"]
    expected_hash = final(reference)["hash"]
    expected_log = step_log(reference)

    def one(step: int) -> tuple[int, dict]:
        run_dir = tmp_path / f"kill{step}"
        return step, killed_then_resumed(run_dir, [f"kill_after_step:{step}"], workers)

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(one, steps))
    for step, result in outcomes:
        assert result["hash"] == expected_hash, f"kill after step {step}: final state differs"
        assert step_log(tmp_path / f"kill{step}") == expected_log, f"kill after step {step}: losses differ"


def test_b2_repeated_kills_within_one_epoch(tmp_path, references):
    run_dir = tmp_path / "multi"
    result = killed_then_resumed(run_dir, ["kill_after_step:12", "kill_after_step:14", "kill_after_step:17"])
    assert result["hash"] == final(references["w0"])["hash"]
    assert step_log(run_dir) == step_log(references["w0"])  # same samples, same order, same losses


def test_b3_epoch_boundary_keeps_data_order_and_each_sample_once_per_epoch(tmp_path, references):
    run_dir = tmp_path / "boundary"
    result = killed_then_resumed(run_dir, ["kill_after_epoch:1"])
    assert result["hash"] == final(references["w0"])["hash"]
    log = step_log(run_dir)
    epochs: dict[int, list[int]] = {}
    for record in log.values():
        epochs.setdefault(record["epoch"], []).extend(record["indices"])
    assert set(epochs) == {0, 1, 2}
    for epoch, indices in epochs.items():
        assert Counter(indices) == Counter(range(320)), f"epoch {epoch}: a sample is missing or repeated"
    assert epochs[1] != epochs[0], "epoch 1 replayed epoch 0's permutation"


def test_b27_sigterm_checkpoints_exits_143_and_resumes_bitwise(tmp_path, references):
    run_dir = tmp_path / "term"
    stopped = run(run_dir, "sigterm_after_step:13")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    # the signal lands in step 13's last hook; the loop reads the stop flag right after it
    assert "SIGTERM: stopped after step 13" in stopped.stdout
    manifest = json.loads((run_dir / "checkpoints" / "last" / "MANIFEST.json").read_text())
    assert manifest["metadata"]["global_step"] == 13  # a fresh checkpoint, not the one of step 10
    result = killed_then_resumed(run_dir, [])
    assert result["hash"] == final(references["w0"])["hash"]


def test_ctrl_c_to_the_process_group_with_workers_checkpoints_exits_130_and_resumes_bitwise(tmp_path, references):
    """Ctrl-C in a terminal sends SIGINT to the whole process group, DataLoader workers included: the
    run finishes its step, writes ``last``, prints the call that resumes and exits 130; resuming
    ends bit-identical to the uninterrupted run."""
    import time

    run_dir = tmp_path / "ctrl_c"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop("TRAINFORGE_FAULT", None)
    command = [sys.executable, str(SCRIPT), str(run_dir), "--num-workers", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        steps = run_dir / "steps.jsonl"
        if steps.exists() and len(steps.read_text().splitlines()) >= 12:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 130, err[-3000:]
    stopped_at = json.loads((run_dir / "checkpoints" / "last" / "MANIFEST.json").read_text())["metadata"]
    assert f"SIGINT: stopped after step {stopped_at['global_step']}; wrote {run_dir / 'checkpoints' / 'last'}" in out
    assert f"resume_from={str(run_dir)!r}" in out and 12 <= stopped_at["global_step"] < 30
    result = run(run_dir, None, workers=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert final(run_dir)["hash"] == final(references["w0"])["hash"]
    assert step_log(run_dir) == step_log(references["w0"])
