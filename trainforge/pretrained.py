"""Partial loading of pretrained weights for fine-tuning, after TorchOk's ``load_checkpoint``: a base
checkpoint for the whole model, overrides per module prefix (the deepest prefix wins), excluded keys,
``strict``, absolute or relative keys. Every source is read with a safe loader; every mismatch is an
error that names the keys, their shapes and the file they came from."""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, ModelLoadError

#: Keys of ``TrainingConfig.load_checkpoint`` (the keyword arguments of ``load_pretrained``).
LOAD_CHECKPOINT_KEYS: tuple[str, ...] = ("base_path", "overrides", "exclude_keys", "strict", "relative")
#: TorchOk's names for the same settings, used only to point a TorchOk user at ours.
TORCHOK_NAMES: dict[str, str] = {"base_ckpt_path": "base_path", "overridden_name2ckpt_path": "overrides"}
_SHOWN = 20  # keys listed per kind of mismatch; the rest are counted

StrPath = str | os.PathLike


@dataclass
class PretrainedLoad:
    """What ``load_pretrained`` did: ``sources`` maps each loaded model key to the file it came from;
    ``missing`` keys kept their initial values (``strict=False`` only), ``unexpected`` keys of the
    sources matched no model key (``strict=False`` only), ``excluded`` keys were left as they were."""

    sources: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


@dataclass
class StateDictDiff:
    """Differences between the state dict a model expects and one that is offered.

    >>> expected = {"w": torch.zeros(2, 3), "b": torch.zeros(2)}
    >>> diff = compare_state_dicts(expected, {"w": torch.zeros(4, 3), "extra": torch.zeros(1)})
    >>> print(diff.describe())
    shape mismatch (1): 'w': saved (4, 3), model (2, 3)
    missing (1): 'b' (2,)
    unexpected (1): 'extra' (1,)
    """

    missing: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    unexpected: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...], str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self, missing_hint: str = "", unexpected_hint: str = "") -> str:
        """One line per kind of mismatch: key, shapes and (when known) the file each key came from."""
        lines = []
        if self.shapes:
            items = [f"{key!r}: {_from(source)}{tuple(saved)}, model {tuple(model)}"
                     for key, saved, model, source in self.shapes]
            lines.append(f"shape mismatch ({len(items)}): {_listed(items)}")
        if self.missing:
            items = [f"{key!r} {tuple(shape)}" for key, shape in self.missing]
            lines.append(f"missing ({len(items)}): {_listed(items)}{missing_hint}")
        if self.unexpected:
            items = [f"{key!r} {tuple(shape)}{_in(source)}" for key, shape, source in self.unexpected]
            lines.append(f"unexpected ({len(items)}): {_listed(items)}{unexpected_hint}")
        return "\n".join(lines)


def _from(source: str) -> str:
    return f"{source} has " if source else "saved "


def _in(source: str) -> str:
    return f" from {source}" if source else ""


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def compare_state_dicts(
    expected: Mapping[str, torch.Tensor],
    offered: Mapping[str, torch.Tensor],
    sources: Mapping[str, str] | None = None,
    ignored: Iterable[str] = (),
) -> StateDictDiff:
    """Missing, unexpected and shape-mismatched keys of ``offered`` against ``expected`` (a model's
    ``state_dict()``); ``sources`` names the file of each offered key; ``ignored`` keys are skipped."""
    sources = sources or {}
    skip = set(ignored)
    diff = StateDictDiff()
    for key, tensor in expected.items():
        if key in skip:
            continue
        if key not in offered:
            diff.missing.append((key, tuple(tensor.shape)))
        elif tuple(offered[key].shape) != tuple(tensor.shape):
            diff.shapes.append((key, tuple(offered[key].shape), tuple(tensor.shape), sources.get(key, "")))
    for key, tensor in offered.items():
        if key not in expected and key not in skip:
            diff.unexpected.append((key, tuple(getattr(tensor, "shape", ())), sources.get(key, "")))
    return diff


