"""What a run folder records: where a run happened (package versions, git commit, hardware, command
line: ``env.json``), a cheap fingerprint of the training data (checked on resume), and what the run was
built from (``config.yaml``: the objects passed in, by class and settings, and the config they left)."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from typing import Any

import torch
from torch.utils.data import Subset


def environment_info() -> dict[str, Any]:
    """Package versions, git commit, hardware and command line, for ``env.json`` in the run folder."""
    import importlib.metadata as metadata
    import subprocess

    versions = {}
    for package in ("trainforge", "torch", "torchvision", "numpy", "torchmetrics", "timm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip() or None
    except OSError:
        sha = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "git_sha": sha,
        "command": sys.argv,
    }


def dataset_fingerprint(data: Any) -> str | None:
    """A cheap identity of a data set: its own ``fingerprint()`` when it has one; for in-memory tensor
    data a SHA-256 of the tensors; otherwise None (only the length is compared)."""
    if data is None:
        return None
    own = getattr(data, "fingerprint", None)
    if callable(own):
        return str(own())
    if isinstance(data, Subset):  # the base data set's identity and the chosen indices, in order
        inner = dataset_fingerprint(data.dataset)
        return None if inner is None else hashlib.sha256(f"{inner}:{list(data.indices)}".encode()).hexdigest()[:16]
    tensors = getattr(data, "tensors", None)
    if isinstance(tensors, tuple) and all(isinstance(t, torch.Tensor) for t in tensors):
        digest = hashlib.sha256()
        for tensor in tensors:
            digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]
    return None


# -- what a run used ------------------------------------------------------------------------------------
_PLAIN = (bool, int, float, str, type(None))


def _plain(value: Any) -> Any:
    """``value`` if it is YAML-plain (numbers, strings, lists and tuples of them), else ``_SKIP``."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value):
        return list(value)
    return _SKIP


_SKIP = object()
#: Constructor parameters that are not settings: what is being wrapped, and schedulers' progress.
_NOT_SETTINGS = ("self", "optimizer", "last_epoch", "verbose")


def qualified_name(obj: Any) -> str:
    """``module.Class`` of an object (``module.function`` for a function), for the run's records.

    >>> qualified_name(torch.nn.CrossEntropyLoss())
    'torch.nn.modules.loss.CrossEntropyLoss'
    """
    kind = obj if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")) else type(obj)
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', type(obj).__name__)}"


def constructor_arguments(obj: Any) -> dict[str, Any]:
    """The constructor arguments of ``obj`` that it keeps as plain attributes of the same name (how torch
    losses, schedulers and most modules store them); tensors and other objects are left out.

    >>> constructor_arguments(torch.nn.CrossEntropyLoss(label_smoothing=0.1))["label_smoothing"]
    0.1
    """
    import inspect

    try:
        parameters = inspect.signature(type(obj)).parameters
    except (TypeError, ValueError):
        return {}
    found = {}
    for name, parameter in parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or name in _NOT_SETTINGS:
            continue
        value = _plain(getattr(obj, name, _SKIP))
        if value is not _SKIP:
            found[name] = value
    return found


