"""ONNX export verified with onnxruntime: ``export_onnx`` traces a model with ``torch.onnx.export``, runs the
same input through onnxruntime (CPU) and the model in eval mode, and writes the file atomically only when
they agree. onnx and onnxruntime are imported inside the functions (``pip install 'trainforge[onnx]'``).

Names: one input, ``"input"`` (the batch key the Trainer reads), with a dynamic batch axis ``"batch"``;
outputs ``"output"`` for a model returning a tensor, the dict's keys for a dict (``"embeddings"``,
``"prediction"``), ``"output_0"``, ``"output_1"``... for a tuple.

>>> import tempfile, torch
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
>>> with tempfile.TemporaryDirectory() as tmp:
...     result = export_onnx(model, f"{tmp}/model.onnx", input_shape=(3, 16, 16))
...     result.input_names, result.output_names, result.max_abs_diff["output"] < 1e-4
(['input'], ['output'], True)
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ExportError

INSTALL_HINT = "pip install 'trainforge[onnx]' (onnx and onnxruntime)"
#: ``metadata_props`` key marking a file trainforge wrote: ``export_onnx`` may replace such a file.
OWNER_KEY = "trainforge.exported"
INPUT_NAME = "input"
BATCH_AXIS = "batch"
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 17


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote: the file, its input and output names, and the verification result
    (``max_abs_diff`` per output; empty when ``verify=False``). Usable as a path (``os.fspath``)."""

    path: Path
    input_names: list[str]
    output_names: list[str]
    opset_version: int
    exporter: str
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    verified_batch: int | None = None
    atol: float = 0.0
    rtol: float = 0.0
    source: Path | None = None  # the checkpoint the weights came from (trainforge export)

    def __fspath__(self) -> str:
        return str(self.path)

    def summary(self) -> str:
        """One line: where the file is and how it was verified."""
        if not self.max_abs_diff:
            return f"{self.path}: exported (opset {self.opset_version}, {self.exporter}), not verified"
        worst = max(self.max_abs_diff, key=self.max_abs_diff.get)
        return (f"{self.path}: verified with onnxruntime (CPUExecutionProvider) at batch {self.verified_batch}: "
                f"max |onnx - torch| = {self.max_abs_diff[worst]:.3g} on {worst!r} (atol {self.atol:g}, "
                f"rtol {self.rtol:g}); input {self.input_names}, outputs {self.output_names}")


def require_onnx() -> tuple[Any, Any]:
    """``(onnx, onnxruntime)``, or an ``ExportError`` with the install command when either is missing."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ExportError(f"ONNX export and inference need onnx and onnxruntime ({error}); {INSTALL_HINT}") from None
    return onnx, onnxruntime


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    example_input: torch.Tensor | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    opset_version: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    overwrite: bool = False,
    exporter: str = "torchscript",
) -> OnnxExport:
    """Export ``model`` (an ``nn.Module``, or a Trainer: its ``.model``) to ONNX at ``path`` and verify it.

    The example is ``example_input`` (a batch tensor, e.g. ``batch["input"]``) or random values of
    ``input_shape`` (``(C, H, W)`` or ``(N, C, H, W)``). With ``dynamic_batch`` the batch axis is
    dynamic and verification runs a batch of a different size than the traced one, so a batch size
    baked into the graph is caught. Verification compares onnxruntime's outputs with the model's in
    eval mode: ``|onnx - torch| <= atol + rtol * |torch|`` everywhere, else ``ExportError`` naming the
    output and the largest difference, and nothing is written.

    ``exporter``: ``"torchscript"`` (default: any opset from 7, fast, no extra dependency) or
    ``"dynamo"`` (``torch.export``-based; needs onnxscript and opset >= 18). The file is written
    atomically (temporary file + rename in the target folder; missing parent folders are created). An
    existing file is replaced only when trainforge wrote it (``metadata_props`` holds ``trainforge.exported``)
    or ``overwrite=True``; folders and links are never replaced. The model's train/eval mode is restored.
    """
    module = _module_of(model)
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter={exporter!r}; expected one of {', '.join(EXPORTERS)}")
    if not isinstance(opset_version, int) or isinstance(opset_version, bool) or opset_version < 7:
        raise ConfigError(f"opset_version={opset_version!r}; expected an integer >= 7 (e.g. {DEFAULT_OPSET})")
    if exporter == "dynamo" and opset_version < 18:
        raise ConfigError(f"exporter='dynamo' writes opset 18 or newer, got opset_version={opset_version}; "
                          "use exporter='torchscript' for older opsets")
    for name, value in (("atol", atol), ("rtol", rtol)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise ConfigError(f"{name}={value!r}; expected a number >= 0")
    target = Path(path).expanduser()
    check_target(target, overwrite)
    onnx, _ = require_onnx()
    example = _example(module, example_input, input_shape, dynamic_batch)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            output_names = output_names_of(module(example))
        data = _export_bytes(module, example, output_names, opset_version, dynamic_batch, exporter)
        data = _mark(onnx, data, target, opset_version)
        result = OnnxExport(target, [INPUT_NAME], output_names, opset_version, exporter, atol=atol, rtol=rtol)
        if verify:
            check = torch.cat([example, example[:1]]) if dynamic_batch else example
            result.max_abs_diff = verify_onnx(data, module, check, atol=atol, rtol=rtol, where=str(target))
            result.verified_batch = int(check.shape[0])
    finally:
        module.train(was_training)
    from ..checkpoint import atomic_write_bytes

    target.parent.mkdir(parents=True, exist_ok=True)
    check_target(target, overwrite)  # again: the export took seconds, the folder may have changed
    atomic_write_bytes(target, data)
    return result


def _module_of(model: Any) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    raise TypeError(f"export_onnx needs a torch.nn.Module or a Trainer, got {type(model).__name__}")


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse a target that is a folder, a link, or a file trainforge did not write (unless ``overwrite``)."""
    if target.is_symlink():
        raise ExportError(f"{target} is a symbolic link; export_onnx never writes through links: remove it or "
                          "choose another path")
    if not target.exists():
        return
    if not target.is_file():
        raise ExportError(f"{target} exists and is not a file (a folder?); choose a file path such as "
                          f"{target / 'model.onnx'}")
    if overwrite or _written_by_trainforge(target):
        return
    raise ExportError(f"{target} exists and was not written by trainforge's ONNX export; nothing was changed. "
                      "Pass overwrite=True (trainforge export --overwrite) to replace it, or choose another path")


