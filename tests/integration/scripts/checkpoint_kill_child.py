"""Driver for test_checkpoint_kill.py. For each kill point, a forked process (torch is imported once,
before forking, to keep the test fast) commits ``FIRST`` at step 1, then saves ``SECOND`` at step 2
with ``TRAINFORGE_FAULT=kill_in_save:<point>``. Prints ``{point: how the process ended}`` as JSON:
``-9`` when SIGKILLed, ``3`` when it survived the save.

Usage: python checkpoint_kill_child.py ROOT POINT:FIRST:SECOND [POINT:FIRST:SECOND ...]
(each point runs in ROOT/POINT)
"""

from __future__ import annotations

import json
import os
import sys

import torch

from trainforge.checkpoint import save_checkpoint


def state(step: int) -> dict:
    return {"w": torch.full((8,), float(step)), "progress": {"global_step": step}}


def save_twice(directory: str, first: str, second: str, point: str) -> None:
    os.environ.pop("TRAINFORGE_FAULT", None)
    save_checkpoint(os.path.join(directory, first), state(1), {"global_step": 1})
    os.environ["TRAINFORGE_FAULT"] = f"kill_in_save:{point}"  # read at each save
    save_checkpoint(os.path.join(directory, second), state(2), {"global_step": 2})


def run_forked(directory: str, first: str, second: str, point: str) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            save_twice(directory, first, second, point)
        finally:
            os._exit(3)  # reached only if the fault did not kill this process
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main(root: str, *cases: str) -> None:
    results = {}
    for case in cases:
        point, first, second = case.split(":")
        directory = os.path.join(root, point)
        os.makedirs(directory)
        results[point] = run_forked(directory, first, second, point)
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
