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
    """Hadsell et al.: ``R * d^2 + (1 - R) * max(0, margin - d)^2``.

    - Pairs: ``emb1`` and ``emb2`` ``(P, D)``, ``R`` ``(P,)`` 1 for a positive pair and 0 otherwise, ``d``
      the distance of ``emb1[i]`` and ``emb2[i]``; averaged over the pairs.
    - A relevance matrix (TorchOk's form): ``emb1`` ``(B, D)``, ``emb2`` ``(M, D)``, ``R`` ``(B, M)``, ``d``
      every distance between the two sets; summed over ``M`` and averaged over ``B``, as TorchOk does.

    >>> loss = ContrastiveLoss(margin=1.0)
    >>> e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> round(float(loss(e, e, torch.tensor([1.0, 1.0]))), 4), round(float(loss(e, e, torch.tensor([0.0, 0.0]))), 4)
    (0.0, 1.0)
    >>> round(float(loss(e, e, torch.eye(2))), 4)  # the two points are 1.41 apart: beyond the margin
    0.0
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if not margin > 0:
            raise ConfigError(f"ContrastiveLoss: margin must be > 0, got {margin!r}")
        self.margin = float(margin)

    def forward(self, emb1: torch.Tensor, emb2: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        matrix = R.dim() == 2
        expected = (len(emb1), len(emb2)) if matrix else (len(emb1),)
        if R.shape != expected or (not matrix and emb1.shape != emb2.shape):
            raise ValueError(f"ContrastiveLoss: R {tuple(R.shape)} fits neither pairs (emb1, emb2 and R of one "
                             f"length) nor a relevance matrix (len(emb1) x len(emb2)) for emb1 "
                             f"{tuple(emb1.shape)} and emb2 {tuple(emb2.shape)}")
        if matrix:
            squared = _squared_distances(emb1.float(), emb2.float())
            distance = squared.clamp(min=1e-12).sqrt()  # the clamp keeps the gradient finite at d = 0
        else:
            distance = F.pairwise_distance(emb1.float(), emb2.float())
            squared = distance.square()
        R = R.to(distance.dtype)
        losses = R * squared + (1 - R) * F.relu(self.margin - distance).square()
        return losses.sum(1).mean() if matrix else losses.mean()


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2.0 * a @ b.T).clamp(min=0.0)


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
