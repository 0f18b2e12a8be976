"""Segmentation losses: soft Dice over classes, and cross-entropy + Dice (the segmentation task's
default), both honouring ``ignore_index``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .registry import register_loss


def _dice(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None, smooth: float) -> torch.Tensor:
    probs = logits.float().softmax(1)
    classes = probs.shape[1]
    if ignore_index is not None:
        valid = target != ignore_index
        target = torch.where(valid, target, torch.zeros_like(target))
    one_hot = F.one_hot(target, classes).permute(0, 3, 1, 2).to(probs.dtype)
    if ignore_index is not None:
        keep = valid.unsqueeze(1).to(probs.dtype)
        probs, one_hot = probs * keep, one_hot * keep
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    cardinality = probs.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2.0 * intersection + smooth) / (cardinality + smooth)).mean()


@register_loss("DiceLoss")
class DiceLoss(nn.Module):
    """``1 - mean over classes of soft Dice`` between softmax probabilities ``(B, C, H, W)`` and an int64
    mask ``(B, H, W)``; pixels equal to ``ignore_index`` count for nothing.

    >>> target = torch.tensor([[[0, 1], [1, 1]]])
    >>> perfect = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    >>> round(float(DiceLoss()(perfect, target)), 4)
    0.0
    """

    def __init__(self, ignore_index: int | None = None, smooth: float = 1.0, mode: str = "multiclass") -> None:
        super().__init__()
        if mode != "multiclass":  # segmentation_models_pytorch's argument, which TorchOk's configs pass
            raise ConfigError(f"DiceLoss: mode={mode!r} is not supported; trainforge's Dice is multiclass "
                              f"(softmax over (B, C, H, W) logits, an int64 (B, H, W) mask): use mode: multiclass")
        self.ignore_index, self.smooth = ignore_index, smooth

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _dice(input, target, self.ignore_index, self.smooth)


@register_loss("CrossEntropyDiceLoss")
class CrossEntropyDiceLoss(nn.Module):
    """``ce_weight * cross-entropy + dice_weight * Dice`` on per-pixel logits, both ignoring
    ``ignore_index`` (the segmentation task's default loss).

    >>> loss = CrossEntropyDiceLoss(ignore_index=255)
    >>> float(loss(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 255))) == float(loss(
    ...     torch.zeros(1, 3, 2, 2), torch.tensor([[[255, 255], [255, 255]]])))
    True
    """

    def __init__(self, ignore_index: int | None = None, ce_weight: float = 1.0, dice_weight: float = 1.0,
                 label_smoothing: float = 0.0, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index, self.ce_weight, self.dice_weight, self.smooth = ignore_index, ce_weight, dice_weight, smooth
        self.label_smoothing = label_smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ignore = -100 if self.ignore_index is None else self.ignore_index  # -100: torch's "none"
        ce = F.cross_entropy(input.float(), target, ignore_index=ignore, label_smoothing=self.label_smoothing)
        if self.ignore_index is not None:  # every pixel ignored: CE is NaN (0/0); such a batch teaches nothing
            ce = torch.nan_to_num(ce, nan=0.0)
        return self.ce_weight * ce + self.dice_weight * _dice(input, target, self.ignore_index, self.smooth)
