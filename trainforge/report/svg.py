"""The report's charts as SVG text written directly: line charts (metric curves, ROC), grouped bars
(per-class scores) and the confusion matrix. No plotting library: a chart is a few kilobytes of text,
sharp at any zoom, and costs microseconds instead of matplotlib's import and ~0.1-0.3 s per figure."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

import torch

#: matplotlib's ``tab10``: the colors users know from the old PNG figures.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
#: matplotlib's ``Blues``, sampled: the confusion matrix's colors from 0 to 1.
_BLUES = ((247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107))
_CHAR = 6.2  # mean width of an 11 px sans-serif character, for margins and legends
_MARKERS_UP_TO = 30  # points per line drawn with a marker too (a one-epoch run's validation point)
_MAX_LABEL = 24  # longer class or series names are cut (the full name is in a tooltip)
_MAX_TICK_LABELS = 40
_MAX_CELL_RECTS = 40  # classes up to which the confusion matrix is drawn cell by cell, above as one image

Line = tuple[Sequence[float], Sequence[float]]


def _n(value: float) -> str:
    """A coordinate with one decimal, without a trailing ``.0``."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _text(x: float, y: float, text: str, anchor: str = "middle", size: int = 11, extra: str = "") -> str:
    return (f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="{size}"{extra}>'
            f"{escape(text)}</text>")


def _upright(x: float, y: float, text: str, anchor: str = "middle", size: int = 11) -> str:
    """Text read bottom to top (an axis label, a class name under a narrow column)."""
    return _text(x, y, text, anchor=anchor, size=size, extra=f' transform="rotate(-90 {_n(x)} {_n(y)})"')


def _cut(name: str) -> str:
    return name if len(name) <= _MAX_LABEL else name[: _MAX_LABEL - 1] + "…"


