"""Heads: the task-specific last layers — linear and multi-label classifiers, a segmentation head, an
embedding head (optionally L2-normalised) and the ArcFace / CosFace margin heads (which read the target
while training). Each reports ``out_channels`` and the kind of input it takes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import registry


def _positive(name: str, key: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"head {name}: {key} must be a positive int, got {value!r}")
    return value


@registry("heads").register(help="linear classifier (logits), with optional dropout")
class ClassificationHead(nn.Module):
    """Dropout then ``Linear(in_channels, num_classes)``: class logits (TorchOk's name).

    >>> ClassificationHead(8, num_classes=3)(torch.zeros(2, 8)).shape
    torch.Size([2, 3])
    """

    input_kind = "vector"
    output_kind = "vector"
    multilabel = False

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        _positive(type(self).__name__, "num_classes", num_classes)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_channels, num_classes)
        self.out_channels = self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))


@registry("heads").register(help="multi-label classifier: one independent logit per label (BCE)")
class MultiLabelHead(ClassificationHead):
    """A classifier whose logits are independent per label: the task trains it with BCE and reports
    mAP and F1 (``multilabel = True``).

    >>> MultiLabelHead(8, num_classes=5).multilabel
    True
    """

    multilabel = True


@registry("heads").register(help="embedding head: linear projection, optionally L2-normalised")
class LinearHead(nn.Module):
    """``Linear(in_channels, out_channels)`` embeddings, L2-normalised when ``normalize`` (TorchOk's name).

    >>> LinearHead(8, out_channels=4, normalize=True)(torch.ones(2, 8)).norm(dim=1).round(decimals=4).tolist()
    [1.0, 1.0]
    """

    input_kind = "vector"
    output_kind = "vector"

    def __init__(self, in_channels: int, out_channels: int = 128, normalize: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        _positive("LinearHead", "out_channels", out_channels)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_channels, out_channels)
        self.normalize = normalize
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(self.dropout(x))
        return F.normalize(x, dim=1) if self.normalize else x


@registry("heads").register(help="segmentation head: conv layers to per-pixel class logits")
class SegmentationHead(nn.Module):
    """A 3x3 conv block and a 1x1 conv to ``num_classes`` logits per pixel. Given a list of maps (an
    FPN's), every level is upsampled to the finest and summed first. The composed model resizes the
    logits to the input's size.

    >>> SegmentationHead(8, num_classes=3)(torch.zeros(1, 8, 4, 4)).shape
    torch.Size([1, 3, 4, 4])
    """

    input_kind = "map"
    output_kind = "map"

    def __init__(self, in_channels: int, num_classes: int, hidden_channels: int | None = 64,
                 dropout: float = 0.0) -> None:
        super().__init__()
        _positive("SegmentationHead", "num_classes", num_classes)
        layers: list[nn.Module] = []
        if hidden_channels:
            layers += [nn.Conv2d(in_channels, hidden_channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(hidden_channels), nn.ReLU(inplace=True)]
            in_channels = hidden_channels
        layers += [nn.Dropout2d(dropout), nn.Conv2d(in_channels, num_classes, 1)]
        self.body = nn.Sequential(*layers)
        self.out_channels = self.num_classes = num_classes

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(x, (list, tuple)):
            size = x[0].shape[-2:]
            x = sum(F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in x)
        return self.body(x)


class _MarginHead(nn.Module):
    """Cosine logits against one learned centre per class, scaled by ``scale``; during training the
    target class's logit gets a margin (``margin_logits``). Without a target: plain scaled cosines."""

    input_kind = "vector"
    output_kind = "vector"
    takes_target = True

    def __init__(self, in_channels: int, num_classes: int, scale: float = 30.0, margin: float = 0.3) -> None:
        super().__init__()
        _positive(type(self).__name__, "num_classes", num_classes)
        if not scale > 0 or not 0 <= margin < 1:
            raise ConfigError(f"{type(self).__name__}: need scale > 0 and 0 <= margin < 1, got scale={scale!r}, "
                              f"margin={margin!r}")
        self.weight = nn.Parameter(torch.empty(num_classes, in_channels))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = float(scale), float(margin)
        self.out_channels = self.num_classes = num_classes

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        cosine = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        if target is None:
            return cosine * self.scale
        one_hot = F.one_hot(target, self.num_classes).to(cosine.dtype)
        return self.margin_logits(cosine, one_hot) * self.scale

    def margin_logits(self, cosine: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@registry("heads").register(help="ArcFace: additive angular margin on the target class (needs the target)")
class ArcFaceHead(_MarginHead):
    """ArcFace (Deng et al.): ``cos(theta + m)`` for the target class. With ``easy_margin=False`` the
    margin is applied only where ``theta + m < pi`` (beyond it, a linear fall-off keeps it monotonic).

    >>> head = ArcFaceHead(4, num_classes=3)
    >>> head(torch.randn(2, 4), torch.tensor([0, 2])).shape
    torch.Size([2, 3])
    """

    def __init__(self, in_channels: int, num_classes: int, scale: float = 30.0, margin: float = 0.3,
                 easy_margin: bool = False) -> None:
        super().__init__(in_channels, num_classes, scale, margin)
        self.easy_margin = easy_margin
        self._cos_m, self._sin_m = math.cos(margin), math.sin(margin)
        self._threshold = math.cos(math.pi - margin)
        self._fall = math.sin(math.pi - margin) * margin

    def margin_logits(self, cosine: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        sine = (1.0 - cosine.square()).clamp(min=1e-7).sqrt()
        shifted = cosine * self._cos_m - sine * self._sin_m
        if self.easy_margin:
            shifted = torch.where(cosine > 0, shifted, cosine)
        else:
            shifted = torch.where(cosine > self._threshold, shifted, cosine - self._fall)
        return one_hot * shifted + (1.0 - one_hot) * cosine


@registry("heads").register(help="CosFace: additive cosine margin on the target class (needs the target)")
class CosFaceHead(_MarginHead):
    """CosFace (Wang et al.): ``cos(theta) - m`` for the target class.

    >>> head = CosFaceHead(4, num_classes=3, scale=1.0, margin=0.5)
    >>> x = torch.tensor([[1.0, 0, 0, 0]])
    >>> bool((head(x) - head(x, torch.tensor([1])))[0, 1] > 0.49)
    True
    """

    def margin_logits(self, cosine: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        return cosine - one_hot * self.margin
