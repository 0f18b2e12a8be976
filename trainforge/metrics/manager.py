"""``MetricsManager``: torchmetrics metrics per phase and per evaluation loader, updated on the device every
step, computed at the logging cadence and at epoch end, and saved in checkpoints so resumed runs continue
accumulating."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from ..errors import ConfigError
from .build import find_metric_class, resolve_params, snake_name

PHASES: tuple[str, ...] = ("TRAIN", "VALID", "TEST", "PREDICT")


class Phase(str, Enum):
    """TorchOk's phases; every API taking a phase also takes its string (``"TRAIN"``, ``"valid"``)."""

    TRAIN = "TRAIN"
    VALID = "VALID"
    TEST = "TEST"
    PREDICT = "PREDICT"

#: Prefix of result names per phase; a named extra loader appends ``_<loader>`` (``valid_noisy``).
PHASE_PREFIXES: dict[str, str] = {"TRAIN": "train", "VALID": "valid", "TEST": "test", "PREDICT": "predict"}
DEFAULT_MAPPING: dict[str, str] = {"preds": "output", "target": "target"}
DEFAULT_PHASES: tuple[str, ...] = ("TRAIN", "VALID", "TEST")
#: Names of the positions of a tuple batch ``(input, target[, index])``, so mappings can name them.
BATCH_FIELDS: tuple[str, ...] = ("input", "target", "index")
_SPEC_KEYS = ("name", "params", "mapping", "phases", "alias")
_LOADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def normalize_phase(phase: str) -> str:
    """``"valid"`` or ``"VALID"`` to ``"VALID"``; anything else is a ``ConfigError``.

    >>> normalize_phase("valid")
    'VALID'
    """
    upper = (phase.value if isinstance(phase, Enum) else str(phase)).upper()
    if upper not in PHASES:
        raise ConfigError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    return upper