def _svg(width: float, height: float, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
            f'viewBox="0 0 {_n(width)} {_n(height)}" font-family="DejaVu Sans, Arial, sans-serif" font-size="11">'
            f"<title>{escape(title)}</title>"
            f'<rect width="100%" height="100%" fill="white"/>{"".join(body)}</svg>\n')


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]`` (steps of 1, 2, 2.5 or 5 times a power of 10).

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(3, 47)
    [10.0, 20.0, 30.0, 40.0]
    """
    span = high - low
    if not span > 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    first = math.ceil(low / step - 1e-9)
    ticks = []
    index = first
    while index * step <= high + 1e-9 * span:
        ticks.append(float(round(index * step, 12)))
        index += 1
    return ticks


def _log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten in ``[low, high]``, with 2 and 5 times them when fewer than two decades show."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks = [10.0**k for k in decades if low <= 10.0**k <= high]
    if len(ticks) < 2:
        ticks = sorted(m * 10.0**k for k in decades for m in (1, 2, 5) if low <= m * 10.0**k <= high)
    return ticks


def tick_label(value: float, ticks: Sequence[float]) -> str:
    """A tick value printed with as many decimals as the tick spacing needs.

    >>> tick_label(0.4, [0.0, 0.2, 0.4]), tick_label(250.0, [0.0, 250.0]), tick_label(2e-05, [1e-05, 2e-05])
    ('0.4', '250', '2e-05')
    """
    finite = [abs(t) for t in ticks if t != 0]
    largest = max(finite, default=abs(value))
    step = min((abs(b - a) for a, b in itertools.pairwise(ticks) if b != a), default=largest or 1.0)
    if largest >= 1e5 or largest < 1e-3:
        return f"{value:.3g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step * 10**decimals, 6) % 1:  # a spacing of 2.5 x 10^k needs one more decimal
        decimals += 1
    return f"{value:.{decimals}f}"


class _Scale:
    """Data to pixels on one axis, linear or log10."""

    def __init__(self, low: float, high: float, start: float, end: float, log: bool = False) -> None:
        self.log = log
        self.low, self.high = (math.log10(low), math.log10(high)) if log else (low, high)
        self.start, self.end = start, end

    def __call__(self, value: float) -> float:
        value = math.log10(value) if self.log else value
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)


def _data_range(values: Sequence[float], log: bool, pad: float = 0.04) -> tuple[float, float]:
    low, high = min(values), max(values)
    if log:
        low, high = math.log10(low), math.log10(high)
    if high - low < 1e-12 * max(abs(low), abs(high), 1.0):
        spread = 0.5 if log else (abs(low) * 0.05 or 0.5)
        low, high = low - spread, high + spread
    else:
        margin = (high - low) * pad
        low, high = low - margin, high + margin
    return (10**low, 10**high) if log else (low, high)


def line_chart(
    title: str, lines: Mapping[str, Line], xlabel: str = "step", ylabel: str = "", log_y: bool = False,
    width: float = 640, height: float = 360, legend: bool | None = None,
) -> str:
    """An SVG line chart: one polyline per entry of ``lines`` (label to ``(x values, y values)``), broken
    where a value is not finite; with markers when a line has few points; a legend on the right when
    there is more than one line. Each line is a ``<g class="series" data-label=...>`` (for tests and
    readers of the file).

    >>> svg = line_chart("loss", {"train/loss": ([1, 2, 3], [0.9, 0.5, 0.4]), "valid/loss": ([3], [0.6])})
    >>> svg.startswith("<svg") and 'data-label="valid/loss"' in svg and ">loss</text>" in svg
    True
    """
    finite = [(x, y) for xs, ys in lines.values() for x, y in zip(xs, ys)
              if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)]
    labels = [_cut(label) for label in lines]
    legend = len(lines) > 1 if legend is None else legend
    legend_width = (34 + _CHAR * max((len(label) for label in labels), default=0)) if legend else 0
    left, right, top, bottom = 70.0, width - 16 - legend_width, 34.0, height - 44
    body = [_text(width / 2, 20, title, size=13)]
    if finite:
        x_low, x_high = _data_range([x for x, _ in finite], False, pad=0.02)
        y_low, y_high = _data_range([y for _, y in finite], log_y)
    else:
        x_low, x_high = 0.0, 1.0
        y_low, y_high = (0.1, 1.0) if log_y else (0.0, 1.0)
    sx, sy = _Scale(x_low, x_high, left, right), _Scale(y_low, y_high, bottom, top, log=log_y)
    body += _axes(sx, sy, left, right, top, bottom, x_low, x_high, y_low, y_high, log_y)
    body.append(_text((left + right) / 2, height - 10, xlabel))
    body.append(_upright(16, (top + bottom) / 2, ylabel or title))
    for index, (label, (xs, ys)) in enumerate(lines.items()):
        color = PALETTE[index % len(PALETTE)]
        body.append(_series(label, xs, ys, sx, sy, color, log_y))
        if legend:
            y = top + 8 + 16 * index
            body.append(f'<line x1="{_n(right + 14)}" y1="{_n(y)}" x2="{_n(right + 30)}" y2="{_n(y)}" '
                        f'stroke="{color}" stroke-width="2"/>')
            body.append(_text(right + 34, y + 4, labels[index], anchor="start"))
    return _svg(width, height, body, title)


def _axes(sx: _Scale, sy: _Scale, left: float, right: float, top: float, bottom: float, x_low: float,
          x_high: float, y_low: float, y_high: float, log_y: bool) -> list[str]:
    parts = [f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(right - left)}" height="{_n(bottom - top)}" '
             'fill="none" stroke="#444"/>']
    x_ticks = nice_ticks(x_low, x_high, 6)
    y_ticks = _log_ticks(y_low, y_high) if log_y else nice_ticks(y_low, y_high, 5)
    for value in x_ticks:
        x = sx(value)
        parts.append(f'<line x1="{_n(x)}" y1="{_n(top)}" x2="{_n(x)}" y2="{_n(bottom)}" stroke="#e4e4e4"/>')
        parts.append(_text(x, bottom + 15, tick_label(value, x_ticks)))
    for value in y_ticks:
        y = sy(value)
        parts.append(f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(right)}" y2="{_n(y)}" stroke="#e4e4e4"/>')
        label = f"{value:g}" if log_y else tick_label(value, y_ticks)
        parts.append(_text(left - 5, y + 4, label, anchor="end"))
    return parts


def _series(label: str, xs: Sequence[float], ys: Sequence[float], sx: _Scale, sy: _Scale, color: str,
            log_y: bool) -> str:
    runs: list[list[str]] = [[]]
    points = []
    for x, y in zip(xs, ys):
        if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y):
            point = f"{_n(sx(x))},{_n(sy(y))}"
            runs[-1].append(point)
            points.append(point)
        elif runs[-1]:
            runs.append([])  # a non-finite value breaks the line, as matplotlib draws NaN
    parts = [f'<g class="series" data-label="{escape(label)}"><title>{escape(label)}</title>']
    parts += [f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" stroke-width="1.5"/>'
              for run in runs if len(run) > 1]
    if len(points) <= _MARKERS_UP_TO:
        for point in points:
            x, y = point.split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>')
    return "".join(parts) + "</g>"


def bar_chart(
    title: str, categories: Sequence[str], groups: Mapping[str, Sequence[float]], ylabel: str = "",
    xlabel: str = "", y_max: float | None = None,
) -> str:
    """Grouped bars: for each category (a class), one bar per entry of ``groups`` (``precision``,
    ``recall``...), with a legend when there are several groups. Each bar is a ``<rect class="bar"
    data-group=... data-category=... data-value=...>``.

    >>> svg = bar_chart("scores", ["cat", "dog"], {"recall": [0.5, 1.0]})
    >>> svg.count('class="bar"'), 'data-category="dog"' in svg
    (2, True)
    """
    count = max(len(categories), 1)
    names = [_cut(str(name)) for name in categories]
    every = max(1, math.ceil(count / _MAX_TICK_LABELS))
    longest = max((len(name) for name in names), default=1)
    legend = len(groups) > 1
    legend_width = (30 + _CHAR * max(len(g) for g in groups)) if legend else 0
    width = min(max(400.0, 80 + 36 * count * max(len(groups), 1) / 2), 1800.0) + legend_width
    left, right, top = 56.0, width - 16 - legend_width, 34.0
    rotated = _CHAR * longest > (right - left) / count * every - 4  # names wider than their slot turn upright
    bottom_margin = (14 + _CHAR * longest if rotated else 22) + (20 if xlabel else 8)
    height = 300 + bottom_margin
    bottom = height - bottom_margin
    values = [v for series in groups.values() for v in series if math.isfinite(v)]
    high = y_max if y_max is not None else max(max(values, default=1.0), 0.0) * 1.05 or 1.0
    low = min(min(values, default=0.0), 0.0) * 1.05
    sy = _Scale(low, high, bottom, top)
    body = [_text(width / 2, 20, title, size=13)]
    ticks = nice_ticks(low, high, 5)
    body.append(f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(right - left)}" height="{_n(bottom - top)}" '
                'fill="none" stroke="#444"/>')
    for value in ticks:
        y = sy(value)
        body.append(f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(right)}" y2="{_n(y)}" stroke="#e4e4e4"/>')
        body.append(_text(left - 5, y + 4, tick_label(value, ticks), anchor="end"))
    slot = (right - left) / count
    bar = slot * 0.8 / max(len(groups), 1)
    for g, (group, series) in enumerate(groups.items()):
        color = PALETTE[g % len(PALETTE)]
        for i, value in enumerate(series):
            if not math.isfinite(value):
                continue
            x = left + slot * i + slot * 0.1 + bar * g
            y0, y1 = sy(max(value, 0.0)), sy(min(value, 0.0))
            body.append(f'<rect class="bar" data-group="{escape(group)}" data-category="{escape(str(categories[i]))}" '
                        f'data-value="{value:.6g}" x="{_n(x)}" y="{_n(y0)}" width="{_n(bar)}" '
                        f'height="{_n(max(y1 - y0, 0.0))}" fill="{color}"><title>{escape(str(categories[i]))} '
                        f"{escape(group)}: {value:.4g}</title></rect>")
        if legend:
            y = top + 8 + 16 * g
            body.append(f'<rect x="{_n(right + 12)}" y="{_n(y - 5)}" width="12" height="10" fill="{color}"/>')
            body.append(_text(right + 30, y + 4, group, anchor="start"))
    for i in range(0, len(names), every):
        x = left + slot * (i + 0.5)
        if rotated:
            body.append(_text(x + 4, bottom + 8, names[i], anchor="end",
                              extra=f' transform="rotate(-90 {_n(x + 4)} {_n(bottom + 8)})"'))
        else:
            body.append(_text(x, bottom + 15, names[i]))
    if xlabel:
        body.append(_text((left + right) / 2, height - 8, xlabel))
    if ylabel:
        body.append(_upright(14, (top + bottom) / 2, ylabel))
    return _svg(width, height, body, title)


def _blue(rate: float) -> str:
    """``Blues`` at ``rate`` in [0, 1], as ``#rrggbb``."""
    rate = min(max(rate, 0.0), 1.0) * (len(_BLUES) - 1)
    index = min(int(rate), len(_BLUES) - 2)
    fraction = rate - index
    low, high = _BLUES[index], _BLUES[index + 1]
    return "#" + "".join(f"{round(a + (b - a) * fraction):02x}" for a, b in zip(low, high))


