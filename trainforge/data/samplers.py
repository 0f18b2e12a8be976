"""Epoch samplers for ``ResumableLoader``: class-balanced and weighted-by-column orders, each a function of
``(seed, epoch)`` only — so mid-epoch resume stays bit-exact and every process can shard the same order.

Set one on a data set (``dataset.sampler = ClassBalancedSampler(dataset)``) and the Trainer's training
loader draws from it; or pass ``sampler=`` to ``ResumableLoader``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError

_EPOCH_MIX = 1_000_003


class EpochSampler:
    """Samples ``num_samples`` indices per epoch with probability proportional to ``weights``.

    ``indices(seed, epoch)`` is deterministic: a generator seeded from ``(seed, epoch)`` draws them.

    >>> sampler = EpochSampler([0.0, 1.0, 1.0], num_samples=4)
    >>> sampler.indices(0, 1) == sampler.indices(0, 1), 0 in sampler.indices(0, 1)
    (True, False)
    """

    def __init__(self, weights: Sequence[float] | torch.Tensor, num_samples: int | None = None,
                 replacement: bool = True) -> None:
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if weights.numel() == 0 or not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ConfigError(f"sampler weights must be finite and >= 0 (got {weights.numel()} weights, "
                              f"min {float(weights.min()) if weights.numel() else 'n/a'})")
        if float(weights.sum()) <= 0:
            raise ConfigError("sampler weights are all zero: nothing could be drawn")
        self.weights = weights
        self.num_samples = int(num_samples) if num_samples is not None else int(weights.numel())
        if self.num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
        if not replacement and self.num_samples > int((weights > 0).sum()):
            raise ConfigError(f"num_samples={self.num_samples} without replacement needs that many samples of "
                              f"non-zero weight; there are {int((weights > 0).sum())}")
        self.replacement = replacement

    def __len__(self) -> int:
        return self.num_samples

    def indices(self, seed: int, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(int(seed) * _EPOCH_MIX + int(epoch))
        return torch.multinomial(self.weights, self.num_samples, self.replacement, generator=generator).tolist()


def _labels_of(source: Any) -> torch.Tensor:
    targets = getattr(source, "targets", source)
    labels = torch.as_tensor(targets)
    if labels.dim() != 1:
        raise ConfigError(f"ClassBalancedSampler needs one int label per sample, got targets of shape "
                          f"{tuple(labels.shape)} (multi-label data: use WeightedSampler)")
    return labels.long()


class ClassBalancedSampler(EpochSampler):
    """Every class drawn equally often: each sample weighs ``1 / (samples of its class)``.

    ``labels``: a data set with ``targets`` (ImageFolder, ImageClassificationDataset...) or the labels.

    >>> sampler = ClassBalancedSampler([0, 0, 0, 0, 0, 0, 1, 1], num_samples=4000)
    >>> drawn = torch.tensor(sampler.indices(seed=0, epoch=0))
    >>> 0.45 < float((drawn >= 6).float().mean()) < 0.55
    True
    """

    def __init__(self, labels: Any, num_samples: int | None = None, replacement: bool = True) -> None:
        labels = _labels_of(labels)
        counts = torch.bincount(labels - labels.min())
        super().__init__(1.0 / counts[labels - labels.min()].double(), num_samples, replacement)


class WeightedSampler(EpochSampler):
    """Samples drawn in proportion to a weight column: ``column`` names a column of the data set's
    annotation CSV (``dataset.column(name)``), or ``weights`` gives the values directly."""

    def __init__(self, dataset: Any = None, column: str | None = None, *, weights: Sequence[float] | None = None,
                 num_samples: int | None = None, replacement: bool = True) -> None:
        if (column is None) == (weights is None):
            raise ConfigError("WeightedSampler needs exactly one of column= (with dataset=) or weights=")
        if column is not None:
            if dataset is None or not hasattr(dataset, "column"):
                raise ConfigError(f"WeightedSampler(column={column!r}) needs a data set read from a CSV "
                                  f"(ImageClassificationDataset); got {type(dataset).__name__}")
            cells = dataset.column(column)
            try:
                weights = [float(cell) for cell in cells]
            except ValueError:
                bad = next(c for c in cells if not _is_float(c))
                raise ConfigError(f"column {column!r} must hold numbers to weigh samples; found {bad!r}") from None
        if dataset is not None and len(weights) != len(dataset):
            raise ConfigError(f"{len(weights)} weights for a data set of {len(dataset)} samples")
        super().__init__(weights, num_samples, replacement)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
