"""``JointLoss``: TorchOk's weighted sum of loss terms, each reading its arguments from the step's outputs
and batch through a name mapping."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .registry import build_loss, snake_name

DEFAULT_MAPPING: dict[str, str] = {"input": "output", "target": "target"}
_TERM_KEYS = ("name", "weight", "mapping", "params", "tag")


class JointLoss(nn.Module):
    """``total = sum(weight_i * loss_i(...))`` over the terms in ``losses``.

    Each term is a dict ``{name, weight=1.0, mapping, params={}, tag}``: ``name``/``params`` go to
    ``build_loss``; ``mapping`` maps the loss's forward-argument names to keys looked up first in the
    step ``outputs`` and then in the ``batch`` (outputs win when both have the key). Without a mapping
    the term gets ``outputs["output"]`` and ``batch["target"]`` as its first two positional arguments.
    ``tag`` (default: the snake-case loss name, e.g. "cross_entropy") keys the term in the returned
    dict; tags must be unique. With ``normalize_weights`` the weights are divided by their sum.

    ``forward(outputs, batch)`` returns ``(total, {tag: unweighted term})``, all device tensors: no
    ``.item()``, no host sync.

    >>> loss = JointLoss([
    ...     {"name": "MSELoss", "weight": 0.5},
    ...     {"name": "L1Loss", "weight": 2.0, "mapping": {"input": "output", "target": "target"}},
    ... ])
    >>> total, terms = loss({"output": torch.tensor([3.0])}, {"target": torch.tensor([1.0])})
    >>> total, terms
    (tensor(6.), {'mse': tensor(4.), 'l1': tensor(2.)})
    """

    #: the Trainer calls a criterion with this class attribute as ``criterion(outputs, batch)``
    takes_dicts = True

    def __init__(self, losses: list[dict[str, Any]], normalize_weights: bool = False) -> None:
        super().__init__()
        if not losses:
            raise ConfigError("joint_loss.losses is empty; give at least one {name, weight, mapping, params, tag}")
        terms = [_parse_term(i, term) for i, term in enumerate(losses)]
        tags = [t["tag"] for t in terms]
        duplicated = sorted({t for t in tags if tags.count(t) > 1})
        if duplicated:
            raise ConfigError(f"joint_loss.losses: tags {duplicated} are used more than once; give each term a tag")
        weights = [t["weight"] for t in terms]
        if normalize_weights:
            if sum(weights) <= 0:
                raise ConfigError(f"joint_loss.normalize_weights needs weights with a positive sum, got {weights}")
            weights = [w / sum(weights) for w in weights]
        self.losses = nn.ModuleList(build_loss(t["name"], **t["params"]) for t in terms)
        self.tags = tags
        self.weights = weights
        self.mappings: list[dict[str, str] | None] = [t["mapping"] for t in terms]
        for i, (module, mapping) in enumerate(zip(self.losses, self.mappings)):
            if mapping is not None:
                _check_mapping(i, module, mapping)

    def forward(self, outputs: Mapping[str, Any], batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = batch if isinstance(batch, Mapping) else {}
        terms: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for i, (tag, weight, module, mapping) in enumerate(zip(self.tags, self.weights, self.losses, self.mappings)):
            if mapping is None:  # positional: losses name their first two arguments differently
                value = module(*(_lookup(i, arg, key, outputs, batch) for arg, key in DEFAULT_MAPPING.items()))
            else:
                value = module(**{arg: _lookup(i, arg, key, outputs, batch) for arg, key in mapping.items()})
            terms[tag] = value
            weighted = value * weight
            total = weighted if total is None else total + weighted
        assert total is not None  # __init__ rejects an empty list
        return total, terms

    def extra_repr(self) -> str:
        return ", ".join(f"{tag}={weight:g}" for tag, weight in zip(self.tags, self.weights))


def _parse_term(index: int, term: Any) -> dict[str, Any]:
    path = f"joint_loss.losses[{index}]"
    if not isinstance(term, Mapping) or "name" not in term:
        raise ConfigError(f"{path} must be a dict with at least 'name', got {term!r}")
    unknown = sorted(set(term) - set(_TERM_KEYS))
    if unknown:
        raise ConfigError(f"{path} has unknown key(s) {unknown}; allowed: {', '.join(_TERM_KEYS)}")
    weight = term.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
        raise ConfigError(f"{path}.weight must be a finite number, got {weight!r}")
    mapping = term.get("mapping")
    if mapping is not None and not (isinstance(mapping, Mapping) and all(isinstance(v, str) for v in mapping.values())):
        raise ConfigError(f"{path}.mapping must map argument names to output/batch keys, got {mapping!r}")
    return {
        "name": term["name"],
        "weight": float(weight),
        "mapping": dict(mapping) if mapping is not None else None,
        "params": dict(term.get("params") or {}),
        "tag": term.get("tag") or snake_name(term["name"]),
    }


def _check_mapping(index: int, module: nn.Module, mapping: dict[str, str]) -> None:
    parameters = inspect.signature(module.forward).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(mapping) - set(parameters))
    if unknown:
        raise ConfigError(
            f"joint_loss.losses[{index}].mapping names argument(s) {unknown} that {type(module).__name__}.forward "
            f"does not take; it takes: {', '.join(parameters)}"
        )


def _lookup(index: int, arg: str, key: str, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Any:
    if key in outputs:
        return outputs[key]
    if key in batch:
        return batch[key]
    raise ConfigError(
        f"joint_loss.losses[{index}].mapping.{arg}: key {key!r} is in neither the step outputs "
        f"(keys: {sorted(outputs)}) nor the batch (keys: {sorted(batch)}); fix the mapping or return {key!r} "
        "from the step"
    )