# -- reading one source ----------------------------------------------------------------------------
def read_weights(path: StrPath) -> dict[str, torch.Tensor]:
    """The model weights in ``path``, read safely, as ``{key: tensor}`` on the CPU:

    - a ``.safetensors`` file (``trainforge.export.load_safetensors``);
    - a trainforge checkpoint folder (verified; its saved model weights);
    - any other file: a ``torch.save`` file (``.pt``, ``.pth``, ``.ckpt``) loaded weights-only
      (``trainforge.checkpoint.load_state_file``), holding a state dict, a ``{"state_dict": ...}``
      (Lightning, TorchOk), a ``{"model": ...}`` or a trainforge ``state.pt``.

    Anything else raises ``ModelLoadError`` naming the file.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     torch.save({"state_dict": {"w": torch.ones(2)}}, f"{tmp}/lightning.ckpt")
    ...     read_weights(f"{tmp}/lightning.ckpt")
    {'w': tensor([1., 1.])}
    """
    from .checkpoint import MANIFEST_FILE, load_checkpoint, load_state_file

    file = Path(path)
    if file.is_dir():
        if (file / MANIFEST_FILE).is_file():
            return _weights_in(load_checkpoint(file), file)
        hint = f"; name one of its checkpoints, e.g. {file / 'checkpoints' / 'last'}" if (
            file / "checkpoints").is_dir() else ""
        raise ModelLoadError(f"{file} is a folder but not a trainforge checkpoint (no {MANIFEST_FILE}){hint}")
    if not file.is_file():
        raise ModelLoadError(f"no weights file at {file}")
    if file.suffix == ".safetensors":
        from .export import load_safetensors

        return load_safetensors(file)[0]
    return _weights_in(load_state_file(file), file)


def _weights_in(content: Any, file: Path) -> dict[str, torch.Tensor]:
    """The state dict inside what a file held: the dict itself, or the usual wrappers around it."""
    if isinstance(content, Mapping):
        recipe = content.get("recipe")
        if isinstance(recipe, Mapping) and isinstance(recipe.get("registered"), Mapping):
            content = recipe["registered"].get("model")  # a trainforge checkpoint
        elif isinstance(content.get("state_dict"), Mapping):
            content = content["state_dict"]
        elif isinstance(content.get("model"), Mapping):
            content = content["model"]
    if not isinstance(content, Mapping) or not content:
        raise ModelLoadError(f"{file} holds no model weights: expected a state dict, got {_summary(content)}")
    bad = [key for key, value in content.items() if not (isinstance(key, str) and isinstance(value, torch.Tensor))]
    if bad:
        raise ModelLoadError(
            f"{file} is not a state dict: {len(bad)} entries are not str -> Tensor, e.g. {bad[0]!r} holds "
            f"{type(content[bad[0]]).__name__}"
        )
    return dict(content)


def _summary(content: Any) -> str:
    if isinstance(content, Mapping):
        return f"a dict with keys {sorted(map(str, content))[:10]}" if content else "an empty dict"
    return type(content).__name__


# -- merging ---------------------------------------------------------------------------------------
def _covers(prefix: str, key: str) -> bool:
    """``prefix`` names ``key`` or one of its enclosing modules ("head" covers "head.fc.weight", not
    "header.weight")."""
    return key == prefix or key.startswith(prefix + ".")


def _depth(prefix: str) -> int:
    return prefix.count(".") + 1


def _close(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3)
    return f"; close matches: {', '.join(map(repr, close))}" if close else ""


def _module_names(keys: Iterable[str]) -> set[str]:
    names = set()
    for key in keys:
        parts = key.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return names


def _check_prefixes(kind: str, prefixes: Iterable[str], model_keys: list[str]) -> None:
    names = _module_names(model_keys)
    for prefix in prefixes:
        if not prefix:
            raise ConfigError(f"{kind}: an empty module prefix; use base_path for the whole model")
        if prefix not in names:
            known = _close(prefix, names)
            raise ConfigError(f"{kind}: {prefix!r} names no module or tensor with weights in the model{known}")


def _normalized_overrides(overrides: Mapping[str, StrPath] | None, model_keys: list[str]) -> dict[str, Path]:
    result: dict[str, Path] = {}
    for name, path in (overrides or {}).items():
        prefix = str(name).strip(" .")  # TorchOk strips spaces and dots too
        if prefix in result:
            raise ConfigError(f"overrides: {name!r} repeats the prefix {prefix!r}")
        result[prefix] = Path(path)
    _check_prefixes("overrides", result, model_keys)
    return result


