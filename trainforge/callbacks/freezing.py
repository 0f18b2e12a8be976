"""Freezing: ``LayerFreezer`` (Towhee's API) to freeze layers by name, index or slice; ``FreezeBatchNorm``
to keep BatchNorm statistics fixed; ``FreezeUnfreeze`` to train frozen modules from a given epoch on."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..engine import State
from ..errors import ConfigError

_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # per-group values a scheduler scales with the lr


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule at ``name``: a top-level child name or a dotted path ("backbone.layer4").

    Unknown names raise ``ConfigError`` listing the top-level layers and close module paths.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Linear(2, 1)))
    >>> resolve_module(net, "1.1")
    Linear(in_features=2, out_features=1, bias=True)
    """
    try:
        return model.get_submodule(name)
    except AttributeError:
        paths = [path for path, _ in model.named_modules() if path]
        close = difflib.get_close_matches(name, paths, n=3, cutoff=0.6)
        hint = f" Close module paths: {', '.join(close)}." if close else ""
        raise ConfigError(
            f"no layer named {name!r} in {type(model).__name__}.{hint} "
            f"Top-level layers: {', '.join(n for n, _ in model.named_children()) or 'none'}."
        ) from None


def _set_requires_grad(modules: Iterable[nn.Module], trainable: bool) -> None:
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(trainable)


def _status(module: nn.Module) -> str:
    flags = {p.requires_grad for p in module.parameters()}
    if flags == {False}:
        return "frozen"
    return "partially frozen" if flags == {True, False} else "unfrozen"


