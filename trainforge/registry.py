"""``Registry``: components looked up by name — one small class (timm's pattern) and the catalogue of
trainforge's registries. Components register where they are defined; library sets (torch losses, timm
backbones, torchmetrics metrics...) join as lazy sources that import nothing until asked.

>>> parts = Registry("poolings", "how feature maps become vectors")
>>> @parts.register(help="global average pooling")
... class Avg:
...     pass
>>> parts.get("Avg") is Avg, parts.list(), parts.help("Avg")
(True, ['Avg'], 'global average pooling')
>>> parts.get("avg")
Traceback (most recent call last):
...
trainforge.errors.RegistryError: poolings has no 'avg'; did you mean 'Avg'? (trainforge ls poolings lists them)
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError, RegistryError

T = TypeVar("T")


@dataclass(frozen=True)
class _Source:
    """Names provided by a library, listed and fetched only when asked (no import at start)."""

    names: Callable[[], Iterable[str]]
    get: Callable[[str], Any]
    help: Callable[[str], str] | None = None


class Registry:
    """Names to components of one kind: ``register``, ``get``, ``list``, ``help``, ``build``.

    A second registration under one name is an error; an unknown name lists the closest matches.
    ``add_source`` adds a library's names lazily (``names()`` and ``get(name)`` run on first use).
    """

    def __init__(self, kind: str, description: str = "") -> None:
        self.kind = kind
        self.description = description
        self._entries: dict[str, tuple[Any, str]] = {}
        self._sources: list[_Source] = []

    def register(
        self, obj: T | None = None, *, name: str | None = None, help: str | None = None
    ) -> T | Callable[[T], T]:
        """Register ``obj`` (or decorate): under ``name`` (default ``obj.__name__``), with a one-line
        ``help`` (default: the first line of its docstring)."""

        def add(target: T) -> T:
            key = name or getattr(target, "__name__", None)
            if not key:
                raise ConfigError(f"{self.kind}: pass name= to register {target!r}")
            if key in self._entries and _where(self._entries[key][0]) != _where(target):
                raise ConfigError(
                    f"{self.kind} already has {key!r} ({_where(self._entries[key][0])}); register "
                    f"{_where(target)} under another name"
                )
            if key in self._entries:  # the same module imported again (pytest's importlib mode): keep the first
                return target
            self._entries[key] = (target, help if help is not None else _first_line(target))
            return target

        return add if obj is None else add(obj)

    def add_source(
        self,
        names: Callable[[], Iterable[str]],
        get: Callable[[str], Any],
        help: Callable[[str], str] | None = None,
    ) -> None:
        """Add a lazy source of names (a library's): ``names()`` lists them, ``get(name)`` fetches one
        (raising ``KeyError``/``AttributeError`` when absent). Registered entries win over sources."""
        self._sources.append(_Source(names, get, help))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self._entries or any(self._from_source(source, name)[0] for source in self._sources)

    @staticmethod
    def _from_source(source: _Source, name: str) -> tuple[bool, Any]:
        try:
            return True, source.get(name)
        except (KeyError, AttributeError, LookupError):
            return False, None

    def get(self, name: str) -> Any:
        """The component registered as ``name``; ``RegistryError`` with close matches otherwise."""
        if not isinstance(name, str):
            raise RegistryError(f"{self.kind}: a name must be a string, got {type(name).__name__} {name!r}")
        if name in self._entries:
            return self._entries[name][0]
        for source in self._sources:
            found, value = self._from_source(source, name)
            if found:
                return value
        close = difflib.get_close_matches(name, self.list(), n=3, cutoff=0.6)
        if not close:  # case and separators are the commonest slips: 'resnet_18', 'RESNET18'
            folded = {_fold(known): known for known in self.list()}
            close = [folded[_fold(name)]] if _fold(name) in folded else []
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(f"{self.kind} has no {name!r}{hint} (trainforge ls {self.kind} lists them)")

    def list(self, pattern: str | None = None) -> list[str]:
        """Sorted names, optionally filtered by a shell-style ``pattern`` (``"resnet*"``), case-insensitive."""
        names = set(self._entries)
        for source in self._sources:
            names.update(source.names())
        if pattern:
            names = {n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())}
        return sorted(names)

    def help(self, name: str) -> str:
        """One line of help for ``name`` (empty when it has none)."""
        if name in self._entries:
            return self._entries[name][1]
        for source in self._sources:
            found, value = self._from_source(source, name)
            if found:
                return source.help(name) if source.help is not None else _first_line(value)
        self.get(name)  # raises with suggestions
        return ""

    def build(self, name: str, where: str | None = None, /, **params: Any) -> Any:
        """``get(name)(**params)`` with the parameters checked against its signature first: an unknown
        one is a ``ConfigError`` naming ``where`` (a key path such as ``task.params``) and the close
        match, instead of a ``TypeError`` from deep inside the component."""
        target = self.get(name)
        check_params(target, params, where or f"{self.kind}.{name}")
        return target(**params)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} registered, {len(self._sources)} sources)"


def check_params(target: Callable[..., Any], params: dict[str, Any], where: str) -> None:
    """Raise ``ConfigError`` for a key of ``params`` that ``target``'s signature does not accept.

    >>> def freeze(epochs: int = 1, stages: int = 1): ...
    >>> check_params(freeze, {"stage": 1}, "callbacks[0].params")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: callbacks[0].params has no key 'stage'; did you mean 'stages'? ...

    A parameter annotated ``bool`` takes ``true`` or ``false`` only: ``train: "false"`` or ``train: 0``
    would otherwise pick a split by Python's truthiness.

    >>> def cifar(train: bool = True): ...
    >>> check_params(cifar, {"train": "false"}, "data.TRAIN[0].dataset.params")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: data.TRAIN[0].dataset.params.train='false': expected true or false ...
    """
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # a builtin without a signature: it checks its own arguments
    accepted = [
        p.name for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    for key in params:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where} has no key {key!r}{hint} (accepted: {', '.join(accepted) or 'none'})")
        annotation = signature.parameters[key].annotation
        if annotation in (bool, "bool") and not isinstance(params[key], bool):
            raise ConfigError(f"{where}.{key}={params[key]!r}: expected true or false (YAML booleans, unquoted)")


def _fold(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


#: Every registry, with the package whose import fills it (imported on first ``get_registry``).
CATALOGUE: dict[str, tuple[str, str]] = {
    "losses": ("trainforge.losses", "loss functions: torch.nn losses and trainforge's own"),
    "optimizers": ("trainforge.optim", "torch.optim and timm optimizers"),
    "schedulers": ("trainforge.optim", "learning-rate schedules: torch, timm and trainforge's"),
    "metrics": ("trainforge.metrics", "torchmetrics metrics and trainforge's"),
    "datasets": ("trainforge.data", "data sets: image folders, annotation files, digits, shapes, CIFAR, MNIST"),
    "samplers": ("trainforge.data", "samplers that keep the resumable (seed, epoch) order"),
    "transforms": ("trainforge.data", "per-sample CPU transforms (albumentations)"),
    "augmentations": ("trainforge.data", "batched device augmentations (kornia)"),
    "backbones": ("trainforge.models", "feature extractors: timm, torchvision and trainforge models"),
    "necks": ("trainforge.models", "feature-map fusion between backbone and pooling/head"),
    "poolings": ("trainforge.models", "feature maps to vectors"),
    "heads": ("trainforge.models", "task heads: classifiers, segmentation, embeddings, margin heads"),
    "tasks": ("trainforge.tasks", "task trainers: classification, segmentation, metric learning, detection"),
    "callbacks": ("trainforge.callbacks", "Trainer and Recipe callbacks"),
    "loggers": ("trainforge.loggers", "metric loggers: JSONL, TensorBoard, MLflow, ..."),
}

_REGISTRIES: dict[str, Registry] = {name: Registry(name, help) for name, (_, help) in CATALOGUE.items()}


def registry(kind: str) -> Registry:
    """The registry ``kind`` (see ``CATALOGUE``), without importing what fills it — for registering.

    >>> registry("necks").kind
    'necks'
    """
    if kind not in _REGISTRIES:
        close = difflib.get_close_matches(kind, list(_REGISTRIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; registries: {', '.join(_REGISTRIES)}"
        raise RegistryError(f"there is no registry {kind!r}{hint}")
    return _REGISTRIES[kind]


def get_registry(kind: str) -> Registry:
    """The registry ``kind``, filled: the package that registers into it is imported first.

    >>> get_registry("losses").kind
    'losses'
    """
    found = registry(kind)
    module = CATALOGUE[kind][0]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
    return found


def list_registries() -> list[str]:
    """Names of every registry, in catalogue order."""
    return list(CATALOGUE)
