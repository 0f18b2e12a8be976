"""``RetrievalMetrics``: recall@k, precision@k and mAP@k over the whole evaluation set (queries against a
gallery), as one torchmetrics ``Metric`` whose embedding states are all-gathered across processes
before computing; exact k-NN through faiss when installed, torch's matmul + top-k otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ..errors import ConfigError

BACKENDS = ("auto", "torch", "faiss")
_CHUNK = 1024  # queries per similarity block: memory stays O(chunk x gallery)


class RetrievalMetrics(Metric):
    """Retrieval quality of embeddings: every query against the gallery, neighbours by cosine
    similarity (``normalize=True``, the default) or Euclidean distance.

    ``update(embeddings, target, is_query=None, is_gallery=None)``: without the flags every sample is a
    query and a gallery item (leave-one-out: a query never retrieves itself). A query whose class has no
    other gallery item is skipped. ``compute()`` returns, for each ``k`` in ``top_k``:

    - ``recall_at_k``: the share of queries with at least one relevant item in their k nearest;
    - ``precision_at_k``: the mean share of relevant items among the k nearest;
    - ``map_at_k``: mean average precision over the k nearest, ``AP@k = sum_i P(i) rel(i) / min(k, R)``.

    States are lists of tensors (``dist_reduce_fx="cat"``): under torch.distributed ``compute`` gathers
    every process's embeddings first, so the metrics are those of the whole set, not a mean of shards.

    >>> metric = RetrievalMetrics(top_k=(1, 2))
    >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.9], [0.8, 0.3]])
    >>> metric.update(emb, torch.tensor([0, 0, 1, 1, 1]))
    >>> results = {k: round(float(v), 3) for k, v in metric.compute().items()}  # sample 4's nearest are class 0
    >>> results["recall_at_1"], results["precision_at_2"], results["map_at_2"]
    (0.8, 0.6, 0.8)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, top_k: int | Sequence[int] = (1, 5), normalize: bool = True, backend: str = "auto",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        ks = [top_k] if isinstance(top_k, int) else list(top_k)
        if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
            raise ConfigError(f"RetrievalMetrics: top_k must be a positive int or a list of them, got {top_k!r}")
        if backend not in BACKENDS:
            raise ConfigError(f"RetrievalMetrics: backend={backend!r}; expected one of {', '.join(BACKENDS)}")
        if backend == "faiss" and not faiss_available():
            raise ConfigError("RetrievalMetrics: backend='faiss' but faiss is not installed; "
                              "pip install faiss-cpu (or trainforge[retrieval]), or use backend='torch'")
        self.top_k, self.normalize, self.backend = sorted(set(ks)), normalize, backend
        for name in ("embeddings", "targets", "is_query", "is_gallery"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, target: torch.Tensor, is_query: torch.Tensor | None = None,
               is_gallery: torch.Tensor | None = None) -> None:
        if embeddings.dim() != 2 or target.dim() != 1 or len(target) != len(embeddings):
            raise ValueError(f"RetrievalMetrics expects embeddings (N, D) and target (N,), got "
                             f"{tuple(embeddings.shape)} and {tuple(target.shape)}")
        ones = torch.ones(len(target), dtype=torch.bool, device=target.device)
        self.embeddings.append(embeddings.detach().float())
        self.targets.append(target.detach())
        self.is_query.append(ones if is_query is None else is_query.detach().bool())
        self.is_gallery.append(ones if is_gallery is None else is_gallery.detach().bool())

    def compute(self) -> dict[str, torch.Tensor]:
        embeddings = dim_zero_cat(self.embeddings)
        targets, queries, gallery = (dim_zero_cat(s) for s in (self.targets, self.is_query, self.is_gallery))
        neighbours, relevant_counts, query_index = nearest_neighbours(
            embeddings, targets, queries, gallery, max(self.top_k), self.normalize, self.backend)
        relevant = targets[neighbours] == targets[query_index][:, None]  # (Q, K) hits; -1 pads never match
        relevant &= neighbours >= 0
        keep = relevant_counts > 0
        relevant, relevant_counts = relevant[keep].float(), relevant_counts[keep].float()
        results: dict[str, torch.Tensor] = {}
        empty = torch.tensor(float("nan"), device=embeddings.device)
        hits = relevant.cumsum(1)
        ranks = torch.arange(1, relevant.shape[1] + 1, device=relevant.device, dtype=relevant.dtype)
        for k in self.top_k:
            upto = min(k, relevant.shape[1])
            if len(relevant) == 0:
                results.update({f"recall_at_{k}": empty, f"precision_at_{k}": empty, f"map_at_{k}": empty})
                continue
            top = relevant[:, :upto]
            precision_at_i = hits[:, :upto] / ranks[:upto]
            average_precision = (precision_at_i * top).sum(1) / relevant_counts.clamp(max=k)
            results[f"recall_at_{k}"] = top.amax(1).mean()
            results[f"precision_at_{k}"] = top.sum(1).mean() / k
            results[f"map_at_{k}"] = average_precision.mean()
        return results


