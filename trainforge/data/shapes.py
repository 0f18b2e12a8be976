"""Generated shapes, made on the fly (no download), deterministic by seed: ``make_shapes`` (three kinds,
a TensorDataset) and the vision-task data sets — more kinds, per-image masks (segmentation), boxes
(detection, several objects or none per image) and retrieval with classes held out of training."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..errors import ConfigError
from ..registry import registry

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")


def _draw(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    radius = rng.uniform(0.18, 0.32) * size
    cy, cx = rng.uniform(radius, size - radius, 2)
    if kind == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    elif kind == 1:
        mask = (np.abs(yy - cy) <= radius * 0.85) & (np.abs(xx - cx) <= radius * 0.85)
    else:
        top = cy - radius
        mask = (yy >= top) & (yy <= cy + radius) & (np.abs(xx - cx) <= (yy - top) * 0.6)
    return mask.astype(np.float32)


def make_shapes(num_samples: int = 300, image_size: int = 32, seed: int = 0, channels: int = 3) -> TensorDataset:
    """Images of one circle, square or triangle on noise; labels index ``SHAPE_CLASSES``.

    Images are float32 ``(channels, image_size, image_size)`` in [0, 1], with a random color per image.

    >>> ds = make_shapes(6, image_size=16)
    >>> tuple(ds[0][0].shape), int(ds.tensors[1].max()) <= 2
    ((3, 16, 16), True)
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(num_samples) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    images = np.empty((num_samples, channels, image_size, image_size), dtype=np.float32)
    for i, kind in enumerate(labels):
        mask = _draw(int(kind), image_size, rng)
        color = rng.uniform(0.5, 1.0, (channels, 1, 1)).astype(np.float32)
        noise = rng.uniform(0.0, 0.3, (channels, image_size, image_size)).astype(np.float32)
        images[i] = np.clip(noise + mask[None] * color, 0.0, 1.0)
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


# -- the vision-task variants: more kinds, masks, boxes, held-out retrieval classes ------------------
#: Every kind the task variants draw; the first three are ``SHAPE_CLASSES``.
SHAPE_KINDS: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "plus", "ring", "frame", "cross", "semicircle", "bar",
)