def confusion_matrix_svg(
    matrix: torch.Tensor, class_names: Sequence[str] | None = None, normalize: bool = True,
    title: str = "confusion matrix",
) -> str:
    """The confusion matrix (rows: true class, columns: predicted) colored by the row-normalized rate,
    each cell annotated with its count up to 20 classes, class names on both axes. A matrix of fractions
    (torchmetrics' ``normalize="true"``) is shown as it is. Up to 40 classes every cell is a ``<rect
    class="cell" data-true=... data-predicted=... data-count=...>``; above, the cells are one embedded
    PNG (the file stays small) and every k-th class is named.

    >>> svg = confusion_matrix_svg(torch.tensor([[3, 1], [0, 2]]), ["cat", "dog"])
    >>> svg.count('class="cell"'), '>cat</text>' in svg, 'data-count="1"' in svg
    (4, True, True)
    """
    values = matrix.detach().cpu()
    fractions = values.is_floating_point() and not bool((values == values.round()).all())
    counts = values.double() if fractions else values.long()
    classes = counts.shape[0]
    names = [str(name) for name in class_names] if class_names is not None else [str(i) for i in range(classes)]
    if fractions or not normalize:
        rates = counts.double()
    else:
        rates = counts.double() / counts.sum(1, keepdim=True).clamp(min=1)
    largest = float(rates.max()) if rates.numel() else 0.0
    bounded = normalize or (fractions and largest <= 1.0)
    top_rate = 1.0 if bounded else max(largest, 1e-12)
    shown = rates / top_rate
    cell = min(max(440.0 / max(classes, 1), 4.0), 44.0)
    longest = max((len(_cut(n)) for n in names), default=1)
    every = max(1, math.ceil(classes / _MAX_TICK_LABELS))
    rotated = _CHAR * longest > cell * every - 4  # names wider than their column turn upright
    left = 40 + _CHAR * longest
    top = 40.0
    side = cell * classes
    bottom_margin = (14 + _CHAR * longest if rotated else 22) + 24
    width = left + side + 110
    height = top + side + bottom_margin
    body = [_text(width / 2, 22, title, size=13)]
    if classes <= _MAX_CELL_RECTS:
        for row in range(classes):
            for column in range(classes):
                rate = float(shown[row, column])
                count = counts[row, column]
                text = f"{float(count):.2f}" if fractions else str(int(count))
                x, y = left + column * cell, top + row * cell
                true, predicted = escape(names[row]), escape(names[column])
                body.append(f'<rect class="cell" data-true="{true}" data-predicted="{predicted}" data-count="{text}" '
                            f'x="{_n(x)}" y="{_n(y)}" width="{_n(cell)}" height="{_n(cell)}" fill="{_blue(rate)}">'
                            f"<title>true {true}, predicted {predicted}: {text}</title></rect>")
                if classes <= 20:
                    color = "white" if rate > 0.5 * float(shown.max()) else "black"
                    body.append(_text(x + cell / 2, y + cell / 2 + 4, text, size=10 if cell >= 26 else 8,
                                      extra=f' fill="{color}"'))
    else:
        body.append(_embedded_cells(shown, left, top, side))
    body.append(f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(side)}" height="{_n(side)}" fill="none" '
                'stroke="#444"/>')
    for index in range(0, classes, every):
        center = left + cell * (index + 0.5)
        body.append(_text(left - 5, top + cell * (index + 0.5) + 4, _cut(names[index]), anchor="end"))
        y = top + side + 8
        if rotated:
            body.append(_text(center + 4, y, _cut(names[index]), anchor="end",
                              extra=f' transform="rotate(-90 {_n(center + 4)} {_n(y)})"'))
        else:
            body.append(_text(center, y + 8, _cut(names[index])))
    body.append(_text(left + side / 2, height - 8, "predicted"))
    body.append(_upright(14, top + side / 2, "true"))
    label = "fraction" if fractions else "fraction of the true class" if normalize else "count"
    body += _color_bar(left + side + 16, top, side, top_rate, label)
    return _svg(width, height, body, title)


