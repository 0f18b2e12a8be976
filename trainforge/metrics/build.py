"""Find and build torchmetrics classes by name, with trainforge's defaults (task, num_classes, top-k
clamping). torchmetrics is imported inside functions only, so importing this module stays light."""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import warnings
from typing import Any

from ..errors import ConfigError, RegistryError

#: Where a metric name is looked up, in order; the first namespace that has the name wins.
NAMESPACES: tuple[str, ...] = (
    "torchmetrics",
    "torchmetrics.classification",
    "torchmetrics.regression",
    "torchmetrics.aggregation",
    "torchmetrics.retrieval",
    "torchmetrics.nominal",
    "torchmetrics.segmentation",
    "torchmetrics.clustering",
    "torchmetrics.image",
    "torchmetrics.detection",
    "torchmetrics.text",
    "torchmetrics.audio",
    "torchmetrics.multimodal",
    "torchmetrics.shape",
    "torchmetrics.wrappers",
)

#: Task-generic torchmetrics classes whose own default is ``average="micro"``, which for single-label
#: data makes precision, recall and F1 all equal to accuracy: trainforge defaults them to ``"macro"``
#: (the mean over classes, what scikit-learn users expect of "F1"). ``Accuracy`` keeps micro averaging:
#: that is the usual meaning of accuracy.
MACRO_BY_DEFAULT: frozenset[str] = frozenset({"F1Score", "FBetaScore", "Precision", "Recall", "Specificity",
                                              "NegativePredictiveValue"})

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_name(class_name: str) -> str:
    """The display name of a metric class: ``CamelCase`` to ``snake_case``, acronyms kept whole.

    >>> [snake_name(n) for n in ("Accuracy", "F1Score", "AUROC", "MulticlassAUROC", "MeanSquaredError")]
    ['accuracy', 'f1_score', 'auroc', 'multiclass_auroc', 'mean_squared_error']
    """
    return _CAMEL_BOUNDARY.sub("_", class_name).lower()


def _namespace(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError:  # a namespace whose optional dependencies are missing holds nothing for us
        return None


def _is_metric_class(obj: Any) -> bool:
    from torchmetrics import Metric

    return inspect.isclass(obj) and issubclass(obj, Metric) and obj is not Metric


def list_metrics() -> list[str]:
    """Every metric class name that ``find_metric_class`` accepts, sorted.

    >>> {"Accuracy", "ConfusionMatrix", "MulticlassAccuracy", "MeanSquaredError"} <= set(list_metrics())
    True
    """
    names: set[str] = set(OWN_METRICS)
    for module_name in NAMESPACES:
        module = _namespace(module_name)
        if module is not None:
            names.update(n for n in dir(module) if not n.startswith("_") and _is_metric_class(getattr(module, n)))
    return sorted(names)


def _close_names(name: str, known: list[str]) -> list[str]:
    lowered = {k.lower(): k for k in known}
    close = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.6)]
    if len(name) >= 2:
        close += [k for k in known if name.lower() in k.lower() and k not in close]
    return close[:8]


#: trainforge's own metric classes: name -> module defining it (imported on first use, like torchmetrics).
OWN_METRICS: dict[str, str] = {"RetrievalMetrics": "trainforge.metrics.retrieval",
                               "HitAtKMeter": "trainforge.metrics.retrieval"}


def find_metric_class(name: str) -> type:
    """The torchmetrics class called ``name``; ``RegistryError`` with close matches when there is none.

    >>> find_metric_class("MulticlassAccuracy").__name__
    'MulticlassAccuracy'
    >>> find_metric_class("Acuracy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.RegistryError: unknown metric 'Acuracy'. Close matches: Accuracy, ...
    """
    if name in OWN_METRICS:
        return getattr(importlib.import_module(OWN_METRICS[name]), name)
    for module_name in NAMESPACES:
        module = _namespace(module_name)
        obj = getattr(module, name, None) if module is not None else None
        if obj is not None and _is_metric_class(obj):
            return obj
    close = _close_names(name, list_metrics())
    hint = f"Close matches: {', '.join(close)}." if close else "No close match."
    raise RegistryError(
        f"unknown metric {name!r}. {hint} Names are torchmetrics class names (case-sensitive); "
        "trainforge.metrics.list_metrics() lists them all."
    )


def _parameters(cls: type) -> set[str]:
    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return set()


def resolve_params(cls: type, params: dict[str, Any], num_classes: int | None) -> dict[str, Any]:
    """``params`` completed with trainforge's defaults for ``cls``; the input dict is not changed.

    Task-generic classes (``Accuracy``, ``F1Score``...) get ``task="multiclass"``; ``num_classes`` (or
    ``num_labels`` for multilabel) comes from ``num_classes`` when the class takes it and it is not given.
    F1, F-beta, precision, recall, specificity and NPV average over classes (``average="macro"``) unless
    ``average`` is given (see ``MACRO_BY_DEFAULT``). A ``top_k`` larger than the number of classes is
    clamped to it, with a warning.

    >>> from torchmetrics import Accuracy, F1Score
    >>> resolve_params(Accuracy, {}, num_classes=10)
    {'task': 'multiclass', 'num_classes': 10}
    >>> resolve_params(F1Score, {}, num_classes=10)
    {'task': 'multiclass', 'average': 'macro', 'num_classes': 10}
    """
    resolved = dict(params)
    accepted = _parameters(cls)
    if "task" in accepted:
        resolved.setdefault("task", "multiclass")
    if cls.__name__ in MACRO_BY_DEFAULT and "average" in accepted:
        resolved.setdefault("average", "macro")
    task = resolved.get("task")
    if num_classes is not None:
        if "num_classes" in accepted and task in (None, "multiclass"):
            resolved.setdefault("num_classes", num_classes)
        if "num_labels" in accepted and task in (None, "multilabel"):
            resolved.setdefault("num_labels", num_classes)
    if task == "multiclass" and resolved.get("num_classes") is None:
        raise ConfigError(
            f"metrics: {cls.__name__} with task='multiclass' needs num_classes; pass num_classes to "
            "MetricsManager or put it in the metric's params"
        )
    classes = resolved.get("num_classes")
    top_k = resolved.get("top_k")
    if top_k is not None and classes is not None and top_k > classes:
        warnings.warn(
            f"{cls.__name__}: top_k={top_k} is more than the {classes} classes; using top_k={classes}. "
            f"Set top_k <= {classes} to silence this warning.",
            stacklevel=3,
        )
        resolved["top_k"] = classes
    return resolved


def build_metric(name: str, num_classes: int | None = None, **params: Any) -> Any:
    """Build the torchmetrics metric called ``name`` with ``params`` and trainforge's defaults.

    >>> import torch
    >>> metric = build_metric("Accuracy", num_classes=3)
    >>> metric.update(torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]]), torch.tensor([0, 2]))
    >>> metric.compute()
    tensor(0.5000)
    """
    cls = find_metric_class(name)
    return cls(**resolve_params(cls, params, num_classes))
