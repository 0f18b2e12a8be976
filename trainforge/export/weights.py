"""Weight export for sharing and deployment. safetensors: atomic writes, tied weights stored once and
restored on load, JSON metadata (class names, preprocessing), and a loader that treats every file as
hostile input.

>>> import tempfile, torch
>>> model = torch.nn.Linear(2, 1)
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = export_safetensors(model, f"{tmp}/model.safetensors", {"class_names": ["cat", "dog"]})
...     tensors, metadata = load_safetensors(path)
...     model.load_state_dict(tensors)
...     metadata["class_names"]
<All keys matched successfully>
['cat', 'dog']
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write_bytes
from ..errors import ModelLoadError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # larger headers are refused before they are read (B18)
_ALIASES_KEY = "trainforge.aliases"  # {alias name: stored name} for tied weights
_ENCODING_KEY = "trainforge.encoding"  # "json": every other metadata value is JSON text
_RESERVED = ("format", _ALIASES_KEY, _ENCODING_KEY)


def export_safetensors(
    source: torch.nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a module's ``state_dict()`` (or a dict of tensors) to ``path`` as safetensors, atomically:
    a temporary file, fsync, ``os.replace``. Overwriting a file that another reader has mmap-ed is safe;
    that reader keeps the old bytes (safetensors#764).

    Tensors are stored as contiguous CPU copies. Tied weights (the same tensor under several names, which
    safetensors refuses) are stored once, under their first name, and ``load_safetensors`` restores the
    other names as the same tensor. Views that only partly overlap are stored as independent copies.
    ``metadata`` values may be anything JSON can encode (class names, a preprocessing dict with mean,
    std and image size); ``load_safetensors`` decodes them.

    >>> import tempfile, torch
    >>> tied = torch.ones(2)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     tensors, _ = load_safetensors(export_safetensors({"a": tied, "b": tied}, f"{tmp}/t.safetensors"))
    ...     tensors["a"] is tensors["b"]
    True
    """
    header = _encode_metadata(metadata)  # first: a bad value fails before any tensor is copied
    state = source.state_dict() if isinstance(source, torch.nn.Module) else source
    tensors, aliases = _dedupe(state)
    if aliases:
        header[_ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    from safetensors.torch import save  # late: keeps `import trainforge` light

    # save() builds the file in memory: one extra copy of the weights, so the write can be atomic.
    return atomic_write_bytes(path, save(tensors, metadata=header))


def _dedupe(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU copies, each distinct tensor once; plus the names that alias a stored one."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_name: dict[tuple[Any, ...], str] = {}
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise TypeError(f"can only export str -> Tensor entries; {name!r} holds {type(tensor).__name__}")
        identity = _view_identity(tensor)
        if identity is not None and identity in first_name:
            aliases[name] = first_name[identity]
            continue
        if identity is not None:
            first_name[identity] = name
        tensors[name] = tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    return tensors, aliases


def _view_identity(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    """Equal for two names of the same view of the same memory; None for empty tensors (no memory)."""
    if tensor.numel() == 0:
        return None
    storage = tensor.untyped_storage()
    return (tensor.device, storage.data_ptr(), tensor.storage_offset(), tensor.dtype, tensor.shape, tensor.stride())


def _encode_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    header = {"format": "pt", _ENCODING_KEY: "json"}  # "format": "pt" is what transformers expects
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or key in _RESERVED:
            raise ValueError(f"invalid metadata key {key!r}: use a string other than {', '.join(_RESERVED)}")
        try:
            header[key] = json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata[{key!r}] cannot be encoded as JSON ({exc}); use lists, dicts, numbers") from exc
    return header


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (on CPU, owned: not backed by the file) and decoded metadata from a safetensors file.

    The header is checked before safetensors parses it: its declared length must fit in the file and stay
    under 100 MB, and its JSON must not repeat a key. Any problem, including every safetensors error
    (bad offsets, shapes, dtypes), raises ``ModelLoadError`` naming the file. Files written by other tools
    load too; their metadata comes back as the raw strings.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = export_safetensors({"w": torch.zeros(2)}, f"{tmp}/w.safetensors", {"image_size": [32, 32]})
    ...     load_safetensors(f"{tmp}/w.safetensors")[1]
    {'image_size': [32, 32]}
    """
    file = Path(path)
    try:
        header = _read_header(file)
        tensors = _read_tensors(file)  # safetensors validates offsets, shapes and metadata types
        raw = dict(header.get("__metadata__") or {})
        _restore_aliases(tensors, json.loads(raw.pop(_ALIASES_KEY, "{}")))
        metadata = _decode_metadata(raw)
    except ModelLoadError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError, plus OSError, ValueError, ...
        raise ModelLoadError(f"{file} is not a valid safetensors file: {type(exc).__name__}: {exc}") from exc
    return tensors, metadata


def _read_header(file: Path) -> dict[str, Any]:
    size = file.stat().st_size
    with open(file, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ModelLoadError(f"{file} is {size} bytes: too short for a safetensors header")
        length = int.from_bytes(prefix, "little")
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise ModelLoadError(
                f"{file} declares a {length}-byte header; the limit is {MAX_HEADER_BYTES} and the file has {size - 8}"
            )
        header = json.loads(f.read(length), object_pairs_hook=_reject_duplicates)
    if not isinstance(header, dict):
        raise ModelLoadError(f"{file}: the safetensors header is not a JSON object")
    return header


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"the header repeats the key(s) {', '.join(repeated)}")
    return dict(pairs)


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """Read into owned memory: mmap-backed tensors change or crash if the file is rewritten in place."""
    import safetensors.torch

    try:
        return safetensors.torch.load_file(file, device="cpu", backend="pread")
    except TypeError:  # safetensors before 0.8 has no backend argument
        return safetensors.torch.load(file.read_bytes())


def _decode_metadata(raw: Mapping[str, str]) -> dict[str, Any]:
    if raw.get(_ENCODING_KEY) != "json":
        return dict(raw)  # written by another tool: values are plain strings
    return {key: json.loads(value) for key, value in raw.items() if key not in ("format", _ENCODING_KEY)}


def _restore_aliases(tensors: dict[str, torch.Tensor], aliases: Any) -> None:
    if not isinstance(aliases, dict):
        raise ValueError(f"{_ALIASES_KEY} is not a JSON object")
    for alias, stored in aliases.items():
        if alias in tensors or stored not in tensors:
            raise ValueError(f"alias {alias!r} -> {stored!r} does not match the stored tensors")
        tensors[alias] = tensors[stored]