def _color_bar(x: float, top: float, length: float, high: float, label: str) -> list[str]:
    stops = "".join(f'<stop offset="{i / (len(_BLUES) - 1):.2f}" stop-color="{_blue(1 - i / (len(_BLUES) - 1))}"/>'
                    for i in range(len(_BLUES)))
    parts = [f'<defs><linearGradient id="blues" x1="0" y1="0" x2="0" y2="1">{stops}</linearGradient></defs>',
             f'<rect x="{_n(x)}" y="{_n(top)}" width="14" height="{_n(length)}" fill="url(#blues)" stroke="#444"/>']
    ticks = nice_ticks(0.0, high, 4)
    for value in ticks:
        y = top + length * (1 - value / high)
        parts.append(_text(x + 18, y + 4, tick_label(value, ticks), anchor="start", size=10))
    middle = top + length / 2
    parts.append(_text(x + 62, middle, label, size=10, extra=f' transform="rotate(-90 {_n(x + 62)} {_n(middle)})"'))
    return parts


def _embedded_cells(shown: torch.Tensor, left: float, top: float, side: float) -> str:
    """Many classes: the cells as one PNG inside the SVG (a data URI, nothing fetched), drawn unsmoothed."""
    import base64
    import io

    from PIL import Image

    stops = torch.tensor(_BLUES, dtype=torch.float64)
    position = shown.clamp(0, 1).double() * (len(_BLUES) - 1)
    index = position.floor().long().clamp(max=len(_BLUES) - 2)
    fraction = (position - index)[..., None]
    pixels = (stops[index] + (stops[index + 1] - stops[index]) * fraction).round().to(torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.numpy(), "RGB").save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<image x="{_n(left)}" y="{_n(top)}" width="{_n(side)}" height="{_n(side)}" '
            f'preserveAspectRatio="none" style="image-rendering:pixelated" href="data:image/png;base64,{data}"/>')