class HitAtKMeter(RetrievalMetrics):
    """TorchOk's ``HitAtKMeter`` (ranx's hit rate): the share of queries with at least one item of their
    group among their ``k`` nearest, i.e. ``RetrievalMetrics``' ``recall_at_k`` as one number.
    ``update(vectors, group_labels)``: every sample is query and gallery (TorchOk's
    ``dataset_type: classification``). ``search_batch_size`` and ``exact_index`` are accepted and have
    no effect (the search is exact and chunked); ``metric_distance: L2`` searches by Euclidean distance.

    >>> metric = HitAtKMeter(k=1, dataset_type="classification", normalize_vectors=True)
    >>> metric.update(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.3]]), torch.tensor([0, 0, 1, 1]))
    >>> round(float(metric.compute()), 2)  # sample 3's nearest is of group 0
    0.75
    """

    def __init__(self, k: int = 1, dataset_type: str = "classification", normalize_vectors: bool = False,
                 metric_distance: str = "IP", search_batch_size: int | None = None, exact_index: bool = True,
                 backend: str = "auto", **kwargs: Any) -> None:
        if dataset_type != "classification":
            raise ConfigError(f"HitAtKMeter: dataset_type={dataset_type!r} is not supported; use 'classification' "
                              f"(every sample a query), or RetrievalMetrics with is_query/is_gallery for "
                              f"query/gallery data")
        if metric_distance not in ("IP", "L2"):
            raise ConfigError(f"HitAtKMeter: metric_distance={metric_distance!r}; expected 'IP' or 'L2'")
        # IP on normalised vectors is cosine; L2 ranks by Euclidean distance (normalised first if asked)
        normalize = normalize_vectors if metric_distance == "IP" else False
        super().__init__(top_k=k, normalize=normalize, backend=backend, **kwargs)
        self.k, self.l2_normalize = int(k), normalize_vectors and metric_distance == "L2"

    def update(self, vectors: torch.Tensor, group_labels: torch.Tensor) -> None:  # type: ignore[override]
        super().update(F.normalize(vectors, dim=1) if self.l2_normalize else vectors, group_labels)

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        return super().compute()[f"recall_at_{self.k}"]


def faiss_available() -> bool:
    """True when ``import faiss`` works."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def nearest_neighbours(
    embeddings: torch.Tensor, targets: torch.Tensor, is_query: torch.Tensor, is_gallery: torch.Tensor, k: int,
    normalize: bool = True, backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(neighbours, relevant_counts, query_index)``: for each query (``query_index`` into the samples)
    the sample indices of its ``k`` nearest gallery items, nearest first, a query itself excluded
    (``-1`` pads when the gallery is smaller than ``k``), and the number of gallery items of its class.

    >>> emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    >>> flags = torch.ones(3, dtype=torch.bool)
    >>> neighbours, counts, _ = nearest_neighbours(emb, torch.tensor([0, 1, 0]), flags, flags, k=1)
    >>> neighbours[:, 0].tolist(), counts.tolist()
    ([2, 2, 0], [1, 0, 1])
    """
    if normalize:
        embeddings = F.normalize(embeddings, dim=1)
    query_index = is_query.nonzero().squeeze(1)
    gallery_index = is_gallery.nonzero().squeeze(1)
    same = targets[query_index][:, None] == targets[gallery_index][None, :]
    self_match = query_index[:, None] == gallery_index[None, :]
    relevant_counts = (same & ~self_match).sum(1)
    size = min(k, max(len(gallery_index) - int(self_match.any(1).all()), 0))
    if backend == "faiss" or (backend == "auto" and faiss_available() and embeddings.device.type == "cpu"):
        local = _faiss_search(embeddings, query_index, gallery_index, size, normalize)
    else:
        local = _torch_search(embeddings, query_index, gallery_index, size, normalize)
    neighbours = torch.full((len(query_index), k), -1, dtype=torch.long, device=embeddings.device)
    found = torch.where(local >= 0, gallery_index[local.clamp(min=0)], local)
    neighbours[:, :size] = found[:, :size]
    return neighbours, relevant_counts, query_index


def _torch_search(embeddings: torch.Tensor, query_index: torch.Tensor, gallery_index: torch.Tensor, k: int,
                  normalize: bool) -> torch.Tensor:
    gallery = embeddings[gallery_index]
    blocks = []
    for start in range(0, len(query_index), _CHUNK):
        rows = query_index[start:start + _CHUNK]
        query = embeddings[rows]
        score = query @ gallery.T if normalize else -torch.cdist(query, gallery)
        score = score.masked_fill(rows[:, None] == gallery_index[None, :], float("-inf"))
        blocks.append(score.topk(k, dim=1).indices if k else score[:, :0].long())
    return torch.cat(blocks) if blocks else torch.zeros(0, k, dtype=torch.long, device=embeddings.device)


def _faiss_search(embeddings: torch.Tensor, query_index: torch.Tensor, gallery_index: torch.Tensor, k: int,
                  normalize: bool) -> torch.Tensor:
    import faiss
    import numpy as np

    data = embeddings.detach().cpu().float().numpy()
    index = faiss.IndexFlatIP(data.shape[1]) if normalize else faiss.IndexFlatL2(data.shape[1])
    gallery_np = gallery_index.cpu().numpy()
    index.add(np.ascontiguousarray(data[gallery_np]))
    overlap = 1 if bool(torch.isin(query_index, gallery_index).any()) else 0
    queries = query_index.cpu().numpy()
    _, found = index.search(np.ascontiguousarray(data[queries]), min(k + overlap, len(gallery_np)))
    found = torch.from_numpy(found).long()
    if overlap:  # drop each query's own entry (it may tie with a duplicate, so match by index, not by rank)
        own = torch.from_numpy(gallery_np)[found.clamp(min=0)] == torch.from_numpy(queries)[:, None]
        order = torch.argsort(own.int(), dim=1, stable=True)  # own entry moved last, others keep their order
        found = found.gather(1, order)[:, :k]
    return found[:, :k].to(embeddings.device)
