"""Fills ``registry("losses")``: torch.nn's losses and those registered with ``register_loss``, listed and
fetched lazily through ``build_loss``'s own lookup (one name rule: case, ``_`` and a trailing "loss" ignored)."""

from __future__ import annotations

from ..registry import _first_line, registry
from .joint import JointLoss
from .registry import list_losses, loss_class

registry("losses").add_source(list_losses, loss_class, lambda name: _first_line(loss_class(name)))
registry("losses").register(JointLoss, help="weighted sum of mapped loss terms (the joint_loss section)")
