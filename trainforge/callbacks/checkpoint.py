"""``ModelCheckpoint``: when to save and what to keep (last, top-k by a monitored metric, every N
epochs or steps). The writing itself — atomic, verified — lives in ``trainforge.checkpoint``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..engine import State
from ..errors import ConfigError


def _is_main() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # after rank 0's save, reached by every rank


class ModelCheckpoint:
    """Save checkpoints of the whole training state into ``dirpath``.

    - ``every_n_epochs`` / ``every_n_steps``: when to consider saving (``every_n_steps`` also saves
      mid-epoch; resuming from such a checkpoint continues at the next batch).
    - ``save_top_k``: keep the best ``k`` by ``monitor`` (``mode`` min or max); with no monitor, the
      ``k`` most recent. ``-1`` keeps all, ``0`` keeps none but ``last``.
    - ``save_last``: also keep ``dirpath/last``, the newest checkpoint (the resume point): a folder of
      hard links to the top-k folder just written, not a second copy of its bytes; pruning that folder
      later leaves ``last`` intact.
    - ``filename``: a ``str.format`` template with ``epoch``, ``step`` and the monitored value as
      ``score``; once formatted it must be one plain name (no ``/``, ``..``; ``ConfigError`` otherwise).
    - ``dirpath`` may be left out when the callback is given to a ``Trainer``: it saves into the run
      folder's ``checkpoints/`` (and replaces the checkpoint policy of ``config.checkpoint``).
      ``filepath`` is Kornia's name for it: ``ModelCheckpoint(filepath="./outputs", monitor="top5")``.
    - ``best_model_score`` is the monitored value as logged (not negated in ``mode="max"``).

    Only rank 0 writes; every rank meets at a barrier after the save. A prune happens only after the
    new checkpoint is committed. Fires the ``checkpoint`` event with ``state.extra["checkpoint_path"]``.
    The saved state is ``state.extra["save_state"]()`` when the owner provides it (the Trainer does:
    model, optimizer, schedule, scaler, EMA, callbacks, RNG, data fingerprint), else the recipe's own
    ``state_dict()``.

    >>> import tempfile, torch
    >>> from trainforge.engine import Recipe
    >>> r = Recipe(lambda b: None, [0, 1])
    >>> r.register("model", torch.nn.Linear(2, 2))
    >>> folder = tempfile.mkdtemp()
    >>> ckpt = ModelCheckpoint(folder, save_top_k=2)
    >>> r.callbacks.add(ckpt)
    >>> _ = r.run(3)
    >>> sorted(p.name for p in Path(folder).iterdir() if p.is_dir())
    ['epoch002-step000004', 'epoch003-step000006', 'last']
    """

    group = "epilogue"  # save after every other callback's epoch-end work, so their state is included

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str = "epoch{epoch:03d}-step{step:06d}",
        monitor: str | None = None,
        mode: str = "min",
        save_top_k: int = 1,
        save_last: bool = True,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        *,
        filepath: str | Path | None = None,
    ) -> None:
        if filepath is not None and dirpath is not None and Path(filepath) != Path(dirpath):
            raise ConfigError(
                f"ModelCheckpoint got dirpath={str(dirpath)!r} and filepath={str(filepath)!r}; filepath is "
                "Kornia's name for dirpath (the folder to save into): pass one of them"
            )
        dirpath = dirpath if dirpath is not None else filepath
        _check_filename(filename)
        if mode not in ("min", "max"):
            raise ConfigError(f"ModelCheckpoint mode={mode!r}; expected 'min' or 'max'")
        if save_top_k < -1:
            raise ConfigError(f"ModelCheckpoint save_top_k must be >= -1, got {save_top_k}")
        for key, value in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps)):
            if value is not None and value < 1:
                raise ConfigError(f"ModelCheckpoint {key} must be >= 1 or None, got {value}")
        self.dirpath = Path(dirpath).expanduser() if dirpath is not None else None
        self.filename = filename
        self.monitor = monitor
        self.mode = mode
        self.save_top_k = save_top_k
        self.save_last = save_last
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.kept: list[tuple[float, str]] = []  # (score, folder name), best first
        self.last_saved_step = -1
        self._cleaned = False

    # -- when ----------------------------------------------------------------------------------------
    def on_fit_start(self, state: State) -> None:
        if self.dirpath is None:
            raise ConfigError(
                "ModelCheckpoint has no dirpath: pass ModelCheckpoint(dirpath=...) (Kornia: filepath=...), or "
                "give it to a Trainer, which saves into the run folder's checkpoints/"
            )
        if not self._cleaned and _is_main():
            from ..checkpoint import clean_stale

            self.dirpath.mkdir(parents=True, exist_ok=True)
            clean_stale(self.dirpath)  # leftovers of a run killed mid-save
            self._cleaned = True

    def on_batch_end(self, state: State) -> None:
        if self.every_n_steps is not None and state.global_step % self.every_n_steps == 0:
            self.save(state)

    def on_epoch_end(self, state: State) -> None:
        if self.every_n_epochs is not None and (state.epoch + 1) % self.every_n_epochs == 0:
            self.save(state)

    # -- what ------------------------------------------------------------------------------------------
    @property
    def best_model_path(self) -> Path | None:
        return self.dirpath / self.kept[0][1] if self.kept and self.monitor else None

    @property
    def best_model_score(self) -> float | None:
        if not (self.kept and self.monitor):
            return None
        score = self.kept[0][0]
        return -score if self.mode == "max" else score  # kept negated in max mode so that lower is better

    def _score(self, state: State) -> float:
        if self.monitor is None:
            return -float(state.global_step)  # most recent first
        if self.monitor not in state.metrics:
            raise ConfigError(
                f"ModelCheckpoint monitors {self.monitor!r}, which was never logged; logged metrics: "
                f"{', '.join(sorted(state.metrics)) or 'none'}. Fix the monitor name (e.g. 'valid/loss')."
            )
        value = float(state.metrics[self.monitor])
        if math.isnan(value):
            return math.inf
        return value if self.mode == "min" else -value

    def save(self, state: State) -> Path | None:
        """Save now (if this step was not saved yet), keep the best ``save_top_k``, update ``last``."""
        if state.global_step == self.last_saved_step:
            return None
        self.last_saved_step = state.global_step
        score = self._score(state)
        keep = self.save_top_k == -1 or len(self.kept) < self.save_top_k or (
            self.save_top_k > 0 and score < self.kept[-1][0]
        )
        path = None
        if _is_main():
            path = self._write(state, score, keep)
        _barrier()
        if path is not None:
            state.extra["checkpoint_path"] = path
            owner = state.owner
            if owner is not None:
                owner.callbacks.fire("checkpoint", state)
        return path

    def write_last(self, state: State) -> Path | None:
        """Write ``last`` now, whatever the schedule (used on preemption); top-k is not touched."""
        path = None
        if _is_main():
            from ..checkpoint import save_checkpoint, write_latest

            path = save_checkpoint(self.dirpath / "last", self._payload(state), metadata=self._metadata(state, None))
            write_latest(self.dirpath, "last")
        _barrier()
        return path

    def _payload(self, state: State) -> dict[str, Any]:
        save_state = state.extra.get("save_state")
        return save_state() if save_state is not None else state.owner.state_dict()

    def _metadata(self, state: State, score: float | None) -> dict[str, Any]:
        value = None if self.monitor is None or score is None else (-score if self.mode == "max" else score)
        metadata = {"global_step": state.global_step, "epoch": state.progress()["epoch"], "monitor": self.monitor,
                    "score": value}
        run_id = state.extra.get("run_id")
        if run_id is not None:
            metadata["run_id"] = run_id  # resume picks only this run's checkpoints
        return metadata

    def _write(self, state: State, score: float, keep: bool) -> Path | None:
        from ..checkpoint import link_checkpoint, remove_checkpoint, save_checkpoint, write_latest

        if not keep and not self.save_last:
            return None
        name = _check_filename(self.filename, epoch=state.progress()["epoch"], step=state.global_step, score=-score)
        names = ([name] if keep else []) + (["last"] if self.save_last else [])
        # the bookkeeping is part of the saved state, so update it before taking the state
        dropped: list[str] = []
        previous = list(self.kept)
        if keep:
            self.kept.append((score, name))
            self.kept.sort(key=lambda item: item[0])
            if self.save_top_k != -1:
                dropped = [n for _, n in self.kept[self.save_top_k :]]
                self.kept = self.kept[: self.save_top_k]
        payload, metadata = self._payload(state), self._metadata(state, score)
        try:
            save_checkpoint(self.dirpath / names[0], payload, metadata=metadata, update_latest=False)
            if len(names) > 1:  # `last` names the same bytes: hard links, not a second copy
                link_checkpoint(self.dirpath / names[0], self.dirpath / names[1], update_latest=False)
        except BaseException:
            self.kept = previous  # the failed save is not counted; older checkpoints stay listed
            raise
        write_latest(self.dirpath, names[-1])
        for folder in dropped:  # only after the new checkpoint is committed
            remove_checkpoint(self.dirpath / folder)
        return self.dirpath / names[0]

    def state_dict(self) -> dict[str, Any]:
        return {"kept": [[score, name] for score, name in self.kept], "last_saved_step": self.last_saved_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept = [(float(score), str(name)) for score, name in state["kept"]]
        self.last_saved_step = int(state["last_saved_step"])



def _check_filename(template: str, epoch: int = 0, step: int = 0, score: float = 0.0) -> str:
    from ..run_folder import check_name_template

    return check_name_template("ModelCheckpoint filename (checkpoint.filename)", template, epoch=epoch, step=step,
                               score=score)
