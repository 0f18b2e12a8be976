"""Resuming a run: which checkpoint to resume from, the fingerprint of the training data a checkpoint
records, and the compatibility check (data, model, stateful callbacks, precision, schedule, optimizer)
that names everything that differs before anything is restored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader, Dataset

from .callbacks.checkpoint import ModelCheckpoint
from .config_check import optimizer_mismatch
from .errors import ConfigError, ResumeMismatchError
from .run_info import dataset_fingerprint

if TYPE_CHECKING:
    from .trainer import Trainer

CHECKPOINT_FORMAT = 1


def find_checkpoint(path: Path) -> Path:
    """The checkpoint ``resume_from`` names: ``path`` itself when it is a checkpoint folder, else the
    newest intact checkpoint of a run folder written by that folder's run (or of a folder of
    checkpoints); its manifest is verified."""
    from .checkpoint import find_resume_checkpoint, read_manifest

    if not path.exists():
        raise ConfigError(f"resume_from={str(path)!r} does not exist")
    candidate = path
    if not (path / "MANIFEST.json").exists():
        from .run_folder import read_run_id

        search = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        run_id = read_run_id(path) if search != path else None  # a run folder: only its own run's
        candidate = find_resume_checkpoint(search, run_id=run_id)
        if candidate is None:
            raise ConfigError(f"resume_from={str(path)!r}: no intact checkpoint found in {search}")
    read_manifest(candidate)
    return candidate


def check_compatible(trainer: Trainer, state: dict[str, Any], strict: bool = True) -> None:
    """Raise ``ResumeMismatchError`` listing everything that differs from the saved run (a value of None
    on either side means unknown and is not compared)."""
    if state.get("format_version") != CHECKPOINT_FORMAT:
        raise ResumeMismatchError(
            f"checkpoint format {state.get('format_version')!r} is not supported (this is {CHECKPOINT_FORMAT})"
        )
    saved = state.get("data", {})
    problems = [
        f"{key} changed from {saved[key]!r} (saved run) to {value!r} (this run)"
        for key, value in data_fingerprint(trainer).items()
        if saved.get(key) is not None and value is not None and saved[key] != value
    ]
    recipe = state.get("recipe", {})
    if "model" in recipe.get("registered", {}):
        from .pretrained import compare_state_dicts

        diff = compare_state_dicts(trainer.model.state_dict(), recipe["registered"]["model"])
        if diff:
            lines = "".join(f"\n    {line}" for line in diff.describe().splitlines())
            problems.append(f"the model differs from the saved run's:{lines}")
    problems += callback_mismatches(trainer, recipe.get("callbacks", {}), state.get("config", {})) if strict else []
    problems += optimizer_mismatch(trainer.config, trainer._optimizer_cb.optimizer, state)
    if problems:
        raise ResumeMismatchError(
            "cannot resume:\n- " + "\n- ".join(problems) + "\nResume with the saved run's "
            "settings, or start a new run and take only the weights with config.load_checkpoint."
        )


def callback_mismatches(trainer: Trainer, saved: dict[str, Any], saved_config: dict[str, Any]) -> list[str]:
    """Stateful callbacks, GradScaler and schedule present in one run and not in the other."""
    keyed = trainer.recipe.callbacks._keyed()
    problems = []
    missing, unexpected = sorted(set(keyed) - set(saved)), sorted(set(saved) - set(keyed))
    if missing or unexpected:
        sides = ([f"this run has {missing} that the saved run had not"] if missing else []) + (
            [f"the saved run had {unexpected} that this run has not"] if unexpected else [])
        problems.append(
            f"stateful callbacks differ: {' and '.join(sides)} (EMA[0] comes from ema_decay, "
            "ModelCheckpoint/EarlyStopping from checkpoint/early_stopping)"
        )
    key = next((k for k, callback in keyed.items() if callback is trainer._optimizer_cb), None)
    optimizer_state = saved.get(key, {}) if key is not None else {}
    if key in saved and ("scaler" in optimizer_state) != (trainer.runtime.scaler is not None):
        before = saved_config.get("precision", "?")
        after = "no" if trainer.runtime.scaler is None else "with"
        problems.append(
            f"precision changed from {before!r} (saved run, {'with' if 'scaler' in optimizer_state else 'no'} "
            f"GradScaler) to {trainer.config.precision!r} (this run, {after}"
            f" GradScaler): the loss scale cannot be carried over; resume with precision={before!r}"
        )
    if key in saved and ("scheduler" in optimizer_state) != (trainer._optimizer_cb.scheduler is not None):
        problems.append(
            f"scheduler changed from {saved_config.get('scheduler', '?')!r} (saved run) to "
            f"{trainer.config.scheduler!r} (this run): one of them has no schedule state"
        )
    return problems


def auto_resume_checkpoint(trainer: Trainer) -> Path | None:
    """``resume_from="auto"``: the newest intact checkpoint of this run's folder written by its run."""
    from .checkpoint import find_resume_checkpoint
    from .run_folder import read_run_id

    output = trainer.config.output_dir
    run_dir = trainer.run_dir or (Path(output).expanduser() if output is not None else None)
    if run_dir is None:
        return None  # a new timestamped folder is empty
    folder = checkpoint_folder(trainer, run_dir)
    return find_resume_checkpoint(folder, run_id=read_run_id(run_dir)) if folder.is_dir() else None


def checkpoint_folder(trainer: Trainer, run_dir: Path) -> Path:
    """Where this trainer's checkpoints go: a user's ``ModelCheckpoint``'s folder, else ``checkpoints/``."""
    user = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    return user.dirpath if user is not None and user.dirpath is not None else run_dir / "checkpoints"


def data_fingerprint(trainer: Trainer) -> dict[str, Any]:
    """What a resumed run must share with the saved one: batch size, accumulation, world size, sample
    count, a content hash of the training data (hashed once per data set object), sampler seed, class names."""
    data = trainer.train_data
    source = data.dataset if isinstance(data, DataLoader) else data
    cached = getattr(trainer, "_dataset_hash_cache", None)
    if cached is None or cached[0] is not source:  # hashed once per data set object, not per checkpoint
        cached = trainer._dataset_hash_cache = (source, dataset_fingerprint(source))
    return {
        "batch_size": trainer.config.batch_size,
        "accumulate_grad_batches": trainer.config.accumulate_grad_batches,
        "world_size": trainer.runtime.world_size,
        "num_samples": len(source) if isinstance(source, Dataset) and hasattr(source, "__len__") else None,
        "dataset_hash": cached[1],
        "sampler_seed": trainer.config.seed,  # epoch e is shuffled with seed + e
        "class_names": trainer.class_names,
    }