def optimizer_settings(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The settings of ``optimizer``'s first parameter group (lr, weight decay, momentum...), plain values only.

    >>> optimizer_settings(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.9))["momentum"]
    0.9
    """
    groups = getattr(optimizer, "param_groups", None) or [{}]
    settings = {}
    for key, value in groups[0].items():
        value = _plain(value)
        if key not in ("params", "initial_lr") and value is not _SKIP:
            settings[key] = value
    initial = groups[0].get("initial_lr")  # a scheduler may already have moved lr: record the one given
    if isinstance(initial, float):
        settings["lr"] = initial
    return settings


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """``{"parameters": all, "trainable": requiring grad}``.

    >>> count_parameters(torch.nn.Linear(3, 2))
    {'parameters': 8, 'trainable': 8}
    """
    total = trainable = 0
    for parameter in model.parameters():
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return {"parameters": total, "trainable": trainable}


def used_config(
    config: dict[str, Any], *, optimizer: Any = None, criterion: Any = None, scheduler: Any = None,
) -> dict[str, Any]:
    """``config`` (a ``TrainingConfig.to_dict()``) with the settings that objects passed to the Trainer
    replaced rewritten to what those objects use, so ``config.yaml`` never shows a default that was not
    used; it stays a loadable ``TrainingConfig``.

    >>> sgd = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.9)
    >>> used = used_config({"optimizer": "AdamW", "lr": 0.001, "weight_decay": 0.0, "optimizer_params": {}},
    ...                    optimizer=sgd)
    >>> used["optimizer"], used["lr"], used["optimizer_params"]["momentum"]
    ('SGD', 0.1, 0.9)
    """
    used = dict(config)
    if optimizer is not None:
        settings = optimizer_settings(optimizer)
        used["optimizer"] = type(optimizer).__name__
        used["lr"] = settings.pop("lr", used.get("lr"))
        used["weight_decay"] = settings.pop("weight_decay", used.get("weight_decay"))
        used["optimizer_params"] = settings
    if criterion is not None:
        used["loss"] = getattr(criterion, "__name__", None) or type(criterion).__name__
        used["loss_params"] = constructor_arguments(criterion) if isinstance(criterion, torch.nn.Module) else {}
    if scheduler is not None:
        used["scheduler"] = type(scheduler).__name__
        used["scheduler_params"] = constructor_arguments(scheduler)
        used["warmup_steps"], used["warmup_ratio"] = 0, 0.0  # the object's own schedule is all there is
    return used


def objects_record(
    model: torch.nn.Module, *, optimizer: Any = None, criterion: Any = None, scheduler: Any = None,
    callbacks: Any = (),
) -> dict[str, Any]:
    """What a run was built from, by class: the model (and its parameter counts) always; the optimizer,
    criterion, scheduler and callbacks the user passed (with their plain settings).

    >>> objects_record(torch.nn.Linear(3, 2))["model"]
    {'class': 'torch.nn.modules.linear.Linear', 'parameters': 8, 'trainable': 8}
    """
    record: dict[str, Any] = {"model": {"class": qualified_name(model), **count_parameters(model)}}
    if optimizer is not None:
        record["optimizer"] = {"class": qualified_name(optimizer), **optimizer_settings(optimizer),
                               "param_groups": len(getattr(optimizer, "param_groups", []))}
    if criterion is not None:
        arguments = constructor_arguments(criterion) if isinstance(criterion, torch.nn.Module) else {}
        record["criterion"] = {"class": qualified_name(criterion), **arguments}
    if scheduler is not None:
        record["scheduler"] = {"class": qualified_name(scheduler), **constructor_arguments(scheduler)}
    if callbacks:
        record["callbacks"] = [qualified_name(callback) for callback in callbacks]
    return record


def run_config_yaml(used: dict[str, Any], objects: dict[str, Any]) -> str:
    """``config.yaml``: what was built from objects as a comment block (``TrainingConfig`` has no keys for
    them, and the file must stay loadable with ``TrainingConfig.from_yaml``), then the used config.

    >>> text = run_config_yaml({"lr": 0.1}, {"model": {"class": "m.Net", "parameters": 8}})
    >>> print(text)
    # built from objects (not from this config):
    #   model: {class: m.Net, parameters: 8}
    lr: 0.1
    <BLANKLINE>
    """
    import yaml

    lines = ["# built from objects (not from this config):"]
    for key, value in objects.items():
        shown = yaml.safe_dump({key: value}, default_flow_style=True, sort_keys=False, width=10_000).strip()
        lines.append(f"#   {shown[1:-1]}")
    return "\n".join(lines) + "\n" + yaml.safe_dump(used, sort_keys=False)