def metric_svg(
    name: str, value: object, class_names: Sequence[str] | None = None, title: str | None = None
) -> str | None:
    """An SVG of a non-scalar metric value, or None when there is no sensible picture of it: a square
    matrix as a confusion matrix, a vector as bars per class, a curve (ROC, precision-recall) as lines.

    >>> metric_svg("valid/per_class", torch.tensor([0.5, 1.0]), ["cat", "dog"]).count('class="bar"')
    2
    >>> metric_svg("valid/roc", (torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]), torch.ones(2))) is None
    False
    >>> metric_svg("valid/embeddings", torch.zeros(3, 4)) is None
    True
    """
    from .plots import _curves

    title = title or name
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dim() == 2 and value.shape[0] == value.shape[1]:
            names = class_names if class_names is not None and len(class_names) == value.shape[0] else None
            return confusion_matrix_svg(value, names, title=title)
        if value.dim() == 1 and value.numel() > 0:
            count = value.numel()
            names = list(class_names) if class_names is not None and len(class_names) == count else None
            return bar_chart(title, names or [str(i) for i in range(count)], {name: value.double().tolist()},
                             xlabel="class")
        return None
    pairs = _curves(value)
    if pairs is None:
        return None
    swap = "precision_recall" in name  # (precision, recall, thresholds): recall on the x axis
    named = class_names is not None and len(class_names) == len(pairs)
    lines = {}
    for index, (x, y) in enumerate(pairs):
        x, y = (y, x) if swap else (x, y)
        lines[str(class_names[index]) if named else str(index)] = (x.detach().double().cpu().tolist(),
                                                                    y.detach().double().cpu().tolist())
    xlabel = "recall" if swap else "false positive rate" if "roc" in name else "x"
    ylabel = "precision" if swap else "true positive rate" if "roc" in name else "y"
    return line_chart(title, lines, xlabel=xlabel, ylabel=ylabel, width=560, height=440,
                      legend=1 < len(pairs) <= 20)


