"""Which checkpoint ``trainforge export RUN_DIR`` exports: the best monitored score, else the newest."""

from __future__ import annotations

import torch

from trainforge.checkpoint import save_checkpoint
from trainforge.export.run import best_checkpoint


def _save(folder, name: str, step: int, monitor: str | None, score: float | None) -> None:
    save_checkpoint(folder / name, {"w": torch.ones(1)}, {"global_step": step, "monitor": monitor, "score": score})


def test_the_best_score_wins_in_the_monitors_direction(tmp_path):
    for step, score in ((1, 0.5), (2, 0.9), (3, 0.7)):
        _save(tmp_path, f"epoch{step}", step, "valid/accuracy", score)
    assert best_checkpoint(tmp_path, "max").name == "epoch2"
    assert best_checkpoint(tmp_path, "min").name == "epoch1"


def test_without_one_monitor_the_newest_checkpoint_is_exported(tmp_path):
    _save(tmp_path, "a", 1, "valid/loss", 0.1)
    _save(tmp_path, "b", 2, None, None)
    assert best_checkpoint(tmp_path, "min").name == "b"
    _save(tmp_path, "c", 3, "valid/loss", float("nan"))
    assert best_checkpoint(tmp_path, "min").name == "c"
