"""Multi-process training through torchrun with the gloo backend on CPU (2 processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "scripts" / "train_ddp.py"


def torchrun(run_dir: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    out.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", **env}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "--max-restarts=0", str(SCRIPT), str(run_dir), str(out)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def test_two_process_training_syncs_weights_and_metrics_and_writes_once(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    result = torchrun(run_dir, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    assert ranks[0]["steps"] == 2 * 4  # 256 samples / (2 ranks x 32) = 4 steps per epoch
    assert ranks[0]["weights"] == ranks[1]["weights"], "DDP replicas diverged"
    synced = [{k: v for k, v in r["metrics"].items() if not k.startswith("throughput/")} for r in ranks]
    assert synced[0] == synced[1], "metrics were not reduced across ranks"  # throughput is per process
    assert ranks[0]["eval"] == ranks[1]["eval"]
    # rank 0 alone prints and writes
    assert result.stdout.count("epoch 2/2 done") == 1
    assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "checkpoints" / "last" / "MANIFEST.json").is_file()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)), "a metrics line was written twice"


def test_sigterm_on_one_rank_stops_every_rank_at_the_same_step_with_one_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = torchrun(run_dir, tmp_path / "out", SIGTERM_RANK="1", SIGTERM_AFTER_STEP="2")
    output = result.stdout + result.stderr
    assert result.returncode != 0, "the preempted job must not look finished"
    # rank 1 alone got the signal after step 2; the ranks agree at the next logging step (5): both stop there
    assert result.stdout.count("SIGTERM: stopped after step 5") == 2, output[-4000:]
    manifest = json.loads((run_dir / "checkpoints" / "last" / "MANIFEST.json").read_text())
    assert manifest["metadata"]["global_step"] == 5
