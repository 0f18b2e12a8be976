"""The Hydra side of ``trainforge train|test|predict``: compose one YAML file with command-line overrides
(Hydra's parser), put each run in its own folder, run sweeps (``--multirun``: grids and the Optuna sweeper)
and summarise them. The only module that imports Hydra or OmegaConf."""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, TrainforgeError

COMMANDS = ("train", "test", "predict")
#: Hydra settings trainforge always sets (a command-line override of the same key wins).
_HYDRA_DEFAULTS = ("hydra.job.chdir=False", "hydra.output_subdir=.hydra")


@dataclass
class ConfigSource:
    """Where the experiment's primary YAML file is: a folder and a name without ``.yaml``."""

    directory: Path
    name: str

    @property
    def path(self) -> Path:
        for suffix in (".yaml", ".yml"):
            candidate = self.directory / f"{self.name}{suffix}"
            if candidate.is_file():
                return candidate
        return self.directory / f"{self.name}.yaml"


@dataclass
class RunResult:
    """One run of a command: its folder, final metrics, the objective a sweep optimises, any error."""

    run_dir: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    objective: float | None = None
    overrides: list[str] = field(default_factory=list)
    error: str | None = None


def locate(config: str | None, config_path: str | None, config_name: str | None) -> ConfigSource:
    """The primary config from ``--config FILE`` or ``-cp DIR -cn NAME`` (relative to the current folder)."""
    if config is not None:
        if config_path or config_name:
            raise ConfigError("give --config FILE or -cp DIR -cn NAME, not both")
        file = Path(config)
        if not file.is_file():
            raise ConfigError(f"config file {file} does not exist")
        return ConfigSource(file.resolve().parent, file.stem)
    if not config_name:
        raise ConfigError("which experiment? give --config FILE.yaml, or -cp DIR -cn NAME (e.g. -cp configs "
                          "-cn classification_digits)")
    name = config_name[: -len(".yaml")] if config_name.endswith(".yaml") else config_name
    directory = Path(config_path or ".").resolve()
    source = ConfigSource(directory, name)
    if not source.path.is_file():
        found = sorted(p.stem for p in directory.glob("*.y*ml")) if directory.is_dir() else []
        import difflib

        close = difflib.get_close_matches(name, found, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (f" (configs there: {', '.join(found)})" if found else "")
        raise ConfigError(f"no config {name!r} in {directory}{hint}")
    return source


def check_file(source: ConfigSource) -> None:
    """Read the file with the safe loader first: duplicate keys, alias bombs and Python tags fail here,
    naming the file, before Hydra sees it."""
    try:
        from ..yaml_io import load_yaml
    except ImportError:  # before the shared loader exists: PyYAML's safe loader refuses Python tags too
        import yaml

        try:
            yaml.safe_load(source.path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ConfigError(f"{source.path}: not valid YAML: {error}") from None
        return
    load_yaml(source.path)


def compose(source: ConfigSource, overrides: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(experiment, hydra)``: the file composed with ``overrides`` by Hydra, interpolations resolved,
    as plain containers."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    check_file(source)
    try:
        with initialize_config_dir(config_dir=str(source.directory), version_base=None, job_name=source.name):
            composed = hydra_compose(config_name=source.name, overrides=[*_HYDRA_DEFAULTS, *overrides],
                                     return_hydra_config=True)
            run_dir = composed.hydra.run.dir if _given(overrides, "hydra.run.dir") else None
            raw = OmegaConf.to_container(composed, resolve=False)
            raw.pop("hydra", None)  # Hydra's node holds job-time values (hydra.job.num) a single run lacks
            experiment = resolve(raw, source)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"{source.path}: {_hydra_message(error)}") from None
    return experiment, {"run_dir": run_dir}


def resolve(raw: dict[str, Any], source: ConfigSource) -> dict[str, Any]:
    """Interpolations resolved; a flat Kornia config becomes its example's experiment first."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .kornia import is_kornia_config, kornia_experiment, strip_flat_keys

    try:
        if not is_kornia_config(raw):
            return OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
        merged, notes = kornia_experiment(raw, source.directory.name)
        for note in notes:
            print(f"trainforge: note: {note}", file=sys.stderr)
        return strip_flat_keys(OmegaConf.to_container(OmegaConf.create(merged), resolve=True))
    except OmegaConfBaseException as error:
        raise ConfigError(f"{source.path}: {_hydra_message(error)}") from None


def _hydra_message(error: Exception) -> str:
    import re

    text = str(error).strip()
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += f" ({str(cause).strip()})"
    text = " ".join(text.split())
    missing = re.search(r"Environment variable '([^']+)' not found", text)
    key = re.search(r"full_key: (\S+)", text)
    if missing:
        where = f" or override {key.group(1)}=..." if key else ""
        text += f". Fix: set the environment variable ({missing.group(1)}=...){where}"
    return text


def _given(overrides: Sequence[str], key: str) -> bool:
    return any(o.lstrip("+~").split("=", 1)[0] == key for o in overrides)


def new_run_dir(experiment_name: str, root: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<experiment_name>/<timestamp>``, never an existing folder (a suffix keeps both)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / experiment_name / stamp
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = base.with_name(f"{stamp}-{n}"), n + 1
    return candidate


def experiment_name(values: dict[str, Any], source: ConfigSource) -> str:
    logger = values.get("logger")
    if isinstance(logger, dict) and isinstance(logger.get("experiment_name"), str):
        return logger["experiment_name"]
    return source.name


def is_experiment_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a YAML mapping with an experiment section (``task`` or ``data``)."""
    try:
        import yaml

        head = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except Exception:  # unreadable or not YAML: the TrainingConfig reader reports it with the file name
        return False
    return isinstance(head, dict) and bool({"task", "data"} & set(head))


def check_experiment_file(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> str:
    """``trainforge config check FILE``: compose, parse and check an experiment without reading data;
    returns ``"<file>: valid"`` with the notes and the resolved YAML."""
    from omegaconf import OmegaConf

    from .build import check_experiment
    from .torchok import read_experiment

    source = locate(str(path), None, None)
    values, _ = compose(source, overrides)
    cfg, notes = read_experiment(values, source=str(path))
    mode = cfg.mode
    if mode == "train" and not cfg.data.TRAIN and (cfg.data.TEST or cfg.data.PREDICT):
        mode = "test" if cfg.data.TEST else "predict"  # an inference config (TorchOk's onnx_infer)
    try:
        notes = check_experiment(cfg, mode, notes)
    except ConfigError as error:  # the checks name the key; the file is named here, as the parser's errors do
        message = str(error)
        raise ConfigError(message if message.startswith(f"{path}:") else f"{path}: {message}") from None
    lines = [f"{path}: valid", *(f"note: {n}" for n in notes)]
    return "\n".join(lines) + "\n" + OmegaConf.to_yaml(OmegaConf.create(values))


# -- one run -------------------------------------------------------------------------------------------------
def run_experiment(values: dict[str, Any], run_dir: Path, command: str, name: str,
                   objective: str | None = None) -> RunResult:
    """Check, build and run one composed experiment in ``run_dir``; returns its final metrics."""
    from .build import build_experiment
    from .torchok import read_experiment

    cfg, notes = read_experiment(values, mode=None if command == "train" else command)
    mode = cfg.mode if command == "train" else command
    experiment = build_experiment(cfg, run_dir, mode, name=name, notes=notes)
    trainer = experiment.trainer
    _check_objective_logged(trainer, objective)
    if mode == "train":  # a monitor the built task cannot log fails before the run folder is made
        from ..config_check import check_eval_loss_monitors

        check_eval_loss_monitors(trainer)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_resolved(values, run_dir)
    if mode == "train":
        state = trainer.fit(resume_from=cfg.resume_path)
        metrics = {k: float(v) for k, v in state.metrics.items() if _is_number(v)}
    elif mode == "test":
        metrics = trainer.evaluate(experiment.eval_data["TEST"], phase="TEST")
    else:
        metrics = _predict(trainer, experiment.data["PREDICT"], run_dir)
    result = RunResult(run_dir, metrics)
    if objective is not None:
        if objective not in metrics:
            raise ConfigError(f"--objective {objective!r} is not a final metric; final metrics: "
                              f"{', '.join(sorted(metrics))}")
        result.objective = metrics[objective]
    (run_dir / f"{mode}_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    _print_result(mode, run_dir, metrics)
    return result


def _check_objective_logged(trainer: Any, objective: str | None) -> None:
    """A sweep's objective that is a loss the task does not compute (detection's ``valid/loss``) fails before
    training, not after every job."""
    from ..config_check import is_eval_loss

    why = getattr(trainer, "eval_loss_missing", None)
    if objective is not None and is_eval_loss(objective) and isinstance(why, str):
        raise ConfigError(f"--objective {objective!r} is not a metric this run logs: {why}; pass "
                          "--objective <metric> or give ModelCheckpoint a monitor (the sweep's default objective)")


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return getattr(value, "numel", lambda: 1)() == 1


def _write_resolved(values: dict[str, Any], run_dir: Path) -> None:
    from omegaconf import OmegaConf

    (run_dir / "experiment.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(values)))


def _predict(trainer: Any, data: Any, run_dir: Path) -> dict[str, float]:
    import torch

    sets = data if isinstance(data, dict) else {"predict": data}
    counts = {}
    for name, dataset in sets.items():
        batches = trainer.predict(dataset)
        merged = {key: torch.cat([b[key] for b in batches]) for key in batches[0]
                  if all(torch.is_tensor(b[key]) and b[key].dim() > 0 for b in batches)} if batches else {}
        path = run_dir / f"predictions_{name}.pt"
        torch.save(merged, path)  # plain tensors: torch.load(path, weights_only=True) reads them
        counts[f"predict/{name}_samples"] = float(len(merged.get("index", [])))
        print(f"predictions: {path}")
    return counts


def _print_result(mode: str, run_dir: Path, metrics: dict[str, float]) -> None:
    folder = run_dir.resolve()
    print(f"run folder: {folder}")
    if mode == "train":
        if (folder / "tensorboard").is_dir():
            print(f"tensorboard: tensorboard --logdir {folder / 'tensorboard'}")
    shown = {k: v for k, v in metrics.items() if "/" in k}
    print("final metrics: " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))


# -- the command ------------------------------------------------------------------------------------------
def run_command(command: str, source: ConfigSource, overrides: Sequence[str], multirun: bool = False,
                objective: str | None = None) -> list[RunResult]:
    """``trainforge train|test|predict``: one run, or a sweep with ``multirun``."""
    if command not in COMMANDS:
        raise ConfigError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    if multirun:
        return run_sweep(command, source, overrides, objective)
    values, hydra = compose(source, overrides)
    name = experiment_name(values, source)
    run_dir = Path(hydra["run_dir"]) if hydra["run_dir"] else new_run_dir(name)
    return [run_experiment(values, run_dir, command, name, objective)]


# -- sweeps --------------------------------------------------------------------------------------------
class _Sweep:
    """What the jobs of one sweep report, kept for its summary."""

    def __init__(self, command: str, source: ConfigSource, objective: str, optuna: bool) -> None:
        self.command, self.source, self.objective, self.optuna = command, source, objective, optuna
        self.results: list[RunResult] = []
        self.sweep_dir: Path | None = None

    def job(self, cfg: Any) -> float:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        hydra = HydraConfig.get()
        self.sweep_dir = Path(hydra.sweep.dir)
        run_dir = Path(hydra.runtime.output_dir)
        overrides = list(hydra.overrides.task)
        try:
            raw = OmegaConf.to_container(cfg, resolve=False)
            raw.pop("hydra", None)
            values = resolve(raw, self.source)
            result = run_experiment(values, run_dir, self.command, experiment_name(values, self.source), self.objective)
        except TrainforgeError as error:
            print(f"trainforge {self.command}: job {hydra.job.num} failed: {error}", file=sys.stderr)
            result = RunResult(run_dir, error=str(error))
        result.overrides = [o for o in overrides if not o.startswith("hydra")]
        self.results.append(result)
        return float("nan") if result.objective is None else result.objective


def run_sweep(command: str, source: ConfigSource, overrides: Sequence[str], objective: str | None) -> list[RunResult]:
    """Hydra's multirun: one job per combination (or per Optuna trial), each in
    ``runs/<name>/multirun-<time>/<job number>``, then ``summary.csv``, ``summary.md`` and
    ``objective.png`` in the sweep folder."""
    import hydra

    check_file(source)
    optuna = any(o.replace(" ", "") in ("hydra/sweeper=optuna", "+hydra/sweeper=optuna") for o in overrides)
    if optuna:
        _require_optuna()
    values, _ = compose(source, [o for o in overrides if not _is_sweep(o)])  # a broken base config fails once
    from .build import check_experiment
    from .torchok import read_experiment

    base, _ = read_experiment(values, source=str(source.path), mode=None if command == "train" else command)
    check_experiment(base, base.mode if command == "train" else command)
    name = experiment_name(values, source)
    objective = objective or _default_objective(values)
    direction = "minimize" if "loss" in objective else "maximize"
    if optuna and not _given(overrides, "hydra.sweeper.direction"):
        overrides = [*overrides, f"hydra.sweeper.direction={direction}"]
    elif optuna:
        direction = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweeper.direction="))
    sweep = _Sweep(command, source, objective, optuna)
    extra = list(_HYDRA_DEFAULTS)
    if not _given(overrides, "hydra.sweep.dir"):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        extra.append(f"hydra.sweep.dir={Path('runs') / name / ('multirun-' + stamp)}")
    extra.append("hydra.sweep.subdir=${hydra.job.num}")
    argv = ["trainforge", *extra, *overrides, "--multirun"]
    main = hydra.main(config_path=str(source.directory), config_name=source.name, version_base=None)(sweep.job)
    saved = sys.argv
    sys.argv = argv
    try:
        main()
    except SystemExit as exit_:  # Hydra reports its own composition errors and exits
        if exit_.code not in (0, None):
            raise ConfigError(f"{source.path}: Hydra could not run the sweep (its message is above)") from None
    finally:
        sys.argv = saved
    summarise(sweep, direction)
    return sweep.results


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if override.startswith(("hydra/", "+hydra/", "hydra.")):
        return True
    try:
        (parsed,) = OverridesParser.create().parse_overrides([override])
    except Exception as error:  # the parser's own error type varies by version; the message names the override
        raise ConfigError(f"override {override!r}: {error}") from None
    return parsed.is_sweep_override()


def _default_objective(values: dict[str, Any]) -> str:
    for callback in values.get("callbacks") or []:
        if isinstance(callback, dict) and callback.get("name") in ("ModelCheckpoint", "ModelCheckpointWithOnnx"):
            monitor = (callback.get("params") or {}).get("monitor")
            if monitor:
                return monitor
    return "valid/loss"


def _require_optuna() -> None:
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
    except ImportError:
        raise ConfigError("hydra/sweeper=optuna needs the Optuna sweeper: pip install 'trainforge[optuna]' "
                          "(hydra-optuna-sweeper)") from None


def summarise(sweep: _Sweep, direction: str) -> Path | None:
    """Write the sweep's table and objective plot, print the table and the best run; returns the table."""
    if sweep.sweep_dir is None or not sweep.results:
        return None
    folder = sweep.sweep_dir
    rows = []
    for i, result in enumerate(sweep.results):
        swept = dict(o.split("=", 1) for o in result.overrides if "=" in o)
        rows.append({"job": i, **swept, sweep.objective: result.objective, "run_dir": str(result.run_dir),
                     "status": "failed: " + result.error if result.error else "ok"})
    keys = list(dict.fromkeys(k for row in rows for k in row))
    fixed = {k for k in keys if k not in ("job", sweep.objective, "run_dir", "status") and len(rows) > 1
             and len({str(row.get(k)) for row in rows}) == 1}
    keys = [k for k in keys if k not in fixed]  # the table shows what was swept, not the shared overrides
    with open(folder / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(row.get(k)) for k in keys) + " |" for row in rows]
    finished = [r for r in rows if isinstance(r[sweep.objective], float) and math.isfinite(r[sweep.objective])]
    best = None
    if finished:
        pick = min if direction == "minimize" else max
        best = pick(finished, key=lambda r: r[sweep.objective])
        lines += ["", f"best ({direction} {sweep.objective}): job {best['job']} "
                      f"{sweep.objective}={best[sweep.objective]:.4f} in {best['run_dir']}"]
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(folder / "objective.png", rows, [k for k in keys if k not in ("job", sweep.objective, "run_dir", "status")],
          sweep.objective)
    print(f"sweep folder: {folder.resolve()}  (summary.csv, summary.md, objective.png)")
    return folder / "summary.csv"


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)


def _plot(path: Path, rows: list[dict[str, Any]], swept: list[str], objective: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = swept or ["job"]
    figure, axes = plt.subplots(1, len(swept), figsize=(4 * len(swept), 3.2), squeeze=False)
    for axis, key in zip(axes[0], swept):
        points = [(row.get(key), row[objective]) for row in rows if isinstance(row[objective], float)]
        numeric = all(_as_float(x) is not None for x, _ in points)
        xs = [_as_float(x) if numeric else str(x) for x, _ in points]
        axis.scatter(xs, [y for _, y in points])
        if numeric and xs and min(xs) > 0 and max(xs) / min(xs) >= 10:
            axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_ylabel(objective)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
