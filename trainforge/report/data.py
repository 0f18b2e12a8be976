"""What the trainer leaves for the report: the classification data file (sample images, targets,
probabilities, class names, confusion matrix) and the non-scalar metric values, written atomically;
and per-class scores from a confusion matrix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

#: Where ``save_classification_data`` writes, relative to the run folder.
CLASSIFICATION_FILE = Path("report") / "data" / "classification.pt"
#: Where ``save_metric_values`` writes, relative to the run folder.
METRIC_VALUES_FILE = Path("report") / "data" / "metric_values.pt"
_KEYS = ("images", "targets", "probs", "class_names", "confusion_matrix")


def _check(data: dict[str, Any], where: str) -> None:
    images, targets, probs = data["images"], data["targets"], data["probs"]
    matrix, names = data["confusion_matrix"], data["class_names"]
    count = len(names)
    problems = []
    samples = targets.shape[0] if images is None else images.shape[0]
    if images is not None and images.dim() != 4:
        problems.append(f"images must be (N, C, H, W) or None, got shape {tuple(images.shape)}")
    if targets.dim() != 1 or targets.shape[0] != samples:
        problems.append(f"targets must be (N,) with N={samples}, got shape {tuple(targets.shape)}")
    if probs.dim() != 2 or probs.shape[0] != samples or probs.shape[1] != count:
        problems.append(f"probs must be (N, K) = ({samples}, {count}), got shape {tuple(probs.shape)}")
    if matrix.dim() != 2 or tuple(matrix.shape) != (count, count):
        problems.append(f"confusion_matrix must be (K, K) = ({count}, {count}), got shape {tuple(matrix.shape)}")
    if targets.numel() and (targets.min() < 0 or targets.max() >= count):
        problems.append(f"targets must be class indices in [0, {count})")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))


def save_classification_data(
    run_dir: str | Path,
    images: torch.Tensor | None,
    targets: torch.Tensor,
    probs: torch.Tensor,
    class_names: Sequence[str],
    confusion_matrix: torch.Tensor,
    weights: str | None = None,
) -> Path:
    """Write ``run_dir/report/data/classification.pt`` for the report, atomically; return its path.

    ``images``: a subset of validation inputs ``(N, C, H, W)`` in [0, 1] (up to ~64 is plenty), or None
    when the inputs are not images (the report then shows no sample grids);
    ``targets`` ``(N,)`` and ``probs`` ``(N, K)`` (softmax) for those samples; ``confusion_matrix``
    ``(K, K)`` over the whole validation set, rows = true class, columns = predicted class; ``weights``
    says which weights were evaluated (``"last weights"``, ``"best checkpoint weights"``, ``"EMA of the
    last weights"``), for the report's titles. Plain tensors and strings only, so the file loads with
    ``weights_only=True``.

    >>> import tempfile
    >>> path = save_classification_data(tempfile.mkdtemp(), torch.rand(2, 1, 8, 8), torch.tensor([0, 1]),
    ...                                 torch.tensor([[0.9, 0.1], [0.3, 0.7]]), ["cat", "dog"], torch.eye(2))
    >>> load_classification_data(path)["class_names"]
    ['cat', 'dog']
    """
    data = {
        "images": None if images is None else images.detach().float().cpu().contiguous(),
        "targets": targets.detach().long().cpu().contiguous(),
        "probs": probs.detach().float().cpu().contiguous(),
        "class_names": [str(name) for name in class_names],
        "confusion_matrix": confusion_matrix.detach().long().cpu().contiguous(),
        "weights": None if weights is None else str(weights),
    }
    _check(data, "save_classification_data")
    return _save_atomic(data, Path(run_dir) / CLASSIFICATION_FILE)


def _save_atomic(data: Any, path: Path) -> Path:
    from ..checkpoint import atomic_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # all or nothing, not fsynced: report inputs are rewritten by every fit, not worth two fsyncs each
    with atomic_file(path, durable=False) as file:
        torch.save(data, file)
    return path


def _plain(value: Any) -> Any:
    """Tensors on the CPU inside plain tuples, lists and dicts (a named tuple becomes a tuple), so the file
    loads with ``weights_only=True``; anything else is left out (None)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        items = [_plain(item) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value if isinstance(value, (int, float, str, bool)) else None


def save_metric_values(
    run_dir: str | Path, values: Mapping[str, Any], class_names: Sequence[str] | None = None,
    weights: str | None = None,
) -> Path:
    """Write ``run_dir/report/data/metric_values.pt``: the non-scalar metric values by name (confusion
    matrices of every loader, per-class tensors, ``(fpr, tpr, thresholds)`` curves) for the report, and
    which ``weights`` the evaluations used.

    >>> import tempfile
    >>> path = save_metric_values(tempfile.mkdtemp(), {"valid/confusion_matrix": torch.eye(2, dtype=torch.long)})
    >>> load_metric_values(path)["values"]["valid/confusion_matrix"].tolist()
    [[1, 0], [0, 1]]
    """
    data = {"values": {str(name): _plain(value) for name, value in values.items()},
            "class_names": None if class_names is None else [str(name) for name in class_names],
            "weights": None if weights is None else str(weights)}
    return _save_atomic(data, Path(run_dir) / METRIC_VALUES_FILE)


def load_metric_values(path: str | Path) -> dict[str, Any]:
    """Read a file written by ``save_metric_values`` (tensors only: ``weights_only``)."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "values" not in data:
        raise ValueError(f"{path}: not a metric values file; write it with trainforge.report.save_metric_values")
    return data


def load_classification_data(path: str | Path) -> dict[str, Any]:
    """Read and check a file written by ``save_classification_data`` (tensors only: ``weights_only``)."""
    path = Path(path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    missing = [key for key in _KEYS if key not in data]
    if missing:
        raise ValueError(f"{path}: missing {missing}; write it with trainforge.report.save_classification_data")
    _check(data, str(path))
    return data


def per_class_scores(confusion_matrix: torch.Tensor) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and support per class from a confusion matrix (rows true, columns predicted);
    a score whose denominator is 0 is 0, as scikit-learn's ``zero_division=0``.

    >>> scores = per_class_scores(torch.tensor([[3, 1], [0, 2]]))
    >>> [round(v, 3) for v in scores["precision"].tolist()], [round(v, 3) for v in scores["recall"].tolist()]
    ([1.0, 0.667], [0.75, 1.0])
    """
    matrix = confusion_matrix.double()
    hits = matrix.diagonal()
    predicted, support = matrix.sum(0), matrix.sum(1)
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), torch.zeros_like(hits))
    recall = torch.where(support > 0, hits / support.clamp(min=1), torch.zeros_like(hits))
    total = precision + recall
    f1 = torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-12), torch.zeros_like(hits))
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.long()}


