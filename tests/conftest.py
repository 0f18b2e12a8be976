"""Shared fixtures: small real data (digits) and tiny models."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py, with --import-mode=importlib


@pytest.fixture(scope="session")
def load_example():
    """Import ``examples/<name>.py`` as a module (examples are scripts, not a package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def digits():
    from trainforge.data import load_digits_split

    return load_digits_split(seed=0)


class EventRecorder:
    """Records every event it sees, with the counters at that moment."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.events: list[tuple] = []

    def _rec(self, name, state):
        self.events.append((self.tag + name, state.epoch, state.global_step, state.epoch_step))

    def on_fit_start(self, s):
        self._rec("fit_start", s)
    def on_epoch_start(self, s):
        self._rec("epoch_start", s)
    def on_batch_start(self, s):
        self._rec("batch_start", s)
    def on_batch_end(self, s):
        self._rec("batch_end", s)
    def on_epoch_end(self, s):
        self._rec("epoch_end", s)
    def on_eval_start(self, s):
        self._rec("eval_start", s)
    def on_eval_end(self, s):
        self._rec("eval_end", s)
    def on_fit_end(self, s):
        self._rec("fit_end", s)
    def on_exception(self, s):
        self._rec("exception", s)


@pytest.fixture
def recorder():
    return EventRecorder