def sample_grid_svg(
    images: torch.Tensor, titles: Sequence[str], correct: Sequence[bool], columns: int = 8, cell: int = 96,
) -> str:
    """Images ``(N, C, H, W)`` in [0, 1] in a grid, each captioned (``titles``, lines split at ``\\n``)
    in green when ``correct``, red otherwise. Each image is a small PNG inside the SVG (a data URI),
    upscaled by whole pixels so 8x8 digits stay sharp; captions are text, crisp and searchable, and
    cost nothing to draw. Each sample is a ``<g class="sample" data-correct=...>``.

    >>> svg = sample_grid_svg(torch.rand(3, 1, 8, 8), ["a\\nx", "b", "c"], [True, False, True], columns=2)
    >>> svg.count('class="sample"'), svg.count("data:image/png;base64,"), '>x</text>' in svg
    (3, 3, True)
    """
    import base64
    import io

    from PIL import Image

    count = images.shape[0]
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    pixels = images.detach().float().clamp(0, 1).cpu()
    if pixels.shape[1] != 3:
        pixels = pixels[:, :1].expand(-1, 3, -1, -1)
    height, width = pixels.shape[-2:]
    scale = max(1, cell // max(height, width))  # nearest-neighbour: the longer side becomes about ``cell``
    arrays = (pixels.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    image_h, image_w = height * scale, width * scale
    pad, caption = 4, 30
    cell_w, cell_h = max(image_w, 90) + 2 * pad, image_h + caption + 2 * pad
    body = []
    for index in range(count):
        left, top = (index % columns) * cell_w + pad, (index // columns) * cell_h + pad
        buffer = io.BytesIO()
        picture = Image.fromarray(arrays[index])
        if scale > 1:
            picture = picture.resize((image_w, image_h), Image.Resampling.NEAREST)
        picture.save(buffer, format="PNG", compress_level=1)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        color = "#008000" if correct[index] else "#c80000"
        lines = "".join(_text(left, top + image_h + 12 + 12 * i, line, anchor="start", size=10,
                              extra=f' fill="{color}"') for i, line in enumerate(titles[index].split("\n")))
        body.append(f'<g class="sample" data-correct="{str(bool(correct[index])).lower()}">'
                    f'<image x="{left}" y="{top}" width="{image_w}" height="{image_h}" '
                    f'href="data:image/png;base64,{data}"/>{lines}</g>')
    return _svg(columns * cell_w, rows * cell_h, body, "validation samples")


def save_svg(svg: str, path: str | Path) -> Path:
    """Write ``svg`` at ``path`` through a temporary file (a reader never sees half a file)."""
    from .files import write_atomic

    return write_atomic(path, svg)