def _written_by_trainforge(file: Path) -> bool:
    try:
        import onnx

        proto = onnx.load(str(file), load_external_data=False)
    except Exception:  # not ONNX at all (or unreadable): not ours
        return False
    return any(prop.key == OWNER_KEY for prop in proto.metadata_props)


def _example(module: nn.Module, example: torch.Tensor | None, shape: Sequence[int] | None,
             dynamic_batch: bool) -> torch.Tensor:
    if example is not None and shape is not None:
        raise ConfigError("give example_input or input_shape, not both")
    if example is None:
        if shape is None:
            raise ConfigError("export_onnx needs an example: example_input=<batch tensor> or input_shape=(C, H, W)")
        dims = list(shape)
        if len(dims) not in (3, 4) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise ConfigError(f"input_shape={tuple(shape)!r}; expected (C, H, W) or (N, C, H, W) of positive ints")
        generator = torch.Generator().manual_seed(0)  # the same check on every call
        example = torch.rand(([2] if len(dims) == 3 else []) + dims, generator=generator)
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or example.shape[0] < 1:
        raise ConfigError(f"example_input must be a batch tensor (N, ...), got {_describe(example)}")
    if not example.is_floating_point():
        example = example.float()
    if dynamic_batch and example.shape[0] == 1:
        example = torch.cat([example, example])  # a batch of 1 is read as a constant by torch.export
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    return example.detach().to(device)


def _describe(value: Any) -> str:
    return f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def output_names_of(output: Any) -> list[str]:
    """ONNX output names for what the model returned: ``["output"]``, the dict's keys, ``output_<i>``."""
    if isinstance(output, torch.Tensor):
        return ["output"]
    if isinstance(output, Mapping) and output and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in output.items()
    ):
        return list(output)
    if isinstance(output, (tuple, list)) and output and all(isinstance(v, torch.Tensor) for v in output):
        return [f"output_{i}" for i in range(len(output))]
    raise ExportError(f"the model returns {_structure(output)}; ONNX export takes a model returning a tensor, a "
                      "dict of tensors or a tuple of tensors (wrap it in a module that returns one)")


def _structure(output: Any) -> str:
    if isinstance(output, Mapping):
        return "a dict of " + ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(output.items())[:4])
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of " + ", ".join(type(v).__name__ for v in list(output)[:4])
    return type(output).__name__


