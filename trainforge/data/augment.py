"""Batched augmentation on the device (kornia's ``AugmentationSequential``): the Trainer's ``augmentations``
stage, applied to the image batch alone or, with ``apply``, to a batch's masks and boxes consistently."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

_KEYS = {"input": "input", "mask": "mask", "boxes": "bbox_xyxy"}


def _build(spec: Any, where: str) -> nn.Module:
    """An augmentation from a module, or from ``{"name": ..., "params": {...}}`` / a name (the registry)."""
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if isinstance(spec, Mapping) and "name" in spec:
        from ..registry import get_registry

        return get_registry("augmentations").build(spec["name"], where, **dict(spec.get("params") or {}))
    raise ConfigError(f"{where} must be a kornia augmentation or {{name: ..., params: {{...}}}}, got {spec!r}")


class BatchAugment(nn.Module):
    """Kornia augmentations applied to a whole batch on its device.

    As the Trainer's ``augmentations`` stage it receives ``batch["input"]``; ``apply(batch)`` also moves a
    segmentation ``target`` (``N x H x W`` mask) or detection targets (a list of ``{"boxes", "labels"}``)
    with the images. Random draws come from the global torch generator, which checkpoints save and restore,
    so a resumed run augments exactly as an uninterrupted one.

    >>> import kornia.augmentation as K
    >>> flip = BatchAugment([K.RandomHorizontalFlip(p=1.0)], targets="mask")
    >>> batch = {"input": torch.arange(4.0).reshape(1, 1, 1, 4), "target": torch.tensor([[[0, 1, 2, 3]]])}
    >>> out = flip.apply(batch)
    >>> out["input"].flatten().tolist(), out["target"].flatten().tolist()
    ([3.0, 2.0, 1.0, 0.0], [3, 2, 1, 0])
    """

    def __init__(self, augmentations: Sequence[Any], targets: str | None = None, same_on_batch: bool = False) -> None:
        super().__init__()
        if targets not in (None, "mask", "boxes"):
            raise ConfigError(f"BatchAugment targets must be None, 'mask' or 'boxes', got {targets!r}")
        import kornia.augmentation as K

        steps = [_build(spec, f"augmentations[{i}]") for i, spec in enumerate(augmentations)]
        self.targets = targets
        keys = ["input"] + ([_KEYS[targets]] if targets else [])
        self.images = K.AugmentationSequential(*steps, data_keys=["input"], same_on_batch=same_on_batch)
        self.paired = K.AugmentationSequential(*steps, data_keys=keys, same_on_batch=same_on_batch) if targets else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.images(x)

    def apply(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with ``input`` and (when ``targets`` is set) its masks or boxes augmented together."""
        if self.paired is None:
            return {**batch, "input": self.images(batch["input"])}
        if self.targets == "mask":
            mask = batch["target"]
            x, moved = self.paired(batch["input"], mask.unsqueeze(1).float())
            return {**batch, "input": x, "target": moved.squeeze(1).round().to(mask.dtype)}
        boxes = [t["boxes"] for t in batch["target"]]
        x, moved = self.paired(batch["input"], boxes)
        targets = [{**t, "boxes": b} for t, b in zip(batch["target"], moved)]
        return {**batch, "input": x, "target": targets}
