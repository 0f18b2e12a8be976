"""Backward compatibility (RELIABILITY B13): every committed golden checkpoint under tests/golden/ still
loads and its run continues with exactly the recorded losses."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
VERSIONS = sorted(p for p in GOLDEN.glob("v*") if (p / "expected.json").is_file())


def _maker():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_is_at_least_one_golden_version():
    assert VERSIONS, "tests/golden/ holds no golden checkpoint"


@pytest.mark.parametrize("version", VERSIONS, ids=[p.name for p in VERSIONS])
def test_golden_checkpoint_resumes_with_the_recorded_losses(tmp_path, version):
    maker = _maker()
    expected = json.loads((version / "expected.json").read_text())
    log = maker.LossLog()
    trainer = maker.build(str(tmp_path), max_epochs=3, callbacks=[log])
    trainer.fit(resume_from=version / "checkpoint")
    assert trainer.global_step == 18
    got = {str(step): loss for step, loss in log.losses.items() if str(step) in expected["losses"]}
    assert got == expected["losses"]
    assert min(int(s) for s in log.losses) == expected["from_step"] + 1  # resumed, not restarted