def _under_prefix(
    weights: Mapping[str, torch.Tensor], prefix: str, relative: bool | None, file: Path, model_keys: set[str]
) -> dict[str, torch.Tensor]:
    """An override file's tensors under their model keys.

    ``relative=True``: every key is relative to ``prefix``. ``False``: keys are full model keys and only
    those under ``prefix`` are taken (the file may be a whole-model checkpoint). ``None`` (TorchOk): a
    key already under ``prefix`` is full, any other is relative. A prefix naming one tensor takes a file
    that holds that tensor under its full name, or as its only entry."""
    if prefix in model_keys and relative is not False and len(weights) == 1 and prefix not in weights:
        return {prefix: next(iter(weights.values()))}
    if relative is True:
        return {f"{prefix}.{key}": value for key, value in weights.items()}
    if relative is False:
        taken = {key: value for key, value in weights.items() if _covers(prefix, key)}
        if not taken:
            raise ModelLoadError(
                f"{file} has no keys under {prefix!r} (relative=False reads full model keys; its keys look like "
                f"{sorted(weights)[:3]}); set relative=True if they are relative to {prefix!r}"
            )
        return taken
    return {key if _covers(prefix, key) else f"{prefix}.{key}": value for key, value in weights.items()}


def _exclusions(exclude_keys: str | Iterable[str] | None, model_keys: list[str]) -> list[str]:
    if exclude_keys is None:
        return []
    prefixes = [exclude_keys] if isinstance(exclude_keys, str) else [str(k) for k in exclude_keys]
    prefixes = [p.strip(" .") for p in prefixes]
    _check_prefixes("exclude_keys", prefixes, model_keys)
    return prefixes


def load_pretrained(
    model: nn.Module,
    base_path: StrPath | None = None,
    overrides: Mapping[str, StrPath] | None = None,
    exclude_keys: str | Iterable[str] | None = None,
    strict: bool = True,
    relative: bool | None = None,
) -> PretrainedLoad:
    """Load pretrained weights into ``model``: TorchOk's ``load_checkpoint``, with safe loaders and
    errors that name every mismatched key.

    - ``base_path``: weights for the whole model (any source ``read_weights`` reads: ``.safetensors``,
      a ``torch.save`` file, a trainforge checkpoint folder).
    - ``overrides``: ``{module prefix: path}``. For each key, the deepest prefix whose file provides it
      wins (``"head.fc"`` over ``"head"`` over the base). Keys are matched by whole components:
      ``"head"`` covers ``"head.fc.weight"``, not ``"header.weight"``.
    - ``relative``: how override files name their keys. ``None`` (TorchOk): a key already starting with
      the prefix is a full model key, any other is relative to the prefix. ``True``: all relative.
      ``False``: all full model keys, and only those under the prefix are used, so an override may be
      another whole-model checkpoint. A prefix that names one tensor also takes a file with one entry.
    - ``exclude_keys``: prefixes (whole components) whose tensors keep the model's current values.
    - ``strict``: model keys that no source provides (and are not excluded) and source keys that match
      no model key raise; with ``strict=False`` they are skipped with a warning.

    A shape mismatch always raises. Errors are ``ModelLoadError`` naming keys, shapes and files (a file
    that cannot be read, too), or ``ConfigError`` for a prefix that names no module. Nothing is loaded
    when anything is wrong. Returns a ``PretrainedLoad`` saying where each key came from.

    >>> import tempfile
    >>> from torch import nn
    >>> def net():
    ...     return nn.ModuleDict({"backbone": nn.Linear(2, 2), "head": nn.Linear(2, 1)})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     torch.save(net().state_dict(), f"{tmp}/base.pt")
    ...     torch.save({"weight": torch.full((1, 2), 7.0), "bias": torch.ones(1)}, f"{tmp}/head.pt")
    ...     model = net()
    ...     result = load_pretrained(model, f"{tmp}/base.pt", overrides={"head": f"{tmp}/head.pt"})
    ...     model.head.weight.tolist(), {key: Path(file).name for key, file in result.sources.items()}
    ... # doctest: +NORMALIZE_WHITESPACE
    ([[7.0, 7.0]], {'backbone.weight': 'base.pt', 'backbone.bias': 'base.pt',
                    'head.weight': 'head.pt', 'head.bias': 'head.pt'})
    """
    if base_path is None and not overrides:
        raise ConfigError("load_pretrained needs base_path or overrides: there is nothing to load")
    if relative not in (None, True, False):
        raise ConfigError(f"relative={relative!r}; expected True, False or None (TorchOk's per-key guess)")
    current = model.state_dict()
    model_keys = list(current)
    by_prefix = _normalized_overrides(overrides, model_keys)
    excluded_prefixes = _exclusions(exclude_keys, model_keys)
    merged: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    layers = [("", Path(base_path))] if base_path is not None else []
    layers += sorted(by_prefix.items(), key=lambda item: _depth(item[0]))  # deeper prefixes applied last win
    for prefix, file in layers:
        weights = read_weights(file)
        if prefix:
            weights = _under_prefix(weights, prefix, relative, file, set(model_keys))
        merged.update(weights)
        sources.update(dict.fromkeys(weights, str(file)))
    excluded = sorted(k for k in set(model_keys) | set(merged) if any(_covers(p, k) for p in excluded_prefixes))
    for key in excluded:
        merged.pop(key, None)
    diff = compare_state_dicts(current, merged, sources, ignored=excluded)
    if diff.shapes or (strict and diff):
        raise ModelLoadError(_mismatch_message(model, diff, strict))
    if diff:
        warnings.warn(f"load_pretrained (strict=False) skipped keys:\n{diff.describe()}", UserWarning, stacklevel=2)
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in merged.items() if k in current}, strict=False)
    return PretrainedLoad(
        sources={k: sources[k] for k in merged if k in current},
        missing=[key for key, _ in diff.missing],
        unexpected=[key for key, _, _ in diff.unexpected],
        excluded=[k for k in excluded if k in current],
    )