def phase_prefix(phase: str, loader: str | None = None) -> str:
    """The prefix of result names: ``train``, ``valid``, ``test``, ``predict``; ``<prefix>_<loader>`` for a
    named extra loader. The phase's first (main) loader is ``loader=None`` and gets the plain prefix.

    >>> phase_prefix("VALID"), phase_prefix("VALID", "noisy"), phase_prefix("TEST", "cifar10-c")
    ('valid', 'valid_noisy', 'test_cifar10-c')
    """
    prefix = PHASE_PREFIXES[normalize_phase(phase)]
    if loader is None:
        return prefix
    if not _LOADER_NAME.match(loader):
        raise ConfigError(
            f"loader name {loader!r} cannot be part of a metric name; use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return f"{prefix}_{loader}"


@dataclass
class MetricSpec:
    """One metric: the torchmetrics class ``name``, its ``params``, which step output or batch field feeds
    each ``update`` argument (``mapping``), the ``phases`` it runs in and an optional display ``alias``."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    mapping: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MAPPING))
    phases: tuple[str, ...] = DEFAULT_PHASES
    alias: str | None = None

    @property
    def display_name(self) -> str:
        return self.alias or snake_name(self.name)

    @classmethod
    def parse(cls, spec: MetricSpec | Mapping[str, Any], index: int = 0) -> MetricSpec:
        """A ``MetricSpec`` from a dict such as ``{"name": "F1Score", "params": {"average": "macro"}}``."""
        if isinstance(spec, MetricSpec):
            return spec
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"metrics[{index}]: expected a dict with at least 'name', got {spec!r}")
        unknown = sorted(set(spec) - set(_SPEC_KEYS))
        if unknown:
            raise ConfigError(f"metrics[{index}]: unknown keys {unknown}; allowed keys are {list(_SPEC_KEYS)}")
        phases = spec.get("phases") or DEFAULT_PHASES
        if isinstance(phases, str):
            phases = [phases]
        return cls(
            name=str(spec["name"]),
            params=dict(spec.get("params") or {}),
            mapping=dict(spec.get("mapping") or DEFAULT_MAPPING),
            phases=tuple(normalize_phase(p) for p in phases),
            alias=spec.get("alias"),
        )


@dataclass
class _Entry:
    spec: MetricSpec
    name: str  # result name, "<prefix>/<display name>"
    metric: Any
    validate_once: bool  # validate inputs on the first update only (validation syncs with the host)


def _batch_fields(batch: Any) -> Mapping[str, Any]:
    if isinstance(batch, Mapping):
        return batch
    if isinstance(batch, (tuple, list)):
        return dict(zip(BATCH_FIELDS, batch))
    if isinstance(batch, torch.Tensor):
        return {"input": batch}
    return {}


def scalars(results: Mapping[str, Any]) -> dict[str, float]:
    """Host floats for the 0-d tensors (and plain numbers) of ``results``; other values are left out.

    This is the host sync point: one transfer per device for all values, at epoch end or at the logging
    cadence only.

    >>> scalars({"valid/accuracy": torch.tensor(0.5), "valid/confusion_matrix": torch.eye(2), "n": 3})
    {'valid/accuracy': 0.5, 'n': 3.0}
    """
    floats: dict[str, float] = {}
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, value in results.items():
        if not _is_scalar(value):
            continue
        if isinstance(value, torch.Tensor):
            by_device.setdefault(value.device, []).append((name, value))
        else:
            floats[name] = float(value)
    for pairs in by_device.values():
        values = torch.stack([t.detach().double() for _, t in pairs]).tolist()  # host sync
        floats.update((name, float(v)) for (name, _), v in zip(pairs, values))
    return {name: floats[name] for name in results if name in floats}


def non_scalars(results: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``results`` that ``scalars`` leaves out: confusion matrices, per-class values, curves.

    >>> sorted(non_scalars({"valid/accuracy": torch.tensor(0.5), "valid/roc": (torch.zeros(3), torch.ones(3))}))
    ['valid/roc']
    """
    return {name: value for name, value in results.items() if not _is_scalar(value)}


def to_host(value: Any) -> Any:
    """``value`` with every tensor inside (tuples, lists, dicts: curves, per-class values) detached and on
    the CPU; a host sync for device tensors, so call it at evaluation end only.

    >>> to_host({"roc": (torch.zeros(2), torch.ones(2))})["roc"][1]
    tensor([1., 1.])
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {key: to_host(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        items = [to_host(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dim() == 0
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metric_state(metric: Any) -> dict[str, Any]:
    """States of ``metric`` and of every metric inside it (wrappers), detached copies on the CPU."""
    from torchmetrics import Metric

    saved: dict[str, Any] = {}
    for module_name, module in metric.named_modules():
        if not isinstance(module, Metric):
            continue
        states = {}
        for attr, value in module.metric_state.items():
            if isinstance(value, torch.Tensor):
                states[attr] = value.detach().cpu().clone()
            else:  # list states (ROC without thresholds, CatMetric)
                states[attr] = [v.detach().cpu().clone() for v in value]
        saved[module_name] = {"states": states, "update_count": int(module._update_count)}
    return saved


def _load_metric_state(metric: Any, saved: Mapping[str, Any], where: str) -> None:
    modules = dict(metric.named_modules())
    for module_name, entry in saved.items():
        module = modules.get(module_name)
        if module is None or set(entry["states"]) != set(module.metric_state):
            raise KeyError(
                f"saved metric state {where!r} does not fit this metric (sub-metric {module_name!r}); "
                "use the same metric names and params as the saved run"
            )
        device = module.device
        for attr, value in entry["states"].items():
            if isinstance(value, torch.Tensor):
                setattr(module, attr, value.to(device))
            else:
                setattr(module, attr, [v.to(device) for v in value])
        module._update_count = int(entry["update_count"])
        module._computed = None  # drop a cached compute() of the old states


class MetricsManager:
    """Metrics per phase (``TRAIN``, ``VALID``, ``TEST``, ``PREDICT``) and per evaluation loader.

    Each spec names a torchmetrics class (see ``build_metric``) and builds one instance per
    ``(phase, loader)``, so training, validation and each validation loader accumulate apart.

    Naming rule: results are ``"<prefix>/<alias or snake_name(class)>"`` with prefix ``train``, ``valid``,
    ``test`` or ``predict`` for the phase's main loader (``loader=None``) and ``<prefix>_<loader>`` for a
    named extra loader (``valid_noisy/accuracy``). A metric returning a dict adds ``/<key>``.

    Inputs: ``mapping`` maps each ``update`` argument to a key looked up first in the step outputs, then
    in the batch (a dict, or a tuple ``(input, target[, index])``). Default ``{"preds": "output",
    "target": "target"}``. Inputs are validated by torchmetrics on the first update of each instance only
    (validation costs a host sync); pass ``validate_every_step=True`` to validate every step.

    Distributed: ``compute`` reduces across processes (torchmetrics does it when ``torch.distributed`` is
    initialized), so every rank must call it. ``state_dict`` holds this process's own states.

    >>> manager = MetricsManager([{"name": "Accuracy"}, {"name": "ConfusionMatrix", "phases": ["VALID"]}],
    ...                          num_classes=3)
    >>> batch = {"input": torch.zeros(4, 2), "target": torch.tensor([0, 1, 2, 2])}
    >>> logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    >>> manager.update("VALID", {"output": logits}, batch)
    >>> results = manager.compute("VALID")
    >>> manager.scalars(results)
    {'valid/accuracy': 0.75}
    >>> results["valid/confusion_matrix"].tolist()
    [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    """

    scalars = staticmethod(scalars)
    non_scalars = staticmethod(non_scalars)

    def __init__(
        self,
        specs: Iterable[MetricSpec | Mapping[str, Any]],
        num_classes: int | None = None,
        validate_every_step: bool = False,
    ) -> None:
        self.specs = [MetricSpec.parse(spec, i) for i, spec in enumerate(specs)]
        self.num_classes = num_classes
        self.validate_every_step = validate_every_step
        self.device: torch.device | None = None
        self._classes = [find_metric_class(spec.name) for spec in self.specs]
        # resolved once per spec, so a clamped top_k warns once, not once per phase and loader
        self._params = [resolve_params(c, s.params, num_classes) for c, s in zip(self._classes, self.specs)]
        self._check_unique_names()
        self._buckets: dict[tuple[str, str | None], list[_Entry]] = {}
        for phase in PHASES:  # build the main loaders' metrics now: bad params fail here, not mid-epoch
            self._bucket(phase, None)

    def _check_unique_names(self) -> None:
        for phase in PHASES:
            names = [s.display_name for s in self.specs if phase in s.phases]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ConfigError(
                    f"metrics: more than one {phase} metric is named {duplicates}; give each an 'alias' "
                    "(e.g. 'accuracy_top5')"
                )

    def _bucket(self, phase: str, loader: str | None) -> list[_Entry]:
        key = (phase, loader)
        bucket = self._buckets.get(key)
        if bucket is None:
            phase = normalize_phase(phase)
            key = (phase, loader)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = self._build_bucket(phase, loader)
        return bucket

    def _build_bucket(self, phase: str, loader: str | None) -> list[_Entry]:
        prefix = phase_prefix(phase, loader)
        bucket = []
        for spec, cls, params in zip(self.specs, self._classes, self._params):
            if phase not in spec.phases:
                continue
            metric = cls(**params)
            if self.device is not None:
                metric = metric.to(self.device)
            once = not self.validate_every_step and "validate_args" not in spec.params
            bucket.append(_Entry(spec, f"{prefix}/{spec.display_name}", metric, once))
        return bucket

    # -- the hot path ----------------------------------------------------------------------------
    def update(
        self, phase: str | Phase, outputs: Mapping[str, Any] | None = None, batch: Any = None,
        loader: str | None = None, **named_outputs: Any,
    ) -> None:
        """Update ``phase``'s metrics (of ``loader``) with one step: on the device, no host sync.

        Inputs come from ``outputs`` and ``batch``, or (TorchOk's way) as keywords named as the
        metrics' mappings name them: ``update(Phase.TRAIN, prediction=logits, target=y)``.
        """
        if named_outputs:
            outputs = {**(outputs or {}), **named_outputs}
        elif outputs is None:
            raise TypeError(
                "MetricsManager.update needs outputs (a dict) or named outputs (prediction=..., target=...)"
            )
        for entry in self._bucket(phase, loader):
            kwargs = {arg: self._source(entry, key, outputs, batch) for arg, key in entry.spec.mapping.items()}
            entry.metric.update(**kwargs)
            if entry.validate_once and hasattr(entry.metric, "validate_args"):
                entry.metric.validate_args = False  # validated once; later steps skip the syncing checks
                entry.validate_once = False

    @staticmethod
    def _source(entry: _Entry, key: str, outputs: Mapping[str, Any], batch: Any) -> Any:
        if key in outputs:
            value = outputs[key]
        else:
            fields = _batch_fields(batch)
            if key not in fields:
                raise KeyError(
                    f"metric {entry.name!r} ({entry.spec.name}) reads {key!r}, which is neither a step output "
                    f"(outputs have {sorted(outputs)}) nor a batch field (batch has {sorted(fields)}). "
                    "Fix the metric's 'mapping' or return that key from the step."
                )
            value = fields[key]
        return value.detach() if isinstance(value, torch.Tensor) else value  # list states must not hold graphs

    # -- cadence ---------------------------------------------------------------------------------
    def compute(self, phase: str, loader: str | None = None) -> dict[str, Any]:
        """Results of ``phase`` (of ``loader``) as device tensors (tuples for curves); metrics never
        updated since the last reset are left out. Reduces across processes when distributed."""
        results: dict[str, Any] = {}
        for entry in self._bucket(phase, loader):
            if entry.metric.update_count == 0:
                continue
            value = entry.metric.compute()
            if isinstance(value, Mapping):
                results.update((f"{entry.name}/{k}", v) for k, v in value.items())
            else:
                results[entry.name] = value
        return results

    def on_epoch_end(self, phase: str | Phase, loader: str | None = None) -> dict[str, Any]:
        """TorchOk's call: this epoch's results of ``phase`` (``compute``), then reset for the next epoch.

        >>> manager = MetricsManager([{"name": "Accuracy", "mapping": {"preds": "prediction", "target": "target"}}],
        ...                          num_classes=2)
        >>> manager.update(Phase.TRAIN, prediction=torch.tensor([[2.0, 0.0], [0.0, 2.0]]), target=torch.tensor([0, 0]))
        >>> {k: float(v) for k, v in manager.on_epoch_end(Phase.TRAIN).items()}
        {'train/accuracy': 0.5}
        >>> manager.on_epoch_end("TRAIN")  # reset: nothing collected since
        {}
        """
        results = self.compute(phase, loader=loader)
        self.reset(phase, loader=loader)
        return results

    def reset(self, phase: str, loader: str | None = None) -> None:
        """Start accumulating ``phase`` (of ``loader``) again, e.g. at each epoch or evaluation start."""
        for entry in self._bucket(phase, loader):
            entry.metric.reset()

    def names(self, phase: str, loader: str | None = None) -> list[str]:
        """Result names of ``phase`` (of ``loader``), without computing anything.

        >>> MetricsManager([{"name": "F1Score", "alias": "f1"}], num_classes=2).names("VALID", "noisy")
        ['valid_noisy/f1']
        """
        return [entry.name for entry in self._bucket(phase, loader)]

    def to(self, device: str | torch.device) -> MetricsManager:
        """Move every metric (and those created later) to ``device``."""
        self.device = torch.device(device)
        for bucket in self._buckets.values():
            for entry in bucket:
                entry.metric = entry.metric.to(self.device)
        return self

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Accumulated states of every metric, plain CPU tensors (loadable with ``weights_only=True``)."""
        saved: dict[str, dict[str, dict[str, Any]]] = {}
        for (phase, loader), bucket in self._buckets.items():
            states = {e.spec.display_name: _metric_state(e.metric) for e in bucket}
            if states:
                saved.setdefault(phase, {})[loader or ""] = states
        return {"format_version": 1, "metrics": saved}

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Restore states saved by ``state_dict``; later updates continue the saved accumulation."""
        for phase, loaders in state["metrics"].items():
            for loader, saved in loaders.items():
                bucket = {e.spec.display_name: e for e in self._bucket(phase, loader or None)}
                missing, unexpected = sorted(set(bucket) - set(saved)), sorted(set(saved) - set(bucket))
                if strict and (missing or unexpected):
                    raise KeyError(
                        f"saved {phase} metrics{f' of loader {loader!r}' if loader else ''} do not match: "
                        f"missing {missing}, unexpected {unexpected}. Configure the same metrics as the saved "
                        "run, or load with strict=False."
                    )
                for display_name, metric_state in saved.items():
                    if display_name in bucket:
                        _load_metric_state(bucket[display_name].metric, metric_state, display_name)

    def __repr__(self) -> str:
        return f"MetricsManager({[s.display_name for s in self.specs]}, num_classes={self.num_classes})"

