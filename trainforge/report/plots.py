"""matplotlib figures for loggers (``log_figure``: the confusion matrix and other non-scalar metrics sent
to TensorBoard) and for report sections that draw their own, with the object API (``Figure``, rendered
by Agg when saved: no pyplot, no global backend, no display; matplotlib imported inside each function).
The report's own charts and sample grids are SVG (``svg.py``)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .files import write_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: A title placed at a fixed height: matplotlib otherwise measures every tick label at each draw to
#: lift the title above them, a fifth of the time of drawing a small figure.
_TITLE_Y = 1.01


@contextlib.contextmanager
def figures_collected() -> Iterator[None]:
    """Run a block that draws and drops matplotlib figures, then free them at once.

    A figure is a web of reference cycles (artists, axes and figure point at each other): thousands of
    objects that only a full garbage collection frees, a pause of a fraction of a second for whatever
    runs next in a process holding torch. With the collector paused the block's objects stay in the
    youngest generation, and collecting only that generation afterwards frees them for the cost of
    looking at the block's own objects. A collector the caller switched off stays off.

    >>> import gc
    >>> with figures_collected():
    ...     figure = confusion_matrix_figure(torch.tensor([[3, 1], [0, 2]]))
    ...     del figure
    >>> gc.isenabled()
    True
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.collect(0)
            gc.enable()


def new_figure(width: float = 6.4, height: float = 3.6, layout: str | None = "constrained") -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout=layout)


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Save ``figure`` as PNG at ``path`` through a temporary file (a reader never sees half a file)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return write_atomic(path, buffer.getvalue())


def confusion_matrix_figure(
    matrix: torch.Tensor, class_names: Sequence[str] | None = None, normalize: bool = True,
    title: str = "confusion matrix",
) -> Figure:
    """The confusion matrix (rows: true class, columns: predicted), colored by row-normalized rate and
    annotated with counts when there are at most 20 classes. A matrix of fractions (torchmetrics'
    ``normalize="true"``) is shown as it is, annotated with its values.

    >>> len(confusion_matrix_figure(torch.tensor([[3, 1], [0, 2]]), ["cat", "dog"]).axes)
    2
    """
    values = matrix.detach().cpu()
    fractions = values.is_floating_point() and not bool((values == values.round()).all())
    counts = values.double() if fractions else values.long()
    classes = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
    if fractions or not normalize:
        rates = counts.double()
    else:
        rates = counts.double() / counts.sum(1, keepdim=True).clamp(min=1)
    size = min(3.0 + 0.45 * classes, 16.0)
    # fixed margins sized for the class names: a layout engine would draw the figure twice
    figure = new_figure(size + 1.0, size, layout=None)
    longest = max((len(name) for name in names), default=1)
    margin = min(0.25 + 0.075 * longest, 0.3 * size) / size  # inches of tick labels as a fraction
    rotated = classes > 6
    figure.subplots_adjust(left=margin + 0.08, right=0.9, top=0.93,
                           bottom=(margin if rotated else 0.3 / size) + 0.08)
    axes = figure.add_subplot()
    bounded = normalize or (fractions and float(rates.max()) <= 1.0)
    image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1 if bounded else None)
    label = "fraction" if fractions else "fraction of the true class" if normalize else "count"
    figure.colorbar(image, ax=axes, fraction=0.046, label=label)
    ticks = range(classes)
    axes.set_xticks(ticks, names, rotation=90 if rotated else 0)
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, y=_TITLE_Y)
    if classes <= 20:
        top = float(rates.max()) if rates.numel() else 0.0
        for row in range(classes):
            for column in range(classes):
                cell = counts[row, column]
                text = f"{float(cell):.2f}" if fractions else str(int(cell))
                axes.text(column, row, text, ha="center", va="center", fontsize=8,
                          color="white" if rates[row, column] > 0.5 * top else "black")
    return figure


def _curves(value: object) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """``(x, y)`` pairs of a curve metric's result (``(fpr, tpr, thresholds)``, ``(precision, recall,
    thresholds)``): one pair per class for per-class lists or ``(K, T)`` tensors; None if not a curve."""
    if not isinstance(value, (tuple, list)) or len(value) < 2:
        return None
    first, second = value[0], value[1]
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor) and first.shape == second.shape:
        if first.dim() == 1:
            return [(first, second)]
        if first.dim() == 2:
            return list(zip(first, second))
    if isinstance(first, (list, tuple)) and isinstance(second, (list, tuple)) and len(first) == len(second):
        pairs = list(zip(first, second))
        if all(isinstance(x, torch.Tensor) and x.dim() == 1 and x.shape == y.shape for x, y in pairs):
            return pairs
    return None


def metric_figure(
    name: str, value: object, class_names: Sequence[str] | None = None, title: str | None = None
) -> Figure | None:
    """A figure of a non-scalar metric value, or None when there is no sensible picture of it: a square
    matrix as a confusion matrix, a vector as bars per class, a curve (ROC, precision-recall) as lines.
    ``title`` (default ``name``) can say which weights were evaluated.

    >>> metric_figure("valid/accuracy", torch.tensor([0.5, 1.0]), ["cat", "dog"]).axes[0].get_title()
    'valid/accuracy'
    >>> metric_figure("valid/roc", (torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]), torch.ones(2))) is None
    False
    >>> metric_figure("valid/embeddings", torch.zeros(3, 4)) is None
    True
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dim() == 2 and value.shape[0] == value.shape[1]:
            names = class_names if class_names is not None and len(class_names) == value.shape[0] else None
            return confusion_matrix_figure(value, names, title=title or name)
        if value.dim() == 1 and value.numel() > 0:
            return _bars_figure(title or name, value, class_names)
        return None
    pairs = _curves(value)
    if pairs is None:
        return None
    swap = "precision_recall" in name  # (precision, recall, thresholds): recall on the x axis
    figure = new_figure(4.8, 4.2)
    axes = figure.add_subplot()
    for index, (x, y) in enumerate(pairs):
        x, y = (y, x) if swap else (x, y)
        label = (class_names[index] if class_names is not None and len(class_names) == len(pairs) else str(index))
        axes.plot(x.detach().float().cpu().tolist(), y.detach().float().cpu().tolist(), linewidth=1.2,
                  label=label if len(pairs) > 1 else None)
    axes.set_xlabel("recall" if swap else "false positive rate" if "roc" in name else "x")
    axes.set_ylabel("precision" if swap else "true positive rate" if "roc" in name else "y")
    axes.set_title(title or name, y=_TITLE_Y)
    axes.grid(alpha=0.3)
    if 1 < len(pairs) <= 20:
        axes.legend(fontsize=7)
    return figure


def _bars_figure(name: str, values: torch.Tensor, class_names: Sequence[str] | None) -> Figure:
    count = values.numel()
    names = list(class_names) if class_names is not None and len(class_names) == count else None
    names = names or [str(i) for i in range(count)]
    figure = new_figure(min(4.0 + 0.4 * count, 18.0), 3.6)
    axes = figure.add_subplot()
    axes.bar(range(count), values.double().tolist())
    axes.set_xticks(range(count), names, rotation=90 if count > 8 else 0)
    axes.set_xlabel("class")
    axes.set_title(name, y=_TITLE_Y)
    axes.grid(axis="y", alpha=0.3)
    return figure
