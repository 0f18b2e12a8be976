"""``ModelCheckpointWithOnnx`` (TorchOk's name): a ``ModelCheckpoint`` that also writes each saved checkpoint's
model as a verified ONNX file beside it, ``<dirpath>/<checkpoint name>.onnx`` (and ``last.onnx``)."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import State
from ..errors import ConfigError
from .checkpoint import ModelCheckpoint, _is_main

logger = logging.getLogger(__name__)

#: ``onnx_params`` keys, passed to ``trainforge.export.export_onnx``.
ONNX_PARAMS = ("opset_version", "exporter", "dynamic_batch", "verify", "atol", "rtol")


class ModelCheckpointWithOnnx(ModelCheckpoint):
    """``ModelCheckpoint`` plus, with ``export_to_onnx=True``, an ONNX export at every save — as TorchOk does.

    Each checkpoint folder ``<dirpath>/<name>`` gets ``<dirpath>/<name>.onnx`` (``last.onnx`` too with
    ``save_last``), written atomically and verified with onnxruntime against the model in eval mode; the
    file of a pruned top-k checkpoint is removed with it, so the ``.onnx`` files always match the kept
    checkpoints (the best one: ``best_model_path`` + ``.onnx``). The example input is two samples of the
    first training batch this callback sees (the model input; a Trainer's ``preprocess`` is not applied).
    ``onnx_params`` go to ``trainforge.export.export_onnx`` (``opset_version``, ``exporter``,
    ``dynamic_batch``, ``verify``, ``atol``, ``rtol``). With EMA the averaged weights are exported (those
    evaluation used). ``remove_head=True`` exports a composed model
    without its head (``forward_features``: embeddings). The RNG state is left as it was, so a resumed
    run matches an uninterrupted one. A failed verification raises ``ExportError``; the checkpoint
    itself is already committed.

    >>> import tempfile
    >>> from trainforge.engine import Recipe
    >>> model = nn.Linear(3, 2)
    >>> r = Recipe(lambda b: None, [{"input": torch.ones(4, 3)}] * 2)
    >>> r.register("model", model)
    >>> folder = tempfile.mkdtemp()
    >>> r.callbacks.add(ModelCheckpointWithOnnx(folder, export_to_onnx=True, onnx_params={"opset_version": 13}))
    >>> _ = r.run(1)
    >>> sorted(p.name for p in Path(folder).iterdir() if p.suffix == ".onnx")
    ['epoch001-step000002.onnx', 'last.onnx']
    """

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
        export_to_onnx: bool = False,
        onnx_params: Mapping[str, Any] | None = None,
        remove_head: bool = False,
        filepath: str | Path | None = None,
    ) -> None:
        super().__init__(dirpath, filename, monitor, mode, save_top_k, save_last, every_n_epochs, every_n_steps,
                         filepath=filepath)
        if not isinstance(export_to_onnx, bool):
            raise ConfigError(f"ModelCheckpointWithOnnx export_to_onnx={export_to_onnx!r}; expected true or false")
        if onnx_params is not None and not isinstance(onnx_params, Mapping):
            raise ConfigError(f"ModelCheckpointWithOnnx onnx_params must be a mapping such as {{opset_version: 17}}, "
                              f"got {type(onnx_params).__name__}")
        for key in onnx_params or {}:
            if key not in ONNX_PARAMS:
                close = difflib.get_close_matches(str(key), ONNX_PARAMS, n=1, cutoff=0.5)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(f"ModelCheckpointWithOnnx onnx_params has no key {key!r}; {hint}accepted: "
                                  f"{', '.join(ONNX_PARAMS)}")
        self.export_to_onnx = export_to_onnx
        self.onnx_params = dict(onnx_params or {})
        self.remove_head = remove_head
        self._example: torch.Tensor | None = None
        self.last_onnx: Any = None  # the last OnnxExport (path, names, max difference)

    def on_batch_start(self, state: State) -> None:
        if self._example is None and self.export_to_onnx:
            batch = state.batch
            x = batch.get("input") if isinstance(batch, Mapping) else None
            if isinstance(x, torch.Tensor):
                self._example = x[:2].detach().clone()  # once per run: two samples, on the batch's device

    def save(self, state: State) -> Path | None:
        before = {name for _, name in self.kept}
        path = super().save(state)
        if path is None or not self.export_to_onnx or not _is_main():
            return path
        for name in before - {name for _, name in self.kept}:  # pruned with their checkpoint
            (self.dirpath / f"{name}.onnx").unlink(missing_ok=True)
        self._export(state, path)
        return path

    def _export(self, state: State, path: Path) -> None:
        from ..export import export_onnx

        if self._example is None:
            logger.warning("ModelCheckpointWithOnnx: no training batch seen yet; %s has no ONNX file", path)
            return
        module = self._module(state)
        target = path.with_name(f"{path.name}.onnx")
        devices = [self._example.device] if self._example.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self.last_onnx = export_onnx(module, target, self._example, **self.onnx_params)
        if self.save_last and path.name != "last":
            _link_or_copy(target, self.dirpath / "last.onnx")
        logger.info("%s", self.last_onnx.summary())

    def _module(self, state: State) -> nn.Module:
        model = getattr(state.owner, "model", None)
        if not isinstance(model, nn.Module):
            raise ConfigError("ModelCheckpointWithOnnx needs the model: use it with a Trainer (or register "
                              "'model' on the Recipe)")
        from .ema import EMA

        callbacks = getattr(state.owner, "callbacks", ())
        ema = next((c for c in callbacks if isinstance(c, EMA) and c.model is model), None)
        if ema is not None:
            model = ema.module  # the averaged weights: what evaluation (and so the monitor) saw
        if not self.remove_head:
            return model
        if not callable(getattr(model, "forward_features", None)):
            raise ConfigError(f"ModelCheckpointWithOnnx remove_head=true needs a model built from parts (its "
                              f"forward_features); {type(model).__name__} has none: set remove_head: false")
        return _Features(model)


class _Features(nn.Module):
    """A composed model without its head: what the head gets (``forward_features``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model.forward_features(x)


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` names ``source``'s bytes (a hard link, else a copy), replaced atomically."""
    from ..checkpoint import atomic_write_bytes

    scratch = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        os.link(source, scratch)
        os.replace(scratch, target)
    except OSError:
        scratch.unlink(missing_ok=True)
        atomic_write_bytes(target, source.read_bytes())