class ClassificationSamples:
    """The samples the report shows, chosen while validation batches stream by: the ``per_group`` best
    and worst (by true-class probability) and ``per_group // 2`` random ones, plus the confusion matrix
    over every sample. Memory stays bounded whatever the size of the data set. ``add`` a ``None``
    batch (not classification) and nothing will be saved.

    >>> samples = ClassificationSamples(per_group=1)
    >>> samples.add((None, torch.tensor([0, 1]), torch.tensor([[0.9, 0.1], [0.6, 0.4]])))
    True
    >>> samples.batches, samples.confusion.tolist()
    (1, [[1, 0], [1, 0]])
    """

    def __init__(self, per_group: int = 24, seed: int = 0) -> None:
        self.per_group = per_group
        self.generator = torch.Generator().manual_seed(seed)  # the global RNG stays untouched after training
        self.confusion: torch.Tensor | None = None
        self.kept: dict[str, Any] | None = None
        self.batches = 0
        self.classification = True

    def add(self, batch: tuple[torch.Tensor | None, torch.Tensor, torch.Tensor] | None) -> bool:
        """Take one ``(images or None, targets, probabilities)`` batch on the CPU; False (and the samples
        are dropped) for ``None``, a batch that is not classification."""
        if batch is None or not self.classification:
            self.classification, self.kept = False, None
            return False
        images, y, p = batch
        y, k = y.long(), p.shape[1]
        counts = torch.bincount(y * k + p.argmax(1), minlength=k * k).reshape(k, k)
        self.confusion = counts if self.confusion is None else self.confusion + counts
        new = {"images": images, "targets": y, "probs": p, "true": p[torch.arange(len(y)), y],
               "key": torch.rand(len(y), generator=self.generator)}
        kept = new if self.kept is None else {
            name: None if value is None else torch.cat([value, new[name]]) for name, value in self.kept.items()
        }
        order, random_order = kept["true"].argsort(), kept["key"].argsort()
        per_group = self.per_group
        chosen = torch.cat([order[:per_group], order[-per_group:], random_order[:per_group // 2]]).unique()
        self.kept = {name: None if value is None else value[chosen] for name, value in kept.items()}
        self.batches += 1
        return True

    def save(self, run_dir: str | Path, class_names: Sequence[str] | None, weights: str | None = None) -> bool:
        """Write what was kept with ``save_classification_data`` (images scaled to [0, 1] per image for
        display); False when there is nothing to write (no batch, or not classification)."""
        if self.kept is None or self.confusion is None:
            return False
        view = self.kept["images"]
        if view is not None:
            low = view.amin(dim=(1, 2, 3), keepdim=True)
            high = view.amax(dim=(1, 2, 3), keepdim=True)
            view = (view - low) / (high - low).clamp_min(1e-8)
        names = class_names or [str(i) for i in range(self.confusion.shape[0])]
        save_classification_data(run_dir, view, self.kept["targets"], self.kept["probs"], names, self.confusion,
                                 weights=weights)
        return True


def save_classification_samples(
    run_dir: Path, batches: Iterable[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor] | None],
    class_names: list[str] | None, per_group: int = 24, seed: int = 0, weights: str | None = None,
) -> bool:
    """Stream ``(images or None, targets, probabilities)`` batches through ``ClassificationSamples`` and
    write the chosen samples and the full confusion matrix for the report. A ``None`` batch (not
    classification) stops without writing. Returns whether the file was written.

    >>> import tempfile
    >>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> batches = [(torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 1]), probs)]
    >>> run = Path(tempfile.mkdtemp())
    >>> save_classification_samples(run, batches, ["cat", "dog"], per_group=1)
    True
    >>> from trainforge.report import CLASSIFICATION_FILE, load_classification_data
    >>> load_classification_data(run / CLASSIFICATION_FILE)["confusion_matrix"].tolist()
    [[1, 0], [1, 1]]
    """
    samples = ClassificationSamples(per_group=per_group, seed=seed)
    for batch in batches:
        if not samples.add(batch):
            return False
    return samples.save(run_dir, class_names, weights=weights)
