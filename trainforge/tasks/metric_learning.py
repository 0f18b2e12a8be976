"""Metric learning: ``PairwiseLearnTask`` (contrastive on in-batch pairs), ``TripletLearnTask``
(batch-hard triplets) and ``MarginLearnTask`` (ArcFace / CosFace heads with cross-entropy), all
evaluated by retrieval — recall@k, precision@k and mAP@k of queries against a gallery over the whole
validation set (``RetrievalMetrics``), typically on classes held out of training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import registry
from ..training_config import TrainingConfig  # noqa: F401  (the docstring examples use it)
from .base import Task

_RETRIEVAL_INPUTS = {"embeddings": "embeddings", "target": "target", "is_query": "is_query",
                     "is_gallery": "is_gallery"}


class MetricLearningTask(Task):
    """What the metric-learning tasks share. Outputs: ``embeddings`` (a composed model's embedding-head
    output, or what a margin head gets), ``prediction`` (margin logits) where there is a margin head,
    and ``is_query`` / ``is_gallery`` from the batch (None: every sample is both, leave-one-out).

    Metrics (validation and test): ``retrieval/recall_at_k``, ``retrieval/precision_at_k`` and
    ``retrieval/map_at_k`` for each ``k`` in ``top_k``, over the whole set and across processes.
    """

    default_loss: ClassVar[str | None] = "TripletLoss"
    #: the run report shows this many validation queries, each with its nearest gallery items
    report_queries: ClassVar[int] = 8
    report_neighbours: ClassVar[int] = 5

    def __init__(
        self,
        model: nn.Module,
        *args: Any,
        top_k: int | Sequence[int] = (1, 5),
        normalize: bool = True,
        knn_backend: str = "auto",
        compute_loss_on_valid: bool = True,
        **trainer_args: Any,
    ) -> None:
        self.top_k, self.normalize, self.knn_backend = top_k, normalize, knn_backend
        self.compute_loss_on_valid = compute_loss_on_valid
        self._composed = hasattr(model, "forward_features") and hasattr(model, "takes_target")
        super().__init__(model, *args, **trainer_args)

    def task_metrics(self, model: nn.Module) -> list[Any]:
        params = {"top_k": list(self.top_k) if not isinstance(self.top_k, int) else self.top_k,
                  "normalize": self.normalize, "backend": self.knn_backend}
        return [{"name": "RetrievalMetrics", "params": params, "alias": "retrieval", "mapping": dict(_RETRIEVAL_INPUTS),
                 "phases": ["VALID", "TEST"]}]

    def run_model(self, x: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if not self._composed:
            return {"embeddings": self._model_fn(x)}
        target = batch.get("target") if self.model.training else None
        parts = self._model_fn(x, target, return_embeddings=True)
        if self.model.takes_target:
            return parts
        return {"embeddings": parts["prediction"]}  # an embedding head (or none): its output is the embedding

    def forward(self, batch: dict[str, Any], training: bool) -> dict[str, Any]:
        outputs = super().forward(batch, training)
        outputs["is_query"], outputs["is_gallery"] = batch.get("is_query"), batch.get("is_gallery")
        return outputs

    @torch.no_grad()
    def evaluate_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.compute_loss_on_valid:
            return super().evaluate_step(batch)
        outputs = self.forward(batch, training=False)  # no "loss" nor a joint loss's terms: not logged
        outputs["num_samples"] = len(batch["input"])
        self.compute_metrics(self._eval_phase, outputs, batch, loader=self._eval_loader_name)
        return outputs

    @property
    def eval_loss_missing(self) -> str | None:
        """Why evaluation logs no loss (a monitor of it is refused at set-up); None when it logs one."""
        if self.compute_loss_on_valid:
            return None
        return (f"{type(self).__name__} computes no validation loss with compute_loss_on_valid=False (its validation "
                "classes may be held out of training); monitor a retrieval metric, e.g. monitor "
                "'valid/retrieval/map_at_1' with mode 'max', or set compute_loss_on_valid=True (YAML: "
                "task.compute_loss_on_valid: true) when the validation classes are the training ones")

    def _plain_criterion(self) -> bool:
        return not getattr(type(self.criterion), "takes_dicts", False)

    def save_report_samples(self, loader: Any) -> None:
        """The first ``report_queries`` validation queries and their ``report_neighbours`` nearest gallery
        items, searched as the retrieval metrics do (same normalisation and back-end). Two passes: the
        embeddings of the whole set (as the metrics keep), then only the images that are shown."""
        from ..metrics.retrieval import nearest_neighbours
        from ..report import save_retrieval_samples

        embeddings, targets, queries, gallery = [], [], [], []
        for batch in loader:
            batch = self.runtime.to_device(batch)
            found = self.forward(batch, training=False)["embeddings"].float().cpu()
            everyone = torch.ones(len(found), dtype=torch.bool)
            embeddings.append(found)
            targets.append(batch["target"].cpu())
            for flags, key in ((queries, "is_query"), (gallery, "is_gallery")):
                flag = batch.get(key)
                flags.append(everyone if flag is None else flag.cpu().bool())
        if not embeddings:
            return
        is_query = torch.cat(queries)
        shown = is_query.nonzero().squeeze(1)[: self.report_queries]
        if not len(shown):
            return
        chosen = torch.zeros_like(is_query)
        chosen[shown] = True
        target = torch.cat(targets)
        neighbours, _, query_index = nearest_neighbours(
            torch.cat(embeddings), target, chosen, torch.cat(gallery), self.report_neighbours,
            normalize=self.normalize, backend=self.knn_backend)
        wanted = set(query_index.tolist()) | set(neighbours[neighbours >= 0].tolist())
        images: dict[int, torch.Tensor] = {}
        offset = 0
        for batch in loader:  # the second pass keeps only the images shown
            x = batch["input"]
            if not isinstance(x, torch.Tensor) or x.dim() != 4:
                return  # not images (vectors, tokens): nothing to draw
            for position in range(offset, offset + len(x)):
                if position in wanted:
                    images[position] = x[position - offset].detach().float().cpu()
            offset += len(x)
            if len(images) == len(wanted):
                break
        blank = torch.zeros_like(images[int(query_index[0])])
        neighbour_images = torch.stack([torch.stack([images.get(int(i), blank) for i in row]) for row in neighbours])
        neighbour_targets = torch.where(neighbours >= 0, target[neighbours.clamp(min=0)], -1)
        save_retrieval_samples(self.run_dir, torch.stack([images[int(i)] for i in query_index]), target[query_index],
                               neighbour_images, neighbour_targets, self._valid_group_names(),
                               weights=self._report_weights(), query_indices=query_index,
                               neighbour_indices=neighbours)

    def _valid_group_names(self) -> list[str] | None:
        """The validation set's own group names (held-out classes are not the training ones): the
        ``classes`` of the (first) validation data set, through DataLoaders and Subsets."""
        from ..trainer_utils import resolve_class_names

        if self.valid_data is None:
            return None
        names, _ = resolve_class_names(None, None, self.valid_data)
        return names


class TripletLearnTask(MetricLearningTask):
    """Triplet loss with batch-hard mining on ``(embeddings, target)`` (TorchOk's name). A batch that
    holds ``positive`` and ``negative`` images beside its ``input`` anchors (TorchOk's ``TRIPLET_SOP``) is
    embedded in one forward pass and gives the outputs ``anchor``, ``positive`` and ``negative``, which
    TorchOk's configs map to ``TripletMarginLoss``.

    >>> import tempfile
    >>> from trainforge.data.shapes import ShapesRetrieval
    >>> from trainforge.models import build_model
    >>> model = build_model("small_cnn", {"width": 4, "depth": 2}, pooling_name="Pooling", head_name="LinearHead",
    ...                     head_params={"out_channels": 8})
    >>> cfg = TrainingConfig(output_dir=tempfile.mkdtemp(), tensorboard=False, checkpoint=None)
    >>> valid = ShapesRetrieval("valid", samples_per_class=5, queries_per_class=1, image_size=16)
    >>> sorted(TripletLearnTask(model, cfg).evaluate(valid))[:3]
    ['valid/loss', 'valid/retrieval/map_at_1', 'valid/retrieval/map_at_5']
    """

    default_loss: ClassVar[str | None] = "TripletLoss"
    default_loss_params: ClassVar[dict[str, Any]] = {"margin": 0.2}

    def forward(self, batch: dict[str, Any], training: bool) -> dict[str, Any]:
        positive, negative = batch.get("positive"), batch.get("negative")
        if positive is None or negative is None:
            return super().forward(batch, training)
        anchor = batch["input"]
        # one forward over the three sets: one pass, and BatchNorm sees anchors, positives and negatives together
        outputs = super().forward({**batch, "input": torch.cat([anchor, positive, negative])}, training)
        outputs["anchor"], outputs["positive"], outputs["negative"] = outputs["embeddings"].split(len(anchor))
        outputs["embeddings"] = outputs["anchor"]
        return outputs

    def compute_loss(self, outputs: dict[str, Any], batch: dict[str, Any]) -> torch.Tensor:
        if self._plain_criterion():
            if "negative" in outputs:
                return F.triplet_margin_loss(outputs["anchor"], outputs["positive"], outputs["negative"],
                                             margin=float(getattr(self.criterion, "margin", 1.0)))
            return self.criterion(outputs["embeddings"], batch["target"])
        return super().compute_loss(outputs, batch)


class PairwiseLearnTask(MetricLearningTask):
    """Contrastive loss on every pair of the batch, TorchOk's way: outputs ``emb1`` and ``emb2`` (both the
    batch's embeddings, ``(B, D)``) and ``R``, the ``(B, B)`` relevance matrix (1 where two samples share a
    class), the mapping TorchOk's configs give ``ContrastiveLoss``; ``emb1`` also feeds retrieval metrics."""

    default_loss: ClassVar[str | None] = "ContrastiveLoss"
    default_loss_params: ClassVar[dict[str, Any]] = {"margin": 1.0}

    def forward(self, batch: dict[str, Any], training: bool) -> dict[str, Any]:
        outputs = super().forward(batch, training)
        target = batch.get("target")
        outputs["emb1"] = outputs["emb2"] = embeddings = outputs["embeddings"]
        if target is not None:
            outputs["R"] = (target[:, None] == target[None, :]).to(embeddings.dtype)
        return outputs

    def compute_loss(self, outputs: dict[str, Any], batch: dict[str, Any]) -> torch.Tensor:
        if self._plain_criterion():
            return self.criterion(outputs["emb1"], outputs["emb2"], outputs["R"])
        return super().compute_loss(outputs, batch)


class MarginLearnTask(MetricLearningTask):
    """ArcFace / CosFace training: cross-entropy on the margin head's logits (the head reads the
    target while training); retrieval on the embeddings the head gets. The validation loss is not
    computed by default (held-out classes have no logits): ``valid/loss`` is not logged."""

    default_loss: ClassVar[str | None] = "CrossEntropyLoss"

    def __init__(self, model: nn.Module, *args: Any, compute_loss_on_valid: bool = False, **task_args: Any) -> None:
        if not getattr(model, "takes_target", False):
            raise ConfigError("MarginLearnTask needs a composed model with a margin head (head_name='ArcFaceHead' "
                              "or 'CosFaceHead'); for an embedding head use TripletLearnTask or PairwiseLearnTask")
        super().__init__(model, *args, compute_loss_on_valid=compute_loss_on_valid, **task_args)

    def compute_loss(self, outputs: dict[str, Any], batch: dict[str, Any]) -> torch.Tensor:
        if self._plain_criterion():
            return self.criterion(outputs["prediction"].float(), batch["target"])
        return super().compute_loss(outputs, batch)


for _task, _help in ((PairwiseLearnTask, "metric learning: contrastive loss on in-batch pairs"),
                     (TripletLearnTask, "metric learning: triplet loss with batch-hard mining"),
                     (MarginLearnTask, "metric learning: ArcFace / CosFace margin heads")):
    registry("tasks").register(_task, help=_help)