def _flat_outputs(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return list(output.values())
    return list(output)


def _export_bytes(module: nn.Module, example: torch.Tensor, output_names: list[str], opset: int,
                  dynamic_batch: bool, exporter: str) -> bytes:
    kwargs: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": output_names, "opset_version": opset}
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 warns on every TorchScript-based export; the choice is deliberate (export_onnx docs)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            if exporter == "torchscript":
                axes = {name: {0: BATCH_AXIS} for name in [INPUT_NAME, *output_names]} if dynamic_batch else None
                buffer = io.BytesIO()
                torch.onnx.export(module, (example,), buffer, dynamo=False, dynamic_axes=axes,
                                  do_constant_folding=True, **kwargs)
                return buffer.getvalue()
            _require_onnxscript()
            shapes = ({0: torch.export.Dim(BATCH_AXIS)},) if dynamic_batch else None
            program = torch.onnx.export(module, (example,), None, dynamo=True, dynamic_shapes=shapes,
                                        verbose=False, **kwargs)
            return program.model_proto.SerializeToString()
    except (ExportError, ConfigError):
        raise
    except Exception as error:
        other = "dynamo" if exporter == "torchscript" else "torchscript"
        raise ExportError(f"torch.onnx.export ({exporter}) could not export {type(module).__name__}: "
                          f"{type(error).__name__}: {str(error).strip()[:800]}. Try exporter={other!r}, or wrap "
                          "the model in a module whose forward takes one tensor") from error


def _require_onnxscript() -> None:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError("exporter='dynamo' needs onnxscript: pip install onnxscript, or use "
                          "exporter='torchscript'") from None


def _mark(onnx: Any, data: bytes, target: Path, opset: int) -> bytes:
    """Check the model, stamp it as trainforge's, and refuse an opset other than the one asked for."""
    from .._version import __version__

    proto = onnx.load_from_string(data)
    written = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
    if written != opset:
        raise ExportError(f"{target}: the exporter wrote opset {written}, not opset_version={opset}; use "
                          f"opset_version={written} or exporter='torchscript'")
    entry = proto.metadata_props.add()
    entry.key, entry.value = OWNER_KEY, __version__
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{target}: the exported model is not valid ONNX: {error}") from None
    return proto.SerializeToString()


def verify_onnx(
    onnx_model: bytes | str | os.PathLike[str], module: nn.Module, inputs: torch.Tensor, *,
    atol: float = 1e-4, rtol: float = 1e-3, where: str | None = None,
) -> dict[str, float]:
    """Run ``inputs`` through onnxruntime (CPUExecutionProvider) and through ``module`` (in eval mode,
    without gradients); returns the largest absolute difference per output. Raises ``ExportError`` naming
    the output, the largest difference and its position when ``|onnx - torch| > atol + rtol * |torch|``
    anywhere, or when shapes differ.

    >>> import tempfile, torch
    >>> model = torch.nn.Linear(3, 2)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = export_onnx(model, f"{tmp}/m.onnx", torch.ones(2, 3), verify=False).path
    ...     with torch.no_grad():
    ...         _ = model.bias.add_(1.0)  # the file no longer computes what the model does
    ...     verify_onnx(path, model, torch.ones(4, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ExportError: ...: onnxruntime and torch differ on output 'output' by up to 1 ...
    """
    import numpy as np

    _, ort = require_onnx()
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    where = where or ("the exported model" if isinstance(onnx_model, bytes) else str(onnx_model))
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feed = {session.get_inputs()[0].name: inputs.detach().cpu().numpy()}
    got = session.run(None, feed)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            device = next((p.device for p in module.parameters()), torch.device("cpu"))
            expected = [t.detach().float().cpu().numpy() for t in _flat_outputs(module(inputs.to(device)))]
    finally:
        module.train(was_training)
    if len(expected) != len(got):
        raise ExportError(f"{where}: the ONNX model has {len(got)} outputs {names}, the model returns {len(expected)}")
    diffs: dict[str, float] = {}
    for name, onnx_value, torch_value in zip(names, got, expected):
        if onnx_value.shape != torch_value.shape:
            raise ExportError(f"{where}: output {name!r} has shape {onnx_value.shape} in onnxruntime and "
                              f"{torch_value.shape} in torch (batch of {inputs.shape[0]})")
        diff = np.abs(onnx_value.astype(np.float64) - torch_value.astype(np.float64))
        diff = np.where(np.isnan(onnx_value) & np.isnan(torch_value), 0.0, diff)  # NaN in both: the same
        bound = atol + rtol * np.abs(torch_value.astype(np.float64))
        worst = float(np.nanmax(diff)) if diff.size else 0.0
        if diff.size and (np.isnan(diff).any() or (diff > bound).any()):
            index = np.unravel_index(int(np.nanargmax(np.where(np.isnan(diff), np.inf, diff - bound))), diff.shape)
            raise ExportError(
                f"{where}: onnxruntime and torch differ on output {name!r} by up to {worst:.4g} (at index "
                f"{tuple(int(i) for i in index)}: onnx {onnx_value[index]!r}, torch {torch_value[index]!r}); "
                f"allowed: atol {atol:g} + rtol {rtol:g} * |torch|. The exported graph does not compute what the "
                "model does: check for input-dependent Python control flow, or loosen atol/rtol if the "
                "difference is float rounding"
            )
        diffs[name] = worst
    return diffs


def onnx_io_names(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """``(input names, output names)`` of an ONNX file, read without running it; ``ConfigError`` naming the
    file when it is missing or not an ONNX model."""
    proto = load_onnx_model(path)
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    return inputs, [o.name for o in proto.graph.output]


def load_onnx_model(path: str | os.PathLike[str]) -> Any:
    """The ``onnx.ModelProto`` of ``path`` (external data not loaded), checked by ``onnx.checker`` — which also
    refuses external weight files outside the model's folder (``../../etc/passwd``)."""
    onnx, _ = require_onnx()
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{file}: no such ONNX file" + ("" if not file.exists() else " (it is a folder)"))
    try:
        proto = onnx.load(str(file), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as error:  # protobuf's DecodeError, the checker's ValidationError, OSError
        raise ConfigError(f"{file} is not a valid ONNX model: {type(error).__name__}: {str(error)[:300]}") from None
    return proto

