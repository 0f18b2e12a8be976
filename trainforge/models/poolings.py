"""Poolings: a feature map ``(B, C, H, W)`` to a vector ``(B, C)`` — average, max, average+max, GeM,
and pooling followed by a linear projection (TorchOk's ``Pooling`` and ``PoolingLinear``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import registry

POOLING_TYPES = ("avg", "max", "avgmax")


def _pool(x: torch.Tensor, pooling_type: str) -> torch.Tensor:
    if pooling_type == "avg":
        return x.mean(dim=(-2, -1))
    if pooling_type == "max":
        return x.amax(dim=(-2, -1))
    return 0.5 * (x.mean(dim=(-2, -1)) + x.amax(dim=(-2, -1)))


def _check_type(pooling_type: str) -> str:
    if pooling_type not in POOLING_TYPES:
        raise ConfigError(f"pooling_type={pooling_type!r}; expected one of {', '.join(POOLING_TYPES)}")
    return pooling_type


@registry("poolings").register(help="global pooling: avg (default), max or avgmax")
class Pooling(nn.Module):
    """Global pooling of a feature map; ``out_channels == in_channels``.

    >>> Pooling(8, pooling_type="max")(torch.zeros(2, 8, 4, 4)).shape
    torch.Size([2, 8])
    """

    input_kind = "map"
    output_kind = "vector"

    def __init__(self, in_channels: int, pooling_type: str = "avg") -> None:
        super().__init__()
        self.pooling_type = _check_type(pooling_type)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pool(x, self.pooling_type)


@registry("poolings").register(help="generalized mean pooling with a learnable exponent p")
class GeM(nn.Module):
    """Generalized-mean pooling ``(mean(x^p))^(1/p)`` (Radenović et al.); ``p`` is learned.

    >>> GeM(4)(torch.ones(1, 4, 3, 3)).tolist()
    [[1.0, 1.0, 1.0, 1.0]]
    """

    input_kind = "map"
    output_kind = "vector"

    def __init__(self, in_channels: int, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        if p <= 0:
            raise ConfigError(f"GeM: p must be positive, got {p!r}")
        value = torch.tensor(float(p))
        self.p = nn.Parameter(value) if learnable else None
        if not learnable:
            self.register_buffer("p_fixed", value)
        self.eps = eps
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p if self.p is not None else self.p_fixed
        return F.avg_pool2d(x.clamp(min=self.eps).pow(p), x.shape[-2:]).pow(1.0 / p).flatten(1)


@registry("poolings").register(help="global pooling then a linear projection to out_channels")
class PoolingLinear(nn.Module):
    """Global pooling, optional dropout, then ``Linear(in_channels, out_channels)`` (TorchOk's name).

    >>> PoolingLinear(8, out_channels=3)(torch.zeros(2, 8, 4, 4)).shape
    torch.Size([2, 3])
    """

    input_kind = "map"
    output_kind = "vector"

    def __init__(self, in_channels: int, out_channels: int = 512, pooling_type: str = "avg",
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.pooling_type = _check_type(pooling_type)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(_pool(x, self.pooling_type)))
