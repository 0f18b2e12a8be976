"""``build_loss``: any ``torch.nn`` loss by name, plus our own losses registered with ``register_loss``."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import ConfigError, RegistryError

_REGISTERED: dict[str, tuple[str, Callable[..., nn.Module]]] = {}  # lookup key -> (name as registered, factory)
_DEPRECATED = ("NLLLoss2d",)
_TENSOR_PARAMS = ("weight", "pos_weight")  # YAML gives lists; torch losses want tensors

T = TypeVar("T", bound=Callable[..., nn.Module])


def normalize_loss_name(name: str) -> str:
    """The lookup key of a loss name: lower case, without ``_``/``-`` and without a trailing "loss".

    >>> normalize_loss_name("CrossEntropyLoss"), normalize_loss_name("cross_entropy")
    ('crossentropy', 'crossentropy')
    """
    key = re.sub(r"[_\-\s]", "", name.lower())
    return key[: -len("loss")] if key.endswith("loss") and key != "loss" else key


def snake_name(name: str) -> str:
    """The default tag of a loss: snake case without a trailing "_loss".

    >>> snake_name("CrossEntropyLoss"), snake_name("BCEWithLogitsLoss"), snake_name("smooth_l1")
    ('cross_entropy', 'bce_with_logits', 'smooth_l1')
    """
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower().replace("-", "_")
    return snake[: -len("_loss")] if snake.endswith("_loss") else snake


def _torch_losses() -> dict[str, type[nn.Module]]:
    """``{normalized name: class}`` for every loss class in ``torch.nn``."""
    found = {}
    for name in dir(nn):
        obj = getattr(nn, name)
        if isinstance(obj, type) and issubclass(obj, nn.modules.loss._Loss) and name not in _DEPRECATED:
            found[normalize_loss_name(name)] = obj
    return found


def register_loss(name: str) -> Callable[[T], T]:
    """Register a loss class (or factory returning a module) under ``name`` for ``build_loss``.

    >>> @register_loss("doubled_mse")
    ... class DoubledMSE(nn.Module):
    ...     def forward(self, input, target):
    ...         return 2 * nn.functional.mse_loss(input, target)
    >>> build_loss("DoubledMSE")(torch.ones(2), torch.zeros(2))
    tensor(2.)
    """
    key = normalize_loss_name(name)

    def decorator(factory: T) -> T:
        if key in _REGISTERED or key in _torch_losses():
            raise ConfigError(f"a loss named {name!r} already exists ({key!r}); register it under another name")
        _REGISTERED[key] = (name, factory)
        return factory

    return decorator


def list_losses() -> list[str]:
    """Names ``build_loss`` knows: torch's loss classes and the registered losses, sorted.

    >>> "CrossEntropyLoss" in list_losses()
    True
    """
    return sorted([cls.__name__ for cls in _torch_losses().values()] + [name for name, _ in _REGISTERED.values()])


def loss_class(name: str) -> Callable[..., nn.Module]:
    """The class or factory ``build_loss`` would call for ``name``; ``RegistryError`` with close matches."""
    key = normalize_loss_name(name)
    if key in _REGISTERED:
        return _REGISTERED[key][1]
    torch_losses = _torch_losses()
    if key in torch_losses:
        return torch_losses[key]
    spelled = {normalize_loss_name(n): n for n in list_losses()}
    close = difflib.get_close_matches(key, list(spelled), n=5, cutoff=0.5)
    raise RegistryError(
        f"unknown loss {name!r}. Close matches: {', '.join(spelled[c] for c in close) or 'none'}. "
        "list_losses() gives every name; register your own with @register_loss(name)."
    )


def build_loss(name: str, **params: Any) -> nn.Module:
    """Build the loss ``name`` with ``params``.

    ``name`` is matched ignoring case, ``_`` and a trailing "loss": "CrossEntropyLoss",
    "cross_entropy" and "crossentropyloss" are the same. Registered losses win over torch's. List
    values of ``weight``/``pos_weight`` (as YAML gives them) become float tensors. Arguments the loss
    does not take raise ``ConfigError`` listing the ones it does.

    >>> build_loss("cross_entropy", label_smoothing=0.1)
    CrossEntropyLoss()
    >>> build_loss("bce_with_logits", pos_weight=[2.0]).pos_weight
    tensor([2.])
    """
    factory = loss_class(name)
    accepted = _accepted(factory)
    unknown = sorted(set(params) - set(accepted)) if accepted is not None else []
    if unknown:
        raise ConfigError(f"loss {name!r} got unexpected argument(s) {unknown}; it accepts: {', '.join(accepted)}")
    params = {
        k: torch.tensor(v, dtype=torch.float32) if k in _TENSOR_PARAMS and isinstance(v, (list, tuple)) else v
        for k, v in params.items()
    }
    try:
        return factory(**params)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"loss {name!r}: {error}") from error


def _accepted(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword names ``factory`` takes, or None when it takes ``**kwargs`` (anything goes)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_POSITIONAL]
