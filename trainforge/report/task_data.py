"""What the vision task trainers leave for the report: a few validation samples with their predicted
and true masks (segmentation), boxes (detection) or nearest gallery neighbours (retrieval), written
atomically as plain tensors, lists and strings so they load with ``weights_only=True``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .data import _save_atomic

#: Where each task's samples go, relative to the run folder.
SEGMENTATION_FILE = Path("report") / "data" / "segmentation.pt"
RETRIEVAL_FILE = Path("report") / "data" / "retrieval.pt"
DETECTION_FILE = Path("report") / "data" / "detection.pt"


def display_images(images: torch.Tensor) -> torch.Tensor:
    """Images ``(N, C, H, W)`` scaled to [0, 1] per image for display (normalised inputs included).

    >>> display_images(torch.tensor([[[[2.0, 4.0]]]])).tolist()
    [[[[0.0, 1.0]]]]
    """
    images = images.detach().float().cpu()
    if images.numel() == 0:
        return images.contiguous()
    dims = tuple(range(1, images.dim()))
    low, high = images.amin(dim=dims, keepdim=True), images.amax(dim=dims, keepdim=True)
    return ((images - low) / (high - low).clamp_min(1e-8)).contiguous()


def _names(class_names: Sequence[str] | None, count: int) -> list[str]:
    if class_names is None or len(class_names) < count:
        return [str(i) for i in range(count)]
    return [str(name) for name in class_names]


def _fail(path: Any, problems: list[str], writer: str) -> None:
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems) + f"; write it with trainforge.report.{writer}")


def _load(path: str | Path, keys: Sequence[str], writer: str) -> dict[str, Any]:
    path = Path(path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of tensors; write it with trainforge.report.{writer}")
    missing = [key for key in keys if key not in data]
    _fail(path, [f"missing {missing}"] if missing else [], writer)
    return data


# -- segmentation ------------------------------------------------------------------------------------
def save_segmentation_samples(
    run_dir: str | Path, images: torch.Tensor, targets: torch.Tensor, predictions: torch.Tensor,
    class_names: Sequence[str] | None, num_classes: int, ignore_index: int | None = None,
    weights: str | None = None,
) -> Path:
    """Write ``run_dir/report/data/segmentation.pt``: ``images`` ``(N, C, H, W)``, true ``targets`` and
    ``predictions`` ``(N, H, W)`` class indices (``ignore_index`` pixels are not coloured).

    >>> import tempfile
    >>> path = save_segmentation_samples(tempfile.mkdtemp(), torch.rand(1, 3, 4, 4), torch.zeros(1, 4, 4),
    ...                                  torch.ones(1, 4, 4), ["background", "circle"], 2)
    >>> load_segmentation_samples(path)["predictions"].shape
    torch.Size([1, 4, 4])
    """
    data = {"images": display_images(images), "targets": targets.detach().long().cpu().contiguous(),
            "predictions": predictions.detach().long().cpu().contiguous(),
            "class_names": _names(class_names, num_classes), "ignore_index": ignore_index,
            "weights": None if weights is None else str(weights)}
    _check_segmentation(data, "save_segmentation_samples")
    return _save_atomic(data, Path(run_dir) / SEGMENTATION_FILE)


def _check_segmentation(data: dict[str, Any], where: Any) -> None:
    images, targets, predictions = data["images"], data["targets"], data["predictions"]
    problems = []
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        problems.append(f"images must be (N, C, H, W), got {getattr(images, 'shape', type(images).__name__)}")
    else:
        want = (images.shape[0], *images.shape[2:])
        for name, mask in (("targets", targets), ("predictions", predictions)):
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != want:
                problems.append(f"{name} must be (N, H, W) = {want}, got {getattr(mask, 'shape', None)}")
    _fail(where, problems, "save_segmentation_samples")


def load_segmentation_samples(path: str | Path) -> dict[str, Any]:
    """Read and check a file written by ``save_segmentation_samples``."""
    data = _load(path, ("images", "targets", "predictions", "class_names"), "save_segmentation_samples")
    _check_segmentation(data, path)
    return data


# -- retrieval ---------------------------------------------------------------------------------------
def save_retrieval_samples(
    run_dir: str | Path, query_images: torch.Tensor, query_targets: torch.Tensor,
    neighbour_images: torch.Tensor, neighbour_targets: torch.Tensor, class_names: Sequence[str] | None = None,
    weights: str | None = None, query_indices: torch.Tensor | None = None,
    neighbour_indices: torch.Tensor | None = None,
) -> Path:
    """Write ``run_dir/report/data/retrieval.pt``: ``query_images`` ``(Q, C, H, W)`` and their group labels
    ``(Q,)``; the images ``(Q, K, C, H, W)`` and labels ``(Q, K)`` of each query's ``K`` nearest gallery
    items, nearest first (label ``-1``: no neighbour, the gallery was smaller than ``K``); optionally
    their sample indices in the validation set (``query_indices`` ``(Q,)``, ``neighbour_indices`` ``(Q, K)``).

    >>> import tempfile
    >>> path = save_retrieval_samples(tempfile.mkdtemp(), torch.rand(1, 3, 4, 4), torch.tensor([0]),
    ...                               torch.rand(1, 2, 3, 4, 4), torch.tensor([[0, 1]]))
    >>> load_retrieval_samples(path)["correct"].tolist()
    [[True, False]]
    """
    labels = torch.cat([query_targets.flatten(), neighbour_targets.flatten()])
    count = int(labels.max()) + 1 if labels.numel() else 0
    data = {"query_images": display_images(query_images),
            "query_targets": query_targets.detach().long().cpu().contiguous(),
            "neighbour_images": display_images(neighbour_images.flatten(0, 1)).reshape(neighbour_images.shape),
            "neighbour_targets": neighbour_targets.detach().long().cpu().contiguous(),
            "class_names": _names(class_names, count), "weights": None if weights is None else str(weights),
            "query_indices": None if query_indices is None else query_indices.detach().long().cpu().contiguous(),
            "neighbour_indices": None if neighbour_indices is None else
            neighbour_indices.detach().long().cpu().contiguous()}
    _check_retrieval(data, "save_retrieval_samples")
    return _save_atomic(data, Path(run_dir) / RETRIEVAL_FILE)


def _check_retrieval(data: dict[str, Any], where: Any) -> None:
    queries, labels = data["query_images"], data["query_targets"]
    neighbours, neighbour_labels = data["neighbour_images"], data["neighbour_targets"]
    problems = []
    if not isinstance(queries, torch.Tensor) or queries.dim() != 4:
        problems.append("query_images must be (Q, C, H, W)")
    elif not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (queries.shape[0],):
        problems.append(f"query_targets must be (Q,) = ({queries.shape[0]},)")
    elif not isinstance(neighbour_labels, torch.Tensor) or neighbour_labels.dim() != 2 \
            or neighbour_labels.shape[0] != queries.shape[0]:
        problems.append(f"neighbour_targets must be (Q, K) with Q = {queries.shape[0]}")
    elif not isinstance(neighbours, torch.Tensor) or \
            tuple(neighbours.shape) != (*neighbour_labels.shape, *queries.shape[1:]):
        problems.append(f"neighbour_images must be (Q, K, C, H, W) = {(*neighbour_labels.shape, *queries.shape[1:])}")
    _fail(where, problems, "save_retrieval_samples")


def load_retrieval_samples(path: str | Path) -> dict[str, Any]:
    """Read and check a file written by ``save_retrieval_samples``; adds ``correct`` ``(Q, K)`` (the
    neighbour has the query's label) and ``present`` ``(Q, K)`` (there is a neighbour)."""
    data = _load(path, ("query_images", "query_targets", "neighbour_images", "neighbour_targets"),
                 "save_retrieval_samples")
    _check_retrieval(data, path)
    data["present"] = data["neighbour_targets"] >= 0
    data["correct"] = data["present"] & (data["neighbour_targets"] == data["query_targets"][:, None])
    data.setdefault("class_names", None)
    return data


# -- detection ---------------------------------------------------------------------------------------
def save_detection_samples(
    run_dir: str | Path, images: torch.Tensor, predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]], class_names: Sequence[str] | None, score_threshold: float,
    max_boxes: int = 10, weights: str | None = None,
) -> Path:
    """Write ``run_dir/report/data/detection.pt``: ``images`` ``(N, C, H, W)``, each image's predicted
    boxes with a score >= ``score_threshold`` (the ``max_boxes`` best) and its true boxes, xyxy pixels.

    >>> import tempfile
    >>> pred = [{"boxes": torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2]]), "labels": torch.tensor([1, 1]),
    ...          "scores": torch.tensor([0.9, 0.1])}]
    >>> true = [{"boxes": torch.tensor([[1.0, 1, 3, 3]]), "labels": torch.tensor([1])}]
    >>> path = save_detection_samples(tempfile.mkdtemp(), torch.rand(1, 3, 4, 4), pred, true, None, 0.5)
    >>> [round(score, 2) for score in load_detection_samples(path)["pred_scores"][0].tolist()]
    [0.9]
    """
    kept: dict[str, list[torch.Tensor]] = {"pred_boxes": [], "pred_labels": [], "pred_scores": [],
                                           "true_boxes": [], "true_labels": []}
    top = 0
    for prediction, target in zip(predictions, targets):
        scores = prediction["scores"].detach().float().cpu()
        order = scores.argsort(descending=True)
        order = order[scores[order] >= score_threshold][:max_boxes]
        kept["pred_boxes"].append(prediction["boxes"].detach().float().cpu()[order].reshape(-1, 4).contiguous())
        kept["pred_labels"].append(prediction["labels"].detach().long().cpu()[order].contiguous())
        kept["pred_scores"].append(scores[order].contiguous())
        kept["true_boxes"].append(target["boxes"].detach().float().cpu().reshape(-1, 4).contiguous())
        kept["true_labels"].append(target["labels"].detach().long().cpu().contiguous())
        labels = torch.cat([kept["pred_labels"][-1], kept["true_labels"][-1]])
        top = max(top, int(labels.max()) if labels.numel() else 0)
    data = {"images": display_images(images), **kept, "class_names": _names(class_names, top + 1),
            "score_threshold": float(score_threshold), "weights": None if weights is None else str(weights)}
    _check_detection(data, "save_detection_samples")
    return _save_atomic(data, Path(run_dir) / DETECTION_FILE)


def _check_detection(data: dict[str, Any], where: Any) -> None:
    images = data["images"]
    problems = []
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        problems.append("images must be (N, C, H, W)")
    else:
        for key in ("pred_boxes", "pred_labels", "pred_scores", "true_boxes", "true_labels"):
            if not isinstance(data[key], list) or len(data[key]) != images.shape[0]:
                problems.append(f"{key} must be a list of {images.shape[0]} tensors (one per image)")
    _fail(where, problems, "save_detection_samples")


def load_detection_samples(path: str | Path) -> dict[str, Any]:
    """Read and check a file written by ``save_detection_samples``."""
    data = _load(path, ("images", "pred_boxes", "pred_labels", "pred_scores", "true_boxes", "true_labels",
                        "class_names", "score_threshold"), "save_detection_samples")
    _check_detection(data, path)
    return data
