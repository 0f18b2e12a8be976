"""The embedded default data set: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

DIGITS_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))


def load_digits_split(
    valid_fraction: float = 0.2, seed: int = 0, flatten: bool = False
) -> tuple[TensorDataset, TensorDataset]:
    """Return ``(train, valid)`` datasets of digits images scaled to [0, 1] and int64 labels.

    The split is stratified and fixed by ``seed``. Images are ``(1, 8, 8)`` float32, or ``(64,)`` with
    ``flatten=True``. Nothing is downloaded: the data ship with scikit-learn.

    >>> train, valid = load_digits_split()
    >>> len(train), len(valid), tuple(train[0][0].shape)
    (1437, 360, (1, 8, 8))
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    from sklearn.datasets import load_digits  # lazy: scikit-learn is heavy to import
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_valid, y_train, y_valid = train_test_split(
        images, labels, test_size=valid_fraction, random_state=seed, stratify=labels
    )
    shape = (-1, 64) if flatten else (-1, 1, 8, 8)
    return (
        TensorDataset(torch.from_numpy(x_train).reshape(shape), torch.from_numpy(y_train)),
        TensorDataset(torch.from_numpy(x_valid).reshape(shape), torch.from_numpy(y_valid)),
    )
