"""Per-sample CPU transforms (albumentations): ``augment`` (random) then ``transform`` (always), applied to
the image and, consistently, to its mask and boxes; and the conversion of the result to tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

Transform = Callable[..., dict[str, Any]]


def as_transform(value: Any, where: str = "transform") -> Transform | None:
    """An albumentations-style callable (keywords in, dict out) from ``value``: None, one transform, a
    ``Compose``, a list of transforms (composed in order), or specs as YAML writes them
    (``{"name": "OneOf", "params": {"transforms": [...], "p": 0.5}}``, built from the transforms registry).

    >>> as_transform([{"name": "HorizontalFlip", "params": {"p": 1.0}}, "ToGray"]).transforms[1].__class__.__name__
    'ToGray'
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        import albumentations as A

        return A.Compose([as_transform(v, f"{where}[{i}]") for i, v in enumerate(value)])
    if isinstance(value, str) or (isinstance(value, dict) and "name" in value):  # as written in YAML
        from ..registry import get_registry

        spec = {"name": value} if isinstance(value, str) else value
        params = dict(spec.get("params") or {})
        for key in ("transforms", "transform"):  # Compose / OneOf hold nested specs
            if key in params:
                params[key] = [as_transform(v, f"{where}.{key}[{i}]") for i, v in enumerate(params[key])]
        return get_registry("transforms").build(spec["name"], where, **params)
    if not callable(value):
        raise ConfigError(
            f"{where} must be an albumentations transform, a list of them or None, got {type(value).__name__} "
            f"{value!r}; e.g. albumentations.Compose([albumentations.HorizontalFlip()])"
        )
    return value


def build_pipeline(augment: Any, transform: Any, *, boxes: bool = False) -> Transform | None:
    """One albumentations call for a sample: ``augment`` first (TorchOk's order), then ``transform``.

    With ``boxes`` the outer ``Compose`` carries the box parameters (``pascal_voc``: absolute xyxy,
    labels in ``labels``), so every geometric step moves the boxes; boxes that leave the image go.

    >>> import albumentations as A, numpy as np
    >>> pipe = build_pipeline([A.HorizontalFlip(p=1.0)], None, boxes=True)
    >>> out = pipe(image=np.zeros((10, 20, 3), np.uint8), bboxes=np.array([[0., 0., 5., 5.]]), labels=np.array([1]))
    >>> out["bboxes"].tolist(), out["labels"].tolist()
    ([[15.0, 0.0, 20.0, 5.0]], [1])
    """
    steps = [t for t in (as_transform(augment, "augment"), as_transform(transform, "transform")) if t is not None]
    if not steps:
        return None
    if len(steps) == 1 and not boxes:
        return steps[0]
    import albumentations as A

    if not all(isinstance(step, (A.BasicTransform, A.BaseCompose)) for step in steps):
        if boxes:
            raise ConfigError("transform/augment of a detection data set must be albumentations transforms, so "
                              "boxes move with the image; got " + ", ".join(type(s).__name__ for s in steps))
        return _Chain(steps)
    params = A.BboxParams(format="pascal_voc", label_fields=["labels"]) if boxes else None
    return A.Compose(steps, bbox_params=params)


def seedable_steps(pipeline: Any) -> list[Any]:
    """Every albumentations node of ``pipeline`` (composes before their children), for ``seed_steps``."""
    found, pending = [], [pipeline]
    while pending:
        node = pending.pop(0)
        if hasattr(node, "set_random_seed"):
            found.append(node)
        pending.extend(getattr(node, "transforms", None) or getattr(node, "steps", None) or [])
    return found


def seed_steps(steps: list[Any], seed: int) -> None:
    """Seed each albumentations step from ``seed``, each differently. albumentations 2 draws from its own
    generators, not the global ones the loader seeds per sample; without this its draws would depend on
    the worker and would not repeat after a resume. (``Compose.set_random_seed`` gives every child the
    same seed, which would make their draws agree.)"""
    for offset, step in enumerate(steps):
        step.set_random_seed((seed + offset * 0x9E3779B1) % 2**32)


class _Chain:
    """Plain callables in order (a user's function is not an albumentations step)."""

    def __init__(self, steps: Sequence[Transform]) -> None:
        self.steps = list(steps)

    def __call__(self, **sample: Any) -> dict[str, Any]:
        for step in self.steps:
            sample = step(**sample)
        return sample


def image_tensor(image: Any) -> torch.Tensor:
    """CHW float32: uint8 HWC arrays are scaled to [0, 1]; tensors from ``ToTensorV2`` are kept (uint8 scaled).

    >>> white = image_tensor(np.full((2, 3, 1), 255, np.uint8))
    >>> white.shape, float(white.max())
    (torch.Size([1, 2, 3]), 1.0)
    """
    if isinstance(image, torch.Tensor):
        return image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    array = np.ascontiguousarray(array.transpose(2, 0, 1))
    if not array.flags.writeable:  # a view into the read-only cache: torch needs its own memory
        array = array.copy()
    tensor = torch.from_numpy(array)
    return tensor.float().div_(255.0) if tensor.dtype == torch.uint8 else tensor.float()


def mask_tensor(mask: Any) -> torch.Tensor:
    return mask.long() if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask).astype(np.int64))


def boxes_tensor(boxes: Any) -> torch.Tensor:
    array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return torch.from_numpy(array)


def list_albumentations() -> list[str]:
    """Names of albumentations' transform and compose classes (imports albumentations)."""
    import albumentations as A

    return [name for name in dir(A) if _is_albumentation(getattr(A, name, None))]


def get_albumentation(name: str) -> Any:
    import albumentations as A

    found = getattr(A, name, None)
    if not _is_albumentation(found):
        raise KeyError(name)
    return found


def _is_albumentation(obj: Any) -> bool:
    import albumentations as A

    return (isinstance(obj, type) and issubclass(obj, (A.BasicTransform, A.BaseCompose))
            and not obj.__name__.startswith("_"))
