"""``trainforge export``: the model of a YAML experiment's run folder (or one of its checkpoints), rebuilt
from the run's ``experiment.yaml``, loaded with the checkpoint's weights and exported to ONNX, verified."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .onnx import OnnxExport, export_onnx

_FOLDER_HINT = "give a run folder (runs/<experiment>/<time>) or one of its checkpoints (<run folder>/checkpoints/last)"


def locate_run(source: str | os.PathLike[str]) -> tuple[Path, Path | None]:
    """``(run folder, checkpoint folder)`` for a checkpoint folder inside a run folder's ``checkpoints/``,
    ``(run folder, None)`` for a run folder with checkpoints (``best_checkpoint`` picks one); ``ConfigError``
    naming the path and the fix otherwise."""
    from ..checkpoint import MANIFEST_FILE, list_checkpoints

    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"{path} does not exist; {_FOLDER_HINT}")
    if not path.is_dir():
        raise ConfigError(f"{path} is a file, not a trainforge run folder or checkpoint; {_FOLDER_HINT}. For a "
                          "model in Python use trainforge.export.export_onnx(model, 'model.onnx', input_shape=...)")
    if (path / MANIFEST_FILE).is_file():
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return run, path
    if (path / "checkpoints").is_dir():
        if not list_checkpoints(path / "checkpoints"):
            raise ConfigError(f"{path}: its checkpoints/ folder has no committed checkpoint to export; train "
                              "first, or name a checkpoint folder")
        return path, None
    raise ConfigError(f"{path} is not a trainforge run folder or checkpoint (no checkpoints/ folder, no "
                      f"{MANIFEST_FILE}); {_FOLDER_HINT}")


def export_run(
    source: str | os.PathLike[str], onnx_path: str | os.PathLike[str], *, opset_version: int | None = None,
    input_shape: tuple[int, ...] | None = None, overwrite: bool = False, exporter: str = "torchscript",
) -> OnnxExport:
    """Export the model of the run (or checkpoint) ``source`` to ``onnx_path``, verified with onnxruntime.

    A run folder exports its best checkpoint (``best_checkpoint``: the best monitored score, else the
    newest); ``result.source`` says which. The model is built from the run folder's ``experiment.yaml``
    (written by ``trainforge train``) and given the checkpoint's weights (verified, weights-only load).
    The example input has ``input_shape`` (C, H, W), else TorchOk's ``task.params.inputs[0].shape``, else
    the shape of one sample of the experiment's data (VALID, TEST, then TRAIN).
    """
    run, checkpoint = locate_run(source)
    cfg = _experiment_of(run)
    if checkpoint is None:
        checkpoint = best_checkpoint(run / "checkpoints", _checkpoint_mode(cfg))
    from ..config.build import build_model
    from ..pretrained import load_pretrained

    model = build_model(cfg)
    load_pretrained(model, base_path=str(checkpoint))
    shape = tuple(input_shape) if input_shape else _configured_shape(cfg) or _data_shape(cfg, run)
    options: dict[str, Any] = {"input_shape": shape, "overwrite": overwrite, "exporter": exporter}
    if opset_version is not None:
        options["opset_version"] = opset_version
    result = export_onnx(model, onnx_path, **options)
    result.source = checkpoint
    return result


def best_checkpoint(folder: Path, mode: str = "min") -> Path:
    """The checkpoint with the best monitored score in its manifest (``mode`` min or max), when every
    checkpoint monitored the same metric; else the newest one that verifies."""
    import math

    from ..checkpoint import find_resume_checkpoint, list_checkpoints, read_manifest

    scored = []
    for path in list_checkpoints(folder):
        metadata = read_manifest(path).get("metadata", {})
        scored.append((metadata.get("monitor"), metadata.get("score"), path))
    monitors = {monitor for monitor, _, _ in scored}
    if len(monitors) == 1 and None not in monitors and all(
        isinstance(score, (int, float)) and math.isfinite(score) for _, score, _ in scored
    ):
        pick = min if mode == "min" else max
        return pick(scored, key=lambda item: item[1])[2]  # ties: the oldest, as ModelCheckpoint keeps it
    found = find_resume_checkpoint(folder)
    if found is None:
        raise ConfigError(f"{folder}: no checkpoint verifies; name a checkpoint folder to export")
    return Path(found)


def _checkpoint_mode(cfg: Any) -> str:
    for callback in cfg.callbacks:
        if callback.name in ("ModelCheckpoint", "ModelCheckpointWithOnnx"):
            return str(callback.params.get("mode", "min"))
    return "min"


def _experiment_of(run: Path) -> Any:
    from ..config.schema import parse_experiment
    from ..yaml_io import load_yaml

    file = run / "experiment.yaml"
    if not file.is_file():
        hint = " (its config.yaml is a TrainingConfig run: the model was built in Python)" if (
            run / "config.yaml").is_file() else ""
        raise ConfigError(f"{run} has no experiment.yaml{hint}; trainforge export rebuilds models of YAML "
                          "experiments (trainforge train). For a model built in Python call "
                          "trainer.export_onnx('model.onnx') or trainforge.export.export_onnx(model, 'model.onnx', "
                          "input_shape=(C, H, W))")
    return parse_experiment(load_yaml(file), source=str(file))


def _configured_shape(cfg: Any) -> tuple[int, ...] | None:
    inputs = cfg.task.params.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) and isinstance(inputs[0].get("shape"), list):
        return tuple(int(d) for d in inputs[0]["shape"])
    return None


def _data_shape(cfg: Any, run: Path) -> tuple[int, ...]:
    from ..config.build import build_dataset

    for phase in ("VALID", "TEST", "TRAIN"):
        pairs = getattr(cfg.data, phase) or []
        if not pairs:
            continue
        where = f"data.{phase}[0]"
        try:
            item = build_dataset(pairs[0], where)[0]
        except Exception as error:  # data not on this machine, a moved folder: say which and how to avoid it
            raise ConfigError(f"{run / 'experiment.yaml'}: could not read a sample of {where} to size the ONNX "
                              f"input ({type(error).__name__}: {error}); give --input-shape C,H,W") from None
        x = item["input"] if isinstance(item, dict) else item[0]
        return tuple(int(d) for d in x.shape)
    raise ConfigError(f"{run / 'experiment.yaml'} has no data to size the ONNX input; give --input-shape C,H,W")
