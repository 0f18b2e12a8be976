"""The built-in report sections, in report order: summary, curves per metric, learning rate, throughput,
other scalars, classification (confusion matrix, per-class scores, best/worst/most-confused samples),
non-scalar metrics (every loader's confusion matrix, per-class values, curves), extras dropped by the
trainer, and the run's configuration."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import torch

from ..loggers.base import COUNTERS
from .data import (
    CLASSIFICATION_FILE,
    METRIC_VALUES_FILE,
    load_classification_data,
    load_metric_values,
    per_class_scores,
)
from .sections import Section, register_section
from .series import Series, load_run, split_name
from .svg import bar_chart, confusion_matrix_svg, line_chart, metric_svg, sample_grid_svg, save_svg

METRICS_FILE = "metrics.jsonl"
EXTRAS_DIR = Path("report") / "extras"
GRID_SIZE = 16  # samples per image grid
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


# -- small HTML helpers ------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    """A number for a table: 4 significant digits; anything else as text (escaped).

    >>> fmt(0.123456), fmt(12), fmt(float("nan")), fmt("<b>")
    ('0.1235', '12', 'nan', '&lt;b&gt;')
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return escape(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; cells are formatted with ``fmt`` (so escaped)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{fmt(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_name(prefix: str, name: str, taken: set[str], suffix: str = ".svg") -> str:
    """A file name for a figure of ``name`` that is safe and not yet ``taken``.

    >>> taken = set()
    >>> figure_name("curve", "loss", taken), figure_name("curve", "loss", taken), figure_name("x", "a/b c", taken)
    ('curve_loss.svg', 'curve_loss_2.svg', 'x_a_b_c.svg')
    """
    stem = f"{prefix}_{_UNSAFE.sub('_', name).strip('_') or 'metric'}"
    candidate, number = f"{stem}{suffix}", 1
    while candidate in taken:
        number += 1
        candidate = f"{stem}_{number}{suffix}"
    taken.add(candidate)
    return candidate


def _series(run_dir: Path) -> dict[str, Series]:
    return load_run(run_dir / METRICS_FILE)[1]


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


# -- sections ----------------------------------------------------------------------------------------
def summary_section(run_dir: Path, out_dir: Path) -> list[Section]:
    records, series = load_run(run_dir / METRICS_FILE)
    if not records:
        return [Section("Summary", "<p>metrics.jsonl holds no records yet.</p>")]
    times = [r["time"] for r in records if isinstance(r.get("time"), (int, float))]
    epochs = [r["epoch"] for r in records if isinstance(r.get("epoch"), int)]
    info = [
        ("records", len(records)),
        ("last step", max(int(r["step"]) for r in records)),
        ("last epoch", max(epochs) + 1 if epochs else "n/a"),
        ("seconds from first to last record", float(max(times) - min(times)) if times else "n/a"),
    ]
    rows = []
    for name, (_, values) in sorted(series.items(), key=lambda item: (split_name(item[0])[0] is None, item[0])):
        if name in COUNTERS:
            continue
        finite = _finite(values)
        rows.append((name, values[-1], min(finite) if finite else math.nan, max(finite) if finite else math.nan))
    html = table(["", ""], info) + "<h3>Final values</h3>" + table(["metric", "last", "min", "max"], rows)
    return [Section("Summary", html)]


def _curve_section(title: str, groups: Mapping[str, Mapping[str, Series]], out_dir: Path, prefix: str,
                   note: str = "") -> list[Section]:
    """One figure per entry of ``groups`` (figure title to its lines), as one section."""
    if not groups:
        return []
    section = Section(title, f"<p>{escape(note)}</p>" if note else "")
    taken: set[str] = set()
    for figure_title, lines in groups.items():
        svg = figure_name(prefix, figure_title, taken)
        positive = [v for _, values in lines.values() for v in _finite(values)]
        log_y = bool(positive) and min(positive) > 0 and max(positive) / min(positive) > 100
        save_svg(line_chart(figure_title, lines, log_y=log_y), out_dir / svg)
        section.images.append(svg)
        section.plotted[svg] = list(lines)
    return [section]


def curves_section(run_dir: Path, out_dir: Path) -> list[Section]:
    by_base: dict[str, dict[str, Series]] = {}
    for name, values in _series(run_dir).items():
        group, base = split_name(name)
        if group is not None:
            by_base.setdefault(base, {})[name] = values
    order = sorted(by_base, key=lambda base: (base != "loss", base))
    note = "One figure per metric; a line per phase and evaluation loader (train, valid, valid_<loader>, test)."
    return _curve_section("Loss and metrics", {base: by_base[base] for base in order}, out_dir, "curve", note)


def _is_lr(name: str) -> bool:
    return name == "lr" or name.startswith(("lr/", "lr_"))


def learning_rate_section(run_dir: Path, out_dir: Path) -> list[Section]:
    lines = {name: values for name, values in _series(run_dir).items() if _is_lr(name)}
    return _curve_section("Learning rate", {"learning rate": lines} if lines else {}, out_dir, "lr")


def throughput_section(run_dir: Path, out_dir: Path) -> list[Section]:
    series = _series(run_dir)
    names = [name for name in series if name.startswith("throughput/")]
    groups = {name.removeprefix("throughput/"): {name: series[name]} for name in names}
    sections = _curve_section("Throughput", groups, out_dir, "throughput")
    if sections:
        rows = [(name, sum(_finite(series[name][1])) / max(len(_finite(series[name][1])), 1)) for name in names]
        sections[0].html = table(["metric", "mean over the run"], rows)
    return sections


def other_section(run_dir: Path, out_dir: Path) -> list[Section]:
    groups = {
        name: {name: values}
        for name, values in _series(run_dir).items()
        if split_name(name)[0] is None and name not in COUNTERS and not _is_lr(name)
        and not name.startswith("throughput/")
    }
    return _curve_section("Other scalars", groups, out_dir, "other")


def _short(name: str, size: int = 12) -> str:
    return name if len(name) <= size else name[: size - 1] + "…"


def _grid(data: Mapping[str, Any], indices: torch.Tensor, out_dir: Path, file_name: str) -> str:
    names, probs, targets = data["class_names"], data["probs"], data["targets"]
    predicted = probs.argmax(1)
    titles = [
        f"true {_short(names[targets[i]])}\npred {_short(names[predicted[i]])} {float(probs[i, predicted[i]]):.2f}"
        for i in indices.tolist()
    ]
    correct = (predicted[indices] == targets[indices]).tolist()
    save_svg(sample_grid_svg(data["images"][indices], titles, correct), out_dir / file_name)
    return file_name


def classification_section(run_dir: Path, out_dir: Path) -> list[Section]:
    path = run_dir / CLASSIFICATION_FILE
    if not path.is_file():
        return []
    data = load_classification_data(path)
    names, matrix = data["class_names"], data["confusion_matrix"]
    scores = per_class_scores(matrix)
    total = int(matrix.sum())
    accuracy = float(matrix.diagonal().sum()) / max(total, 1)
    weights = data.get("weights") or "final weights"
    summary = table(["", ""], [("validation samples", total), ("weights", weights), ("accuracy", accuracy),
                               ("macro F1", float(scores["f1"].mean()))])
    title = f"Confusion matrix: validation set, {weights}"
    save_svg(confusion_matrix_svg(matrix, names, title=title.lower()), out_dir / "confusion_matrix.svg")
    sections = [Section(title, summary + "<p>Rows: true class; columns: predicted class.</p>",
                        ["confusion_matrix.svg"])]

    rows = [(name, *(float(scores[k][i]) for k in ("precision", "recall", "f1")), int(scores["support"][i]))
            for i, name in enumerate(names)]
    bars = {label: scores[key].tolist() for key, label in (("precision", "precision"), ("recall", "recall"),
                                                           ("f1", "F1"))}
    save_svg(bar_chart(f"per-class precision, recall and F1 · {weights}", names, bars, ylabel="score",
                       xlabel="class", y_max=1.05), out_dir / "per_class.svg")
    sections.append(Section("Per-class precision, recall and F1",
                            table(["class", "precision", "recall", "F1", "support"], rows), ["per_class.svg"]))
    if data["images"] is not None:  # None: the inputs were not images
        sections.append(_samples_section(data, out_dir))
    return sections


def _samples_section(data: Mapping[str, Any], out_dir: Path) -> Section:
    probs, targets, matrix = data["probs"], data["targets"], data["confusion_matrix"]
    predicted = probs.argmax(1)
    true_prob = probs.gather(1, targets[:, None]).squeeze(1)
    section = Section("Validation samples")
    notes = []
    correct = (predicted == targets).nonzero().squeeze(1)
    if correct.numel():
        best = correct[true_prob[correct].argsort(descending=True)][:GRID_SIZE]
        section.images.append(_grid(data, best, out_dir, "samples_best.svg"))
        notes.append("<b>Best</b>: correct, with the highest probability on the true class.")
    worst = true_prob.argsort()[:GRID_SIZE]
    if worst.numel():
        section.images.append(_grid(data, worst, out_dir, "samples_worst.svg"))
        notes.append("<b>Worst</b>: the lowest probability on the true class.")
    off_diagonal = matrix.clone()
    off_diagonal.fill_diagonal_(0)
    pairs = [(int(i) // matrix.shape[0], int(i) % matrix.shape[0])
             for i in off_diagonal.flatten().argsort(descending=True)[:3] if off_diagonal.flatten()[i] > 0]
    if pairs:
        chosen = torch.zeros_like(targets, dtype=torch.bool)
        for true_class, predicted_class in pairs:
            chosen |= (targets == true_class) & (predicted == predicted_class)
        indices = chosen.nonzero().squeeze(1)
        names = data["class_names"]
        described = ", ".join(f"{escape(names[t])} → {escape(names[p])} ({int(matrix[t, p])})" for t, p in pairs)
        if indices.numel():
            order = probs[indices, predicted[indices]].argsort(descending=True)
            section.images.append(_grid(data, indices[order][:GRID_SIZE], out_dir, "samples_confused.svg"))
            notes.append(f"<b>Most confused</b> pairs over the whole validation set: {described}.")
        else:
            notes.append(f"Most confused pairs: {described}; none of them is among the saved samples.")
    section.html = "<p>" + "<br>".join(notes) + "</p><p>Titles: true class, predicted class and its probability.</p>"
    return section


def metric_values_section(run_dir: Path, out_dir: Path) -> list[Section]:
    """A figure per non-scalar metric of the last evaluation of each loader (and of the last training
    epoch): confusion matrices, per-class values, ROC and precision-recall curves."""
    path = run_dir / METRIC_VALUES_FILE
    if not path.is_file():
        return []
    data = load_metric_values(path)
    weights = data.get("weights") or "last weights"
    section = Section("Non-scalar metrics", f"<p>Values of the last evaluation of each loader ({escape(weights)}), "
                      "and of the last training epoch (<code>train/...</code>). One confusion matrix per "
                      "evaluated loader: the main validation set's is the one above.</p>")
    skipped, taken = [], set()
    shown_above = (run_dir / CLASSIFICATION_FILE).is_file()
    for name, value in sorted(data["values"].items(), key=lambda item: (item[0].startswith("train"), item[0])):
        if _is_matrix(value) and (name.startswith("train/") or (shown_above and name.startswith("valid/"))):
            continue  # training epochs are not evaluations; the main validation matrix is drawn above
        phase = "training epoch" if name.startswith("train/") else weights
        svg = metric_svg(name, value, data.get("class_names"), title=f"{name} · {phase}")
        if svg is None:
            skipped.append(name)
            continue
        file_name = figure_name("metric", name, taken)
        save_svg(svg, out_dir / file_name)
        section.images.append(file_name)
    if skipped:
        section.html += f"<p>Not drawn (no picture for their shape): {escape(', '.join(skipped))}.</p>"
    return [section] if section.images or skipped else []


def _is_matrix(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[0] == value.shape[1]


def extras_section(run_dir: Path, out_dir: Path) -> list[Section]:
    folder = run_dir / EXTRAS_DIR
    if not folder.is_dir():
        return []
    sections = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json":
            content = json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".pt":
            content = torch.load(path, map_location="cpu", weights_only=True)
        else:
            continue
        sections.append(Section(path.name, _render_value(content)))
    return sections


def _render_value(content: Any) -> str:
    if isinstance(content, Mapping):
        rows = []
        for key, value in content.items():
            if isinstance(value, torch.Tensor):
                value = value.item() if value.numel() == 1 else f"tensor of shape {tuple(value.shape)}"
            elif not isinstance(value, (int, float, str, bool)) and value is not None:
                value = json.dumps(value, default=str)[:500]
            rows.append((key, value))
        return table(["key", "value"], rows)
    return f"<pre>{escape(json.dumps(content, indent=2, default=str)[:20000])}</pre>"


def config_section(run_dir: Path, out_dir: Path) -> list[Section]:
    parts = []
    config = run_dir / "config.yaml"
    if config.is_file():
        parts.append(f"<h3>config.yaml</h3><pre>{escape(config.read_text(encoding='utf-8'))}</pre>")
    hparams = run_dir / "hparams.json"
    if hparams.is_file():
        data = json.loads(hparams.read_text(encoding="utf-8"))
        parts.append("<h3>Hyper-parameters</h3>" + _render_value(data.get("params", {})))
    return [Section("Configuration", "".join(parts))] if parts else []


for _name, _fn in (
    ("summary", summary_section),
    ("curves", curves_section),
    ("learning_rate", learning_rate_section),
    ("throughput", throughput_section),
    ("other", other_section),
    ("classification", classification_section),
    ("metric_values", metric_values_section),
    ("extras", extras_section),
    ("config", config_section),
):
    register_section(_name, _fn, replace=True)
