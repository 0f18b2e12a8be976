"""Metric-learning losses: contrastive on pairs (TorchOk's ``emb1``/``emb2``/``R`` mapping) and triplet
with batch-hard mining on ``(embeddings, target)``. ArcFace / CosFace are heads plus cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .registry import register_loss


@register_loss("ContrastiveLoss")
class ContrastiveLoss(nn.Module):
    """Hadsell et al.: ``R * d^2 + (1 - R) * max(0, margin - d)^2`` averaged over pairs, ``d`` the
    Euclidean distance of ``emb1[i]`` and ``emb2[i]``, ``R[i]`` 1 for a positive pair and 0 otherwise.

    >>> loss = ContrastiveLoss(margin=1.0)
    >>> e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> round(float(loss(e, e, torch.tensor([1.0, 1.0]))), 4), round(float(loss(e, e, torch.tensor([0.0, 0.0]))), 4)
    (0.0, 1.0)
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if not margin > 0:
            raise ConfigError(f"ContrastiveLoss: margin must be > 0, got {margin!r}")
        self.margin = float(margin)

    def forward(self, emb1: torch.Tensor, emb2: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        distance = F.pairwise_distance(emb1.float(), emb2.float())
        R = R.to(distance.dtype)
        return (R * distance.square() + (1 - R) * F.relu(self.margin - distance).square()).mean()


@register_loss("TripletLoss")
class TripletLoss(nn.Module):
    """Triplet margin loss with in-batch mining: for each anchor, its farthest positive and nearest
    negative (``mining="batch_hard"``, Hermans et al.) or every valid triplet (``mining="all"``, mean over
    the triplets that violate the margin). Anchors without a positive or a negative are skipped.

    >>> loss = TripletLoss(margin=0.2)
    >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> float(loss(emb, torch.tensor([0, 0, 1, 1]))) == 0.0, float(loss(emb, torch.tensor([0, 1, 0, 1]))) > 0
    (True, True)
    """

    def __init__(self, margin: float = 0.2, mining: str = "batch_hard") -> None:
        super().__init__()
        if mining not in ("batch_hard", "all"):
            raise ConfigError(f"TripletLoss: mining={mining!r}; expected 'batch_hard' or 'all'")
        self.margin, self.mining = float(margin), mining

    def forward(self, embeddings: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        distance = torch.cdist(embeddings.float(), embeddings.float())
        same = target[:, None] == target[None, :]
        eye = torch.eye(len(target), dtype=torch.bool, device=target.device)
        positive, negative = same & ~eye, ~same
        if self.mining == "batch_hard":
            hardest_positive = distance.masked_fill(~positive, float("-inf")).amax(1)
            hardest_negative = distance.masked_fill(~negative, float("inf")).amin(1)
            usable = positive.any(1) & negative.any(1)
            losses = F.relu(hardest_positive - hardest_negative + self.margin)
            return torch.where(usable, losses, torch.zeros_like(losses)).sum() / usable.sum().clamp(min=1)
        triplets = distance[:, :, None] - distance[:, None, :] + self.margin  # anchor, positive, negative
        valid = positive[:, :, None] & negative[:, None, :]
        losses = F.relu(triplets) * valid
        return losses.sum() / ((losses > 0).sum().clamp(min=1))