def shape_mask(kind: str, size: int, cy: float, cx: float, radius: float, angle: float = 0.0) -> np.ndarray:
    """The boolean ``(size, size)`` mask of one shape of ``kind`` centred at ``(cy, cx)``, turned by
    ``angle`` radians.

    >>> int(shape_mask("square", 8, 4.0, 4.0, 2.0).sum())  # |dy|, |dx| <= 1.7: a 3x3 block
    9
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    if angle:
        dy, dx = np.cos(angle) * dy - np.sin(angle) * dx, np.sin(angle) * dy + np.cos(angle) * dx
    r = radius
    if kind == "circle":
        return dy**2 + dx**2 <= r**2
    if kind == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if kind == "triangle":
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) * 0.6)
    if kind == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    if kind == "plus":
        return ((np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r)) | ((np.abs(dx) <= r * 0.3) & (np.abs(dy) <= r))
    if kind == "ring":
        d = dy**2 + dx**2
        return (d <= r**2) & (d >= (0.55 * r) ** 2)
    if kind == "frame":
        outer = (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
        return outer & ~((np.abs(dy) <= r * 0.45) & (np.abs(dx) <= r * 0.45))
    if kind == "cross":
        return (np.abs(dy - dx) <= r * 0.35) & (np.abs(dy + dx) <= r * 1.4) | (
            (np.abs(dy + dx) <= r * 0.35) & (np.abs(dy - dx) <= r * 1.4))
    if kind == "semicircle":
        return (dy**2 + dx**2 <= r**2) & (dy >= 0)
    if kind == "bar":
        return (np.abs(dy) <= r * 0.35) & (np.abs(dx) <= r)
    raise ConfigError(f"unknown shape kind {kind!r}; kinds: {', '.join(SHAPE_KINDS)}")


def _kinds(num_kinds: int | None, kinds: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if kinds is not None:
        unknown = [k for k in kinds if k not in SHAPE_KINDS]
        if unknown or not kinds:
            raise ConfigError(f"kinds={list(kinds)!r}: unknown {unknown}; choose from {', '.join(SHAPE_KINDS)}")
        return tuple(kinds)
    count = len(SHAPE_CLASSES) if num_kinds is None else num_kinds
    if not isinstance(count, int) or not 1 <= count <= len(SHAPE_KINDS):
        raise ConfigError(f"num_kinds must be an int in 1..{len(SHAPE_KINDS)}, got {num_kinds!r}")
    return SHAPE_KINDS[:count]


def _check_sizes(num_samples: int, image_size: int) -> None:
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be a positive int, got {num_samples!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ConfigError(f"image_size must be an int >= 8, got {image_size!r}")


def _canvas(rng: np.random.Generator, channels: int, size: int) -> np.ndarray:
    return rng.uniform(0.0, 0.3, (channels, size, size)).astype(np.float32)


def _paint(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    color = rng.uniform(0.5, 1.0, (image.shape[0], 1)).astype(np.float32)
    image[:, mask] = np.clip(image[:, mask] * 0.2 + color, 0.0, 1.0)


def _single_shape(kind: str, size: int, channels: int, rng: np.random.Generator, hard: bool = False) -> np.ndarray:
    """One shape on noise; ``hard``: of more varied size, on a random colour gradient, inverted half
    of the time, so raw pixels say little about the kind (the retrieval data)."""
    image = _canvas(rng, channels, size)
    if hard:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        direction = rng.uniform(-1, 1, 2)
        gradient = (direction[0] * yy + direction[1] * xx)[None] * rng.uniform(0.1, 0.4, (channels, 1, 1))
        image = np.clip(image + gradient.astype(np.float32) + 0.2, 0.0, 1.0)
    radius = rng.uniform(0.2, 0.38) * size if not hard else rng.uniform(0.18, 0.42) * size
    cy, cx = rng.uniform(radius, size - radius, 2)
    _paint(image, shape_mask(kind, size, cy, cx, radius), rng)
    if hard and rng.uniform() < 0.5:  # dark on light half of the time: pixel distances follow polarity
        image = 1.0 - image
    return image


def _scene(kinds: tuple[str, ...], size: int, channels: int, count: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]]]:
    """An image of ``count`` shapes placed apart, its label mask (0 = background) and (label, mask) per
    shape as finally visible (later shapes are drawn over earlier ones)."""
    image = _canvas(rng, channels, size)
    labels = np.zeros((size, size), dtype=np.int64)
    placed: list[tuple[float, float, float]] = []
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(count):
        for _attempt in range(20):  # rejection sampling keeps shapes mostly apart
            radius = rng.uniform(0.12, 0.22) * size
            cy, cx = rng.uniform(radius, size - radius, 2)
            if all((cy - y) ** 2 + (cx - x) ** 2 > (radius + r) ** 2 for y, x, r in placed):
                break
        placed.append((cy, cx, radius))
        label = int(rng.integers(len(kinds))) + 1
        mask = shape_mask(kinds[label - 1], size, cy, cx, radius)
        _paint(image, mask, rng)
        labels[mask] = label
        objects.append((label, mask))
    return image, labels, objects


def _albumentations(fn: Any, image: torch.Tensor, **targets: Any) -> dict[str, Any]:
    """Apply an albumentations callable (``augment`` or ``transform``) to a CHW tensor image."""
    result = fn(image=image.permute(1, 2, 0).numpy(), **targets)
    out = result["image"]
    if not isinstance(out, torch.Tensor):  # HWC numpy back to a CHW tensor (ToTensorV2 does it itself)
        out = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)
    result["image"] = out
    return result


class _ShapesBase(Dataset):
    """In-memory generated images; ``augment`` then ``transform`` (albumentations) per sample."""

    def __init__(self, transform: Any = None, augment: Any = None) -> None:
        self.transform, self.augment = transform, augment

    def _apply(self, image: torch.Tensor, **targets: Any) -> dict[str, Any]:
        result: dict[str, Any] = {"image": image, **targets}
        for fn in (self.augment, self.transform):
            if fn is not None:
                result = _albumentations(fn, result.pop("image"), **result)
        return result


class ShapesClassification(_ShapesBase):
    """One shape per image, among the first ``num_kinds`` of ``SHAPE_KINDS`` (or the named ``kinds``).

    >>> ds = ShapesClassification(8, image_size=16, num_kinds=5)
    >>> ds.classes[:2], tuple(ds[0]["input"].shape), ds[0]["target"].dtype
    (('circle', 'square'), (3, 16, 16), torch.int64)
    """

    def __init__(self, num_samples: int = 300, image_size: int = 32, seed: int = 0, num_kinds: int | None = None,
                 kinds: tuple[str, ...] | list[str] | None = None, channels: int = 3,
                 transform: Any = None, augment: Any = None) -> None:
        super().__init__(transform, augment)
        _check_sizes(num_samples, image_size)
        self.classes = _kinds(num_kinds, kinds)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        rng = np.random.default_rng(seed)
        labels = np.arange(num_samples) % len(self.classes)
        rng.shuffle(labels)
        images = np.stack([_single_shape(self.classes[k], image_size, channels, rng) for k in labels])
        self.images, self.targets = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.images[index]
        if self.augment is not None or self.transform is not None:
            image = self._apply(image)["image"]
        return {"input": image, "target": self.targets[index]}


class ShapesSegmentation(_ShapesBase):
    """Images of 1..``max_objects`` shapes with an int64 mask per image: 0 is background, ``k`` is
    ``classes[k]``.

    >>> ds = ShapesSegmentation(4, image_size=16)
    >>> ds.classes, tuple(ds[0]["target"].shape), ds[0]["target"].dtype
    (('background', 'circle', 'square', 'triangle'), (16, 16), torch.int64)
    """

    def __init__(self, num_samples: int = 300, image_size: int = 48, seed: int = 0, max_objects: int = 3,
                 num_kinds: int | None = None, kinds: tuple[str, ...] | list[str] | None = None, channels: int = 3,
                 transform: Any = None, augment: Any = None) -> None:
        super().__init__(transform, augment)
        _check_sizes(num_samples, image_size)
        if not isinstance(max_objects, int) or max_objects < 1:
            raise ConfigError(f"max_objects must be a positive int, got {max_objects!r}")
        kinds = _kinds(num_kinds, kinds)
        self.classes = ("background", *kinds)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        rng = np.random.default_rng(seed)
        scenes = [_scene(kinds, image_size, channels, int(rng.integers(1, max_objects + 1)), rng)
                  for _ in range(num_samples)]
        self.images = torch.from_numpy(np.stack([s[0] for s in scenes]))
        self.masks = torch.from_numpy(np.stack([s[1] for s in scenes]))

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.images[index], self.masks[index]
        if self.augment is not None or self.transform is not None:
            result = self._apply(image, mask=mask.numpy())
            image, mask = result["image"], torch.as_tensor(result["mask"], dtype=torch.int64)
        return {"input": image, "target": mask}


class ShapesDetection(_ShapesBase):
    """Images of 0..``max_objects`` shapes (``empty_fraction`` of them with none) and their boxes:
    ``target = {"boxes": float32 [N, 4] xyxy pixels, "labels": int64 [N]}``, labels ``1..K`` index
    ``classes`` (``classes[0]`` is the background, torchvision's convention). A box bounds the visible
    part of its shape; a shape hidden entirely by later ones is dropped.

    >>> ds = ShapesDetection(6, image_size=32, empty_fraction=0.5)
    >>> sorted(ds[0]["target"]), ds[0]["target"]["boxes"].dtype
    (['boxes', 'labels'], torch.float32)
    """

    def __init__(self, num_samples: int = 300, image_size: int = 64, seed: int = 0, max_objects: int = 3,
                 empty_fraction: float = 0.1, num_kinds: int | None = None,
                 kinds: tuple[str, ...] | list[str] | None = None, channels: int = 3,
                 transform: Any = None, augment: Any = None) -> None:
        super().__init__(transform, augment)
        _check_sizes(num_samples, image_size)
        if not 0.0 <= empty_fraction <= 1.0:
            raise ConfigError(f"empty_fraction must be in [0, 1], got {empty_fraction!r}")
        kinds = _kinds(num_kinds, kinds)
        self.classes = ("background", *kinds)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        rng = np.random.default_rng(seed)
        images, self.targets = [], []
        for _ in range(num_samples):
            count = 0 if rng.uniform() < empty_fraction else int(rng.integers(1, max_objects + 1))
            image, labels, objects = _scene(kinds, image_size, channels, count, rng)
            boxes, classes = [], []
            for label, mask in objects:
                visible = mask & (labels == label)
                if visible.any():
                    ys, xs = np.nonzero(visible)
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    classes.append(label)
            images.append(image)
            self.targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                 "labels": torch.tensor(classes, dtype=torch.int64)})
        self.images = torch.from_numpy(np.stack(images))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, target = self.images[index], self.targets[index]
        if self.augment is not None or self.transform is not None:
            result = self._apply(image, bboxes=target["boxes"].numpy(), labels=target["labels"].numpy())
            image = result["image"]
            target = {"boxes": torch.as_tensor(np.asarray(result["bboxes"]), dtype=torch.float32).reshape(-1, 4),
                      "labels": torch.as_tensor(np.asarray(result["labels"]), dtype=torch.int64)}
        return {"input": image, "target": {"boxes": target["boxes"].clone(), "labels": target["labels"].clone()}}


def collate_detection(samples: list[Any]) -> dict[str, Any]:
    """Collate detection samples: images stacked, targets kept as a list of dicts (torchvision's
    format). Accepts samples or ``(index, sample)`` pairs.

    >>> batch = collate_detection([ShapesDetection(2, image_size=16)[i] for i in range(2)])
    >>> tuple(batch["input"].shape), type(batch["target"]).__name__
    ((2, 3, 16, 16), 'list')
    """
    pairs = [s if isinstance(s, tuple) else (None, s) for s in samples]
    items = [s for _, s in pairs]
    batch = {"input": torch.stack([s["input"] for s in items]), "target": [s["target"] for s in items]}
    if all(i is not None for i, _ in pairs):
        batch["index"] = torch.tensor([i for i, _ in pairs], dtype=torch.int64)
    return batch


class ShapesRetrieval(_ShapesBase):
    """Metric learning on shapes with classes held out of training. ``split="train"``: one shape per
    image, among the first ``len(SHAPE_KINDS) - held_out`` kinds, targets index ``classes``.
    ``split="valid"``: only the ``held_out`` last kinds, each sample a query (``queries_per_class`` per
    class) or a gallery item (the rest): ``{"input", "target", "is_query", "is_gallery"}``.

    >>> valid = ShapesRetrieval("valid", samples_per_class=6, queries_per_class=2, image_size=16)
    >>> valid.classes, int(valid.is_query.sum()), int(valid.is_gallery.sum())
    (('frame', 'cross', 'semicircle', 'bar'), 8, 16)
    """

    def __init__(self, split: str = "train", samples_per_class: int = 60, image_size: int = 32, seed: int = 0,
                 held_out: int = 4, queries_per_class: int = 10, channels: int = 3,
                 transform: Any = None, augment: Any = None) -> None:
        super().__init__(transform, augment)
        if split not in ("train", "valid"):
            raise ConfigError(f"split={split!r}; expected 'train' or 'valid'")
        if not isinstance(held_out, int) or not 1 <= held_out < len(SHAPE_KINDS):
            raise ConfigError(f"held_out must be an int in 1..{len(SHAPE_KINDS) - 1}, got {held_out!r}")
        if split == "valid" and not 0 < queries_per_class < samples_per_class:
            raise ConfigError(f"queries_per_class must be in 1..samples_per_class-1 ({samples_per_class - 1}), "
                              f"got {queries_per_class!r}")
        _check_sizes(samples_per_class, image_size)
        cut = len(SHAPE_KINDS) - held_out
        self.classes = SHAPE_KINDS[:cut] if split == "train" else SHAPE_KINDS[cut:]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        labels = np.repeat(np.arange(len(self.classes)), samples_per_class)
        rank = np.tile(np.arange(samples_per_class), len(self.classes))
        order = rng.permutation(len(labels))
        labels, rank = labels[order], rank[order]
        images = np.stack([_single_shape(self.classes[k], image_size, channels, rng, hard=True) for k in labels])
        self.images, self.targets = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
        query = rank < queries_per_class if split == "valid" else np.zeros(len(labels), dtype=bool)
        self.is_query = torch.from_numpy(query)
        self.is_gallery = torch.from_numpy(~query) if split == "valid" else torch.zeros(len(labels), dtype=torch.bool)
        self.split = split

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.images[index]
        if self.augment is not None or self.transform is not None:
            image = self._apply(image)["image"]
        sample = {"input": image, "target": self.targets[index]}
        if self.split == "valid":
            sample["is_query"], sample["is_gallery"] = self.is_query[index], self.is_gallery[index]
        return sample


for _dataset in (ShapesClassification, ShapesSegmentation, ShapesDetection, ShapesRetrieval):
    registry("datasets").register(_dataset)