class LayerFreezer:
    """Freeze or unfreeze a model's layers by name, index or slice (Towhee's ``LayerFreezer``).

    "Layers" are the model's top-level children, indexed in ``named_children()`` order; ``by_names``
    and ``status`` also take dotted module paths. Freezing sets ``requires_grad=False``: freeze
    *before* building the optimizer (``build_optimizer`` takes only trainable parameters) and see
    ``FreezeBatchNorm`` for BatchNorm statistics, which ``requires_grad`` does not stop.

    >>> net = nn.Sequential()
    >>> net.add_module("stem", nn.Linear(4, 4)); net.add_module("body", nn.Linear(4, 4))
    >>> net.add_module("head", nn.Linear(4, 2))
    >>> freezer = LayerFreezer(net)
    >>> freezer.set_slice(-1)  # all but the last layer
    >>> freezer.show_frozen_layers()
    ['stem', 'body']
    >>> freezer.by_names(["body"], freeze=False)
    >>> freezer.status("stem"), freezer.status("body"), freezer.status(-1)
    ('frozen', 'unfrozen', 'unfrozen')
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layer_names = [name for name, _ in model.named_children()]
        self.layer_count = len(self.layer_names)

    def _by_index(self, index: int) -> nn.Module:
        if not isinstance(index, int) or not -self.layer_count <= index < self.layer_count:
            listed = ", ".join(f"{i}: {n}" for i, n in enumerate(self.layer_names))
            raise ConfigError(f"no layer at index {index!r}; the model has {self.layer_count} layers ({listed})")
        return self.model.get_submodule(self.layer_names[index])

    def _layer(self, layer: str | int) -> nn.Module:
        return resolve_module(self.model, layer) if isinstance(layer, str) else self._by_index(layer)

    def by_names(self, names: list[str], freeze: bool = True) -> None:
        """Freeze (or with ``freeze=False`` unfreeze) the layers or module paths in ``names``."""
        _set_requires_grad([resolve_module(self.model, n) for n in _as_list(names)], not freeze)

    def by_idx(self, idx: list[int], freeze: bool = True) -> None:
        """Freeze (or unfreeze) the top-level layers at indexes ``idx``; negative indexes count from the end."""
        _set_requires_grad([self._by_index(i) for i in _as_list(idx)], not freeze)

    def set_slice(self, slice_num: int, freeze: bool = True) -> None:
        """Freeze (or unfreeze) the layers ``layers[:slice_num]``, as Towhee does.

        ``set_slice(2)`` freezes the first two layers; ``set_slice(-1)`` freezes all layers but the
        last one (fine-tune the head only), ``set_slice(-2)`` all but the last two.
        """
        if not isinstance(slice_num, int) or isinstance(slice_num, bool):
            raise ConfigError(f"set_slice needs an integer, got {slice_num!r}")
        self.by_idx(list(range(self.layer_count))[:slice_num], freeze)

    def set_all(self, freeze: bool = True) -> None:
        """Freeze (or unfreeze) every parameter of the model."""
        _set_requires_grad([self.model], not freeze)

    def status(self, layer: str | int) -> str:
        """The state of a layer name, module path or index: "frozen", "unfrozen" or "partially frozen".

        A layer without parameters is "unfrozen".
        """
        return _status(self._layer(layer))

    def show_frozen_layers(self) -> list[str]:
        """Names of the top-level layers with at least one frozen parameter, in model order."""
        return [name for name, child in self.model.named_children() if _status(child) != "unfrozen"]


def _as_list(values: Any) -> list[Any]:
    if isinstance(values, (str, int)):
        return [values]
    return list(values)


# -- BatchNorm ---------------------------------------------------------------------------------------
def batchnorm_modules(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm module (1d/2d/3d, SyncBatchNorm and subclasses such as timm's) in ``model``."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def set_batchnorm_eval(model: nn.Module) -> None:
    """Put every BatchNorm module of ``model`` in eval mode; call it after each ``model.train()``."""
    for module in batchnorm_modules(model):
        module.train(False)


def freeze_batchnorm(model: nn.Module) -> list[nn.Module]:
    """Freeze every BatchNorm of ``model``: eval mode (running statistics fixed) and no gradients.

    Returns the modules. ``model.train()`` puts them back in training mode: re-apply with
    ``set_batchnorm_eval`` or let the ``FreezeBatchNorm`` callback do it.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    >>> [m.training for m in freeze_batchnorm(net)], net[1].weight.requires_grad
    ([False], False)
    """
    modules = batchnorm_modules(model)
    for module in modules:
        module.train(False)
        module.requires_grad_(False)
    return modules


class FreezeBatchNorm:
    """Freeze ``model``'s BatchNorm modules now (``freeze_batchnorm``) and keep them in eval mode.

    The mechanism: at every ``batch_start`` (before the step function runs) each BatchNorm module
    found at construction that is back in training mode — because the trainer called
    ``model.train()`` at an epoch start or after evaluation — is put in eval mode again. The check is
    one attribute read per BatchNorm module per batch; nothing is patched. A loop that calls
    ``model.train()`` inside its step function must call ``set_batchnorm_eval`` itself after it.

    >>> from trainforge.engine import Recipe
    >>> net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    >>> recipe = Recipe(lambda x: {"output": net(x)}, [torch.randn(4, 3)])
    >>> recipe.callbacks.add(type("Train", (), {"on_epoch_start": lambda self, s: net.train()})(), "prologue")
    >>> recipe.callbacks.add(FreezeBatchNorm(net))
    >>> _ = recipe.run(1)
    >>> net[1].running_mean
    tensor([0., 0., 0.])
    """

    group = "epilogue"  # its batch_start runs last, right before the step function

    def __init__(self, model: nn.Module) -> None:
        self.modules = freeze_batchnorm(model)

    def on_batch_start(self, state: State) -> None:
        for module in self.modules:
            if module.training:
                module.train(False)


# -- scheduled unfreezing ----------------------------------------------------------------------------
OptimizerLike = torch.optim.Optimizer | Callable[[], torch.optim.Optimizer]


class FreezeUnfreeze:
    """Freeze ``modules`` now; at the start of epoch ``unfreeze_at_epoch`` make them trainable again and
    add their parameters to the optimizer as a new param group with learning rate ``lr``.

    ``lr`` defaults to 0.1 × the first group's initial lr. With a ``scheduler``, the new group follows
    the same schedule, scaled to ``lr``: its per-group lists (``base_lrs``, ``lr_lambdas``...) are
    extended and the group starts at ``lr`` × the schedule's current factor. ``optimizer`` and
    ``scheduler`` may be zero-argument callables returning them, when the trainer builds them later.

    Order, because the optimizer is built from trainable parameters and resumed from a state_dict
    that already holds the extra group:

    1. build the model, then ``FreezeUnfreeze(...)`` (it freezes), then the optimizer and scheduler;
    2. on resume, ``load_state_dict`` this callback *before* the optimizer and scheduler states: when
       the saved run had unfrozen, it unfreezes and adds the group again so that
       ``optimizer.load_state_dict`` finds the same groups. Callback states load in callback order,
       so by default it joins the ``prologue`` group, ahead of an ``Optimizer`` callback in ``middle``;
       a loop whose optimizer callback is itself in ``prologue`` must load this state first.

    Unfreezing is idempotent: parameters already in the optimizer are not added twice.

    >>> from trainforge.engine import Recipe
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    >>> unfreeze = FreezeUnfreeze(net, lambda: opt, ["0"], unfreeze_at_epoch=1, lr=0.01)
    >>> opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    >>> recipe = Recipe(lambda x: None, [0])
    >>> recipe.callbacks.add(unfreeze)
    >>> _ = recipe.run(2)
    >>> [g["lr"] for g in opt.param_groups], unfreeze.state_dict()
    ([0.1, 0.01], {'unfrozen': True})
    """

    group = "prologue"  # its state must load before the optimizer's (see above)

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerLike,
        modules: list[str],
        unfreeze_at_epoch: int,
        lr: float | None = None,
        scheduler: Any = None,
    ) -> None:
        if not isinstance(unfreeze_at_epoch, int) or unfreeze_at_epoch < 0:
            raise ConfigError(f"FreezeUnfreeze: unfreeze_at_epoch must be an integer >= 0, got {unfreeze_at_epoch!r}")
        if lr is not None and lr < 0:
            raise ConfigError(f"FreezeUnfreeze: lr must be >= 0, got {lr!r}")
        self.names = _as_list(modules)
        self.modules = [resolve_module(model, name) for name in self.names]
        self._optimizer = optimizer
        self._scheduler = scheduler
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.lr = lr
        self.unfrozen = False
        _set_requires_grad(self.modules, False)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer if isinstance(self._optimizer, torch.optim.Optimizer) else self._optimizer()

    @property
    def scheduler(self) -> Any:
        scheduler = self._scheduler
        return scheduler() if callable(scheduler) and not hasattr(scheduler, "state_dict") else scheduler

    def _parameters(self) -> list[nn.Parameter]:
        unique = {id(p): p for m in self.modules for p in m.parameters()}
        return list(unique.values())

    def on_fit_start(self, state: State) -> None:
        if self.unfrozen:
            return
        in_optimizer = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        if any(id(p) in in_optimizer for p in self._parameters()):
            raise ConfigError(
                f"FreezeUnfreeze: parameters of {self.names} are already in the optimizer, so they cannot get "
                "their own param group. Create FreezeUnfreeze before building the optimizer, and build it from "
                "trainable parameters only (build_optimizer(name, model, lr) does)."
            )

    def on_epoch_start(self, state: State) -> None:
        if not self.unfrozen and state.epoch >= self.unfreeze_at_epoch:
            self.unfreeze()

    def unfreeze(self) -> None:
        """Make the modules trainable and add their parameters not yet optimized as a new group, now."""
        _set_requires_grad(self.modules, True)
        optimizer = self.optimizer
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        params = [p for p in self._parameters() if id(p) not in in_optimizer]
        self.unfrozen = True
        if not params:
            return
        first = optimizer.param_groups[0]
        reference = first.get("initial_lr", first["lr"])
        base_lr = self.lr if self.lr is not None else 0.1 * reference
        scale = base_lr / reference if reference else 0.0
        group: dict[str, Any] = {"params": params, "lr": first["lr"] * scale if reference else base_lr}
        for key, value in first.items():  # keys a scheduler added (initial_lr, max_lr, momentum...)
            if key not in optimizer.defaults and key not in group:
                group[key] = value * scale if key in _LR_KEYS else value
        optimizer.add_param_group(group)
        scheduler = self.scheduler
        if scheduler is not None:
            _extend_scheduler(scheduler, len(optimizer.param_groups), base_lr, scale, group["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"unfrozen": self.unfrozen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; if the saved run had unfrozen, unfreeze and add the group now (before the optimizer loads)."""
        if state["unfrozen"] and not self.unfrozen:
            self.unfreeze()


def _extend_scheduler(scheduler: Any, groups: int, base_lr: float, scale: float, lr: float) -> None:
    """Give ``scheduler``'s per-group lists an entry for the group just added, so it is scheduled too."""
    for name in ("base_lrs", "min_lrs", "max_lrs", "_last_lr"):
        values = getattr(scheduler, name, None)
        if isinstance(values, list) and len(values) == groups - 1:
            values.append({"base_lrs": base_lr, "_last_lr": lr}.get(name, values[0] * scale))
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if isinstance(lambdas, list) and len(lambdas) == groups - 1:
        lambdas.append(lambdas[0])
