"""Generated shapes: a small, real image-classification data set made on the fly (no download)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

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
