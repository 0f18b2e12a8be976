"""Pictures for loggers: a tiled image grid as an array, and the confusion matrix sent as a figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import numpy as np


def image_grid(images: torch.Tensor, columns: int = 8, padding: int = 2) -> np.ndarray:
    """Tile ``images`` (``N, C, H, W`` in [0, 1]) into one ``H', W', 3`` uint8 array (white padding).

    >>> image_grid(torch.zeros(3, 1, 4, 4), columns=2).shape
    (14, 14, 3)
    """
    batch = images.detach().float().clamp(0, 1).cpu()
    if batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    elif batch.shape[1] != 3:
        batch = batch[:, :1].expand(-1, 3, -1, -1)
    count, _, height, width = batch.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    grid = torch.ones(3, rows * (height + padding) + padding, columns * (width + padding) + padding)
    for index in range(count):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[:, top : top + height, left : left + width] = batch[index]
    return (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def log_confusion_matrix(
    logger: Any, tag: str, matrix: torch.Tensor, step: int, class_names: Sequence[str] | None = None
) -> None:
    """Draw ``matrix`` (rows: true class, columns: predicted) and send it with ``logger.log_figure``."""
    from ..report.plots import confusion_matrix_figure

    logger.log_figure(tag, confusion_matrix_figure(matrix, class_names), step)
