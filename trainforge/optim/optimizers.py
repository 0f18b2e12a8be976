"""``build_optimizer``: any ``torch.optim`` optimizer, or any of timm's, by name, with argument checking."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..errors import ConfigError, RegistryError

Params = torch.nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]]


def _torch_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    """``{lowercase name: class}`` for every optimizer class ``torch.optim`` exports."""
    found = {}
    for name in dir(torch.optim):
        obj = getattr(torch.optim, name)
        if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer:
            found[name.lower()] = obj
    return found


def _timm_optimizers() -> list[str]:
    import timm.optim  # lazy: importing timm costs seconds

    return list(timm.optim.list_optimizers())


def list_optimizers() -> list[str]:
    """Every name ``build_optimizer`` accepts: torch's classes (lower case) and timm's names, sorted.

    >>> {"adamw", "sgd", "lamb", "lion"} <= set(list_optimizers())
    True
    """
    return sorted(set(_torch_optimizers()) | set(_timm_optimizers()))


def trainable_parameters(params: Params) -> list[Any]:
    """A module's parameters with ``requires_grad`` at this moment; anything else as a list, unchanged.

    >>> net = torch.nn.Linear(2, 1)
    >>> _ = net.bias.requires_grad_(False)
    >>> len(trainable_parameters(net))
    1
    """
    if isinstance(params, torch.nn.Module):
        return [p for p in params.parameters() if p.requires_grad]
    if isinstance(params, torch.Tensor):
        raise ConfigError("params must be a module, an iterable of tensors or of param-group dicts, got one tensor")
    return list(params)


def _accepted(fn: Callable[..., Any], skip: tuple[str, ...] = ("self", "params")) -> list[str]:
    parameters = inspect.signature(fn).parameters.values()
    return [p.name for p in parameters if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _check_kwargs(what: str, accepted: list[str], kwargs: dict[str, Any]) -> None:
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        hints = [
            f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, accepted, n=1)) else repr(k)
            for k in unknown
        ]
        raise ConfigError(f"{what} got unexpected argument(s) {', '.join(hints)}; it accepts: {', '.join(accepted)}")


def build_optimizer(name: str, params: Params, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """Build the optimizer ``name`` over ``params`` with learning rate ``lr``.

    ``name`` is a ``torch.optim`` class matched case-insensitively ("adamw", "AdamW", "sgd") or a name
    from ``timm.optim.list_optimizers()`` ("lamb", "lion", "adabelief"); torch wins when both have it.
    ``params`` is a module (its parameters that require grad *now*, so freeze before building), an
    iterable of tensors, or param-group dicts. Unknown names raise ``RegistryError`` with close matches;
    arguments the optimizer does not take raise ``ConfigError`` listing the ones it does.

    >>> net = torch.nn.Linear(3, 1)
    >>> opt = build_optimizer("AdamW", net, lr=1e-3, weight_decay=0.05)
    >>> type(opt).__name__, opt.param_groups[0]["weight_decay"]
    ('AdamW', 0.05)
    >>> build_optimizer("adamw", net, lr=1e-3, momentum=0.9)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: optimizer 'adamw' (AdamW) got unexpected argument(s) 'momentum'; ...
    """
    if not isinstance(name, str):
        raise ConfigError(f"optimizer name must be a string, got {type(name).__name__}")
    params = trainable_parameters(params)
    if not params:
        raise ConfigError(f"optimizer {name!r} got no parameters to optimize (are all of them frozen?)")
    torch_classes = _torch_optimizers()
    key = name.lower()
    if key in torch_classes:
        cls = torch_classes[key]
        _check_kwargs(f"optimizer {name!r} ({cls.__name__})", _accepted(cls), kwargs)
        return _construct(name, lambda: cls(params, lr=lr, **kwargs))
    timm_names = _timm_optimizers()
    if key not in timm_names:
        close = difflib.get_close_matches(key, sorted(set(torch_classes) | set(timm_names)), n=5, cutoff=0.5)
        raise RegistryError(
            f"unknown optimizer {name!r}. Close matches: {', '.join(close) or 'none'}. "
            "list_optimizers() gives every name (torch.optim classes and timm optimizers)."
        )
    return _build_timm(name, key, params, lr, kwargs)


def _build_timm(name: str, key: str, params: list[Any], lr: float, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    import timm.optim

    factory_args = _accepted(timm.optim.create_optimizer_v2, skip=("model_or_params", "opt", "lr"))
    cls = timm.optim.get_optimizer_class(key, bind_defaults=False)
    _check_kwargs(f"optimizer {name!r} (timm)", sorted(set(factory_args) | set(_accepted(cls))), kwargs)
    return _construct(name, lambda: timm.optim.create_optimizer_v2(params, opt=key, lr=lr, **kwargs))


def _construct(name: str, make: Callable[[], torch.optim.Optimizer]) -> torch.optim.Optimizer:
    try:
        return make()
    except (ValueError, TypeError) as error:  # torch validates values (lr < 0, betas out of range) this way
        raise ConfigError(f"optimizer {name!r}: {error}") from error