def _mismatch_message(model: nn.Module, diff: StateDictDiff, strict: bool) -> str:
    missing_hint = "; no source provides them (add an override, list them in exclude_keys, or set strict=False)"
    unexpected_hint = "; the model has no such keys (check the prefixes and relative, or set strict=False)"
    head = f"cannot load pretrained weights into {type(model).__name__}; nothing was loaded"
    if not strict:
        head += " (a shape mismatch is an error even with strict=False: exclude those keys)"
    return f"{head}:\n{diff.describe(missing_hint, unexpected_hint)}"


def check_load_checkpoint_options(options: Mapping[str, Any], where: str = "load_checkpoint") -> None:
    """Validate a ``load_checkpoint`` settings dict (the keyword arguments of ``load_pretrained``);
    a ``ConfigError`` names the dotted key.

    >>> check_load_checkpoint_options({"base_ckpt_path": "a.pt"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: load_checkpoint.base_ckpt_path is not a setting; did you mean 'base_path' ...
    """
    for key in options:
        if key not in LOAD_CHECKPOINT_KEYS:
            ours = TORCHOK_NAMES.get(key)
            close = difflib.get_close_matches(str(key), LOAD_CHECKPOINT_KEYS, n=1)
            hint = (f"; did you mean {ours!r} (TorchOk's {key})?" if ours else
                    f"; did you mean {close[0]!r}?" if close else ".")
            raise ConfigError(f"{where}.{key} is not a setting{hint} Settings: {', '.join(LOAD_CHECKPOINT_KEYS)}")
    _check_option(where, "base_path", options.get("base_path"), (str, os.PathLike, type(None)), "a path or null")
    overrides = options.get("overrides")
    _check_option(where, "overrides", overrides, (dict, type(None)), "a mapping {module prefix: path}")
    for prefix, path in (overrides or {}).items():
        _check_option(where, f"overrides.{prefix}", path, (str, os.PathLike), "a path")
    exclude = options.get("exclude_keys")
    _check_option(where, "exclude_keys", exclude, (list, tuple, str, type(None)), "a list of key prefixes")
    if isinstance(exclude, (list, tuple)):
        for i, key in enumerate(exclude):
            _check_option(where, f"exclude_keys[{i}]", key, (str,), "a key prefix")
    _check_option(where, "strict", options.get("strict", True), (bool,), "true or false")
    _check_option(where, "relative", options.get("relative"), (bool, type(None)), "true, false or null")
    if options.get("base_path") is None and not overrides:
        raise ConfigError(f"{where} needs base_path or overrides, e.g. {{'base_path': 'pretrained.safetensors'}}")


def _check_option(where: str, key: str, value: Any, kinds: tuple[type, ...], expected: str) -> None:
    if not isinstance(value, kinds):
        raise ConfigError(f"{where}.{key}={value!r} has type {type(value).__name__}; expected {expected}")
