"""The Trainer's run folder: made (or a new timestamped one claimed), locked for a fit and checked once,
``config.yaml`` (what the run used) and ``env.json`` written into it, and the loggers that write
there opened and closed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .run_info import environment_info
from .trainer_hooks import _is_logger
from .trainer_utils import write_text_atomic

if TYPE_CHECKING:
    from .trainer import Trainer


def make_run_dir(trainer: Trainer) -> Path:
    """``output_dir`` (``~`` expanded), else a new ``runs/<experiment_name>/<time>`` claimed by mkdir."""
    from .run_folder import claim_new_folder, timestamp

    cfg = trainer.config
    if cfg.output_dir is not None:
        run_dir = Path(cfg.output_dir).expanduser()
    elif trainer.runtime.is_main:
        return claim_new_folder(Path("runs") / cfg.experiment_name, timestamp())
    else:
        run_dir = Path("runs") / cfg.experiment_name / timestamp()
    if trainer.runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def resolved_config(trainer: Trainer) -> dict[str, Any]:
    """The config with the settings that passed objects replaced rewritten to what they use."""
    from .run_info import used_config

    return used_config(trainer.config.to_dict(), **getattr(trainer, "_given_objects", {}))


def run_config_text(trainer: Trainer) -> str:
    """``config.yaml``: what this run used — objects passed in by class and settings (a comment
    block), then the config with their settings in place of the defaults they replaced."""
    from .run_info import objects_record, run_config_yaml

    given = getattr(trainer, "_given_objects", {})
    objects = objects_record(trainer.model, optimizer=given.get("optimizer"), criterion=given.get("criterion"),
                             scheduler=given.get("scheduler"), callbacks=trainer.callbacks)
    if trainer.class_names is not None:
        objects["class_names"] = {"names": list(trainer.class_names), "from": trainer._class_names_source}
    return run_config_yaml(resolved_config(trainer), objects)


def claim_run_folder(trainer: Trainer) -> None:
    """(rank 0) Lock the run folder and, once per Trainer, check it and write ``config.yaml``,
    ``env.json`` and ``run.json`` (see ``run_folder.prepare``). ``fit`` keeps the lock until it
    ends; outside it (evaluate, save, export) the lock is only checked and given back at once, and
    a folder holding a finished run is left as it is: nothing of it is rewritten."""
    from . import run_folder

    if not trainer.runtime.is_main or trainer.run_dir is None:
        return
    lock = getattr(trainer, "_run_lock", None)
    if lock is None or lock.run_dir != trainer.run_dir:
        run_folder.refuse_links(trainer.run_dir)  # before the lock file is written
        lock = trainer._run_lock = run_folder.RunLock(trainer.run_dir)
    fitting = getattr(trainer, "_fitting", False)
    lock.acquire()
    try:
        prepare_run_folder(trainer, fitting)
    except BaseException:
        release_run_folder(trainer)
        raise
    if not fitting:
        release_run_folder(trainer)


def prepare_run_folder(trainer: Trainer, fitting: bool) -> None:
    """Once per Trainer: check the folder (``run_folder.prepare``), write ``config.yaml`` and ``env.json``."""
    from . import run_folder

    if getattr(trainer, "_run_prepared", False):
        return
    resuming = getattr(trainer, "_asked_resume", False) or getattr(trainer, "_resume_pending", False)
    if not fitting and not resuming and run_folder.run_contents(trainer.run_dir):
        return
    trainer.run_id = run_folder.prepare(trainer.run_dir, resuming=resuming, overwrite=trainer.config.overwrite)
    write_text_atomic(trainer.run_dir / "config.yaml", run_config_text(trainer))
    write_text_atomic(trainer.run_dir / "env.json", json.dumps(environment_info(), indent=2))
    trainer._run_prepared = True
    if trainer.recipe is not None:  # prepared after setup (a fit after evaluate): loggers see the new files
        trainer.recipe.state.extra["run_id"] = trainer.run_id
        close_loggers(trainer)
        open_loggers(trainer)


def release_run_folder(trainer: Trainer) -> None:
    """Give back the run folder's lock, if this trainer holds one."""
    lock = getattr(trainer, "_run_lock", None)
    if lock is not None:
        lock.release()


def open_loggers(trainer: Trainer) -> None:
    """JSONL always (the report reads it), TensorBoard when enabled, and any ``Logger`` passed in callbacks."""
    from .loggers import JsonlLogger, TensorBoardLogger

    main = trainer.runtime.is_main  # only rank 0 writes files
    trainer.loggers = [JsonlLogger(trainer.run_dir / "metrics.jsonl", enabled=main)]  # always: the report reads it
    tensorboard_dir = trainer.config.tensorboard_dir(trainer.run_dir)  # <run>/tensorboard, or tensorboard.log_dir
    if tensorboard_dir is not None:
        trainer.loggers.append(TensorBoardLogger(tensorboard_dir, enabled=main))
    # a Logger passed in callbacks (MLflowLogger, VisdomLogger, your own) gets the same calls
    trainer.loggers += [c for c in trainer.callbacks if _is_logger(c) and not any(c is x for x in trainer.loggers)]


def close_loggers(trainer: Trainer) -> None:
    """Close (flush) every logger; a later fit opens them again."""
    for logger in trainer.loggers:
        logger.close()
    trainer.loggers = []
