"""How ``Trainer(...)`` reads its arguments in the three call styles users bring: ours, Kornia's positional
order, and Towhee's keyword names — unambiguous, with an error naming the argument for anything else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .errors import ConfigError

#: Kornia's positional order after the model.
KORNIA_ORDER: tuple[str, ...] = ("train_data", "valid_data", "criterion", "optimizer", "scheduler", "config")

#: Keyword names of the seed libraries and the argument each one is.
SEED_KEYWORDS: dict[str, str] = {
    "train_dataloader": "train_data",  # Kornia
    "valid_dataloader": "valid_data",  # Kornia
    "train_dataset": "train_data",  # Towhee
    "eval_dataset": "valid_data",  # Towhee
    "training_config": "config",  # Towhee
}


def is_config(value: Any) -> bool:
    """A ``TrainingConfig`` or a plain dict of its fields (not a dict of validation data sets)."""
    from .training_config import TrainingConfig

    if isinstance(value, TrainingConfig):
        return True
    return isinstance(value, Mapping) and not any(_is_data(v) for v in value.values())


def _is_data(value: Any) -> bool:
    from torch.utils.data import DataLoader, Dataset

    return isinstance(value, (Dataset, DataLoader))


def check_model(model: Any) -> None:
    """``TypeError`` unless ``model`` is an ``nn.Module`` instance; a class gets the call to make.

    >>> check_model(torch.nn.Linear)
    Traceback (most recent call last):
    ...
    TypeError: model must be a torch.nn.Module, got the class Linear: pass an instance, Linear(...)
    """
    if isinstance(model, torch.nn.Module):
        return
    if isinstance(model, type):
        raise TypeError(f"model must be a torch.nn.Module, got the class {model.__name__}: pass an instance, "
                        f"{model.__name__}(...)")
    raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _data_sequence(value: Any) -> bool:
    """A non-empty list or tuple of Datasets/DataLoaders (several validation sets), not a list of samples."""
    return isinstance(value, (list, tuple)) and bool(value) and all(_is_data(v) for v in value)


def _check(name: str, value: Any, position: int | None) -> None:
    """The value given for ``name`` has the kind that argument takes."""
    if value is None:
        return
    where = f"argument {position + 2} ({name})" if position is not None else name
    if name in ("train_data", "valid_data"):
        if isinstance(value, torch.Tensor):  # iterable, but its rows are not (input, target) samples
            raise ConfigError(f"Trainer {where} is a tensor of shape {list(value.shape)}, not a data set: pass "
                              "TensorDataset(inputs, targets) (torch.utils.data) or a DataLoader over one")
        if isinstance(value, Mapping):  # several validation sets; training takes one
            ok = name == "valid_data" and not is_config(value)
        elif _data_sequence(value):
            if name == "train_data":
                raise ConfigError(f"Trainer {where} is a list of {len(value)} data sets; training takes one: "
                                  "join them with torch.utils.data.ConcatDataset([...])")
            ok = True  # several validation sets, as Lightning's val_dataloaders=[...]: named by position
        else:
            if isinstance(value, (list, tuple)) and any(_is_data(v) for v in value):
                raise ConfigError(f"Trainer {where} mixes data sets with other values: pass one Dataset or "
                                  "DataLoader, or a list (or dict {name: data}) of data sets only")
            ok = _is_data(value) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes)))
        expected = "a Dataset or a DataLoader"
    elif name == "criterion":
        if isinstance(value, type):  # a class is callable: calling it with (output, target) fails inside torch
            raise ConfigError(f"Trainer {where} is the class {value.__name__}, not a loss: pass an instance, "
                              f"{value.__name__}()")
        ok = callable(value) and not isinstance(value, torch.optim.Optimizer)
        expected = "a loss function or module"
    elif name == "optimizer":
        if isinstance(value, type):
            raise ConfigError(f"Trainer {where} is the class {value.__name__}, not an optimizer: pass an instance, "
                              f"{value.__name__}(model.parameters(), lr=...), or leave it out for config.optimizer")
        ok = isinstance(value, torch.optim.Optimizer) or (hasattr(value, "step") and hasattr(value, "param_groups"))
        expected = "a torch.optim.Optimizer"
    elif name == "scheduler":
        ok = hasattr(value, "step") and not isinstance(value, torch.optim.Optimizer)
        expected = "a learning-rate scheduler"
    else:
        ok = is_config(value)
        expected = "a TrainingConfig or a dict of its fields"
    if not ok:
        raise ConfigError(
            f"Trainer {where}: expected {expected}, got {type(value).__name__}. The call styles are "
            "Trainer(model, config, train_data=..., valid_data=...) and Kornia's "
            "Trainer(model, train_dataloader, valid_dataloader, criterion, optimizer, scheduler, config)."
        )


def resolve_trainer_args(args: tuple[Any, ...], given: dict[str, Any], seed_names: dict[str, Any]) -> dict[str, Any]:
    """The Trainer's arguments by our names, from positional ``args`` after the model, our keywords
    ``given`` and the seed libraries' keywords ``seed_names``.

    One positional argument that is a config (or None) is ours: ``Trainer(model, config)``. Otherwise
    positional arguments follow Kornia's order: train loader, valid loader, criterion, optimizer,
    scheduler, config. Each value is checked against the argument it lands in, and an argument given
    twice (by position and by keyword, or by two names) is an error.

    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    >>> none = dict.fromkeys(["config", "train_data", "valid_data", "criterion", "optimizer", "scheduler"])
    >>> sorted(k for k, v in resolve_trainer_args((data, data, torch.nn.CrossEntropyLoss()), none, {}).items()
    ...        if v is not None)
    ['criterion', 'train_data', 'valid_data']
    >>> resolve_trainer_args(({"max_epochs": 2},), none, {"train_dataset": data})["train_data"] is data
    True
    """
    values = dict(given)
    sources = {name: f"{name}=" for name, value in given.items() if value is not None}

    def put(name: str, value: Any, source: str) -> None:
        if name in sources and value is not None:
            raise ConfigError(f"Trainer got {name} twice: as {sources[name]} and as {source}; give it once")
        if value is not None:
            values[name], sources[name] = value, source

    for key, value in seed_names.items():
        if key not in SEED_KEYWORDS:
            known = ", ".join([*given, "callbacks", *SEED_KEYWORDS])
            raise TypeError(f"Trainer() got an unexpected keyword argument {key!r}; accepted: {known}")
        put(SEED_KEYWORDS[key], value, f"{key}=")
    if len(args) > len(KORNIA_ORDER):
        raise TypeError(
            f"Trainer() takes at most {len(KORNIA_ORDER) + 1} positional arguments (model, {', '.join(KORNIA_ORDER)}),"
            f" got {len(args) + 1}"
        )
    if len(args) == 1 and (args[0] is None or is_config(args[0])):
        put("config", args[0], "the second positional argument")
    else:
        if args and is_config(args[0]):
            raise ConfigError(
                "Trainer(model, config, ...): after the config, pass the rest by keyword "
                "(train_data=..., valid_data=..., criterion=...); Kornia's positional order puts the config last"
            )
        for position, (name, value) in enumerate(zip(KORNIA_ORDER, args)):
            _check(name, value, position)
            put(name, value, f"positional argument {position + 2}")
    for name in KORNIA_ORDER:
        if not sources.get(name, "").startswith("positional"):
            _check(name, values.get(name), None)
    if _data_sequence(values.get("valid_data")):  # Lightning's list of validation loaders: valid/, valid_1/...
        values["valid_data"] = {str(i): data for i, data in enumerate(values["valid_data"])}
    return values


OUR_NAMES: tuple[str, ...] = ("config", "train_data", "valid_data", "criterion", "optimizer", "scheduler")


def as_keywords(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``Trainer(...)`` arguments after the model, all as our keywords (for Trainer subclasses such as the
    tasks that need the config before calling ``Trainer.__init__``); other keywords pass through.

    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    >>> sorted(k for k, v in as_keywords((data, None, None, None, None, {"max_epochs": 1}), {"top_k": 3}).items()
    ...        if v is not None)
    ['config', 'top_k', 'train_data']
    """
    given = {name: kwargs.get(name) for name in OUR_NAMES}
    seed_names = {k: v for k, v in kwargs.items() if k in SEED_KEYWORDS}
    rest = {k: v for k, v in kwargs.items() if k not in OUR_NAMES and k not in SEED_KEYWORDS}
    return {**resolve_trainer_args(args, given, seed_names), **rest}
