"""``build_report(run_dir)``: one static HTML page (``run_dir/report/index.html``) with its figures beside
it (SVG charts, PNG sample grids), built from the run folder by the registered sections. No JavaScript,
no network, inline CSS only."""

from __future__ import annotations

import json
import math
import time
import warnings
from html import escape
from pathlib import Path

from ..errors import ConfigError
from . import (
    builtin,  # noqa: F401  (registers the built-in sections)
    tasks,  # noqa: F401  (registers the vision tasks' sections, after the built-in ones)
)
from .builtin import METRICS_FILE
from .files import write_atomic
from .plots import figures_collected
from .sections import SECTIONS, Section
from .series import load_run

CURVES_FILE = Path("data") / "curves.json"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
nav a { margin-right: .8rem; } table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } thead { background: #f4f4f4; }
img { max-width: 100%; margin: .4rem .4rem .4rem 0; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: .8rem; overflow-x: auto; font-size: .85rem; }
.error { color: #b00020; } .meta { color: #666; font-size: .9rem; }
"""


class RunDataError(ConfigError):
    """A run folder cannot be reported on (missing, or its ``metrics.jsonl`` is damaged); names the path."""


class RunDataNotFoundError(RunDataError, FileNotFoundError):
    """A run folder lacks the file a command needs (``metrics.jsonl`` for the report); names the path."""


def _run_sections(run_dir: Path, out_dir: Path, strict: bool) -> list[tuple[str, Section]]:
    built: list[tuple[str, Section]] = []
    for name, fn in list(SECTIONS.items()):
        try:
            with figures_collected():  # each section's figures are freed when it is done
                sections = fn(run_dir, out_dir)
            for section in sections:
                missing = [image for image in section.images if not (out_dir / image).is_file()]
                if missing:
                    raise ValueError(f"report section {name!r} lists images it did not write: {missing}")
        except Exception as error:
            if strict:
                raise
            warnings.warn(f"report section {name!r} failed: {error!r}", stacklevel=3)
            sections = [Section(f"{name} (failed)", f"<p class='error'>{escape(repr(error))}</p>")]
        built.extend((name, section) for section in sections)
    return built


def _write_curves(run_dir: Path, out_dir: Path, built: list[tuple[str, Section]]) -> None:
    """Save every plotted series, so the figures can be checked against ``metrics.jsonl``."""
    series = load_run(run_dir / METRICS_FILE)[1]
    figures = {image: names for _, section in built for image, names in section.plotted.items()}
    plotted = sorted({name for names in figures.values() for name in names})
    data = {
        "source": METRICS_FILE,
        "figures": figures,
        "series": {
            name: {"steps": series[name][0], "values": [v if math.isfinite(v) else None for v in series[name][1]]}
            for name in plotted
        },
    }
    path = out_dir / CURVES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data))


def _render(run_dir: Path, built: list[tuple[str, Section]]) -> str:
    anchors = [f"{name}-{index}" for index, (name, _) in enumerate(built)]
    nav = " ".join(f"<a href='#{a}'>{escape(s.title)}</a>" for a, (_, s) in zip(anchors, built))
    blocks = []
    for anchor, (_, section) in zip(anchors, built):
        images = "".join(f"<img src='{escape(image)}' alt='{escape(image)}'>" for image in section.images)
        blocks.append(f"<section id='{anchor}'><h2>{escape(section.title)}</h2>{section.html}{images}</section>")
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>trainforge report: {escape(run_dir.name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Run report: {escape(run_dir.name)}</h1>"
        f"<p class='meta'>{escape(str(run_dir))} · generated {generated} · "
        f"plotted data: <a href='{CURVES_FILE.as_posix()}'>{CURVES_FILE.as_posix()}</a></p>"
        f"<nav>{nav}</nav>{''.join(blocks)}</body></html>\n"
    )


def build_report(run_dir: str | Path, strict: bool = False) -> Path:
    """Build ``run_dir/report/index.html`` (figures beside it, plotted series in ``data/curves.json``) from
    ``run_dir/metrics.jsonl`` and whatever else the registered sections find; return the page's path.

    A section that fails is shown as an error in the page, with a warning (``strict=True`` raises
    instead). Raises ``RunDataNotFoundError`` when the folder or its ``metrics.jsonl`` is missing, and
    ``RunDataError`` when that file is damaged (a line that is not JSON, other than a cut-short last one).

    >>> import tempfile, pathlib
    >>> from trainforge.loggers import JsonlLogger
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> with JsonlLogger(run / "metrics.jsonl") as logger:
    ...     logger.log_metrics({"train/loss": 1.0, "lr": 0.1}, step=1)
    >>> build_report(run, strict=True).name
    'index.html'
    """
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_FILE
    if not run_dir.is_dir():
        raise RunDataNotFoundError(
            f"run folder {run_dir} does not exist or is not a folder; pass the folder of a run trained with "
            "trainforge (runs/<experiment>/<timestamp> by default, or the TrainingConfig.output_dir)"
        )
    if not metrics.is_file():
        raise RunDataNotFoundError(
            f"no {METRICS_FILE} in {run_dir} (looked for {metrics}); pass the folder of a run trained with "
            "trainforge, which writes it from the first logged step"
        )
    try:
        load_run(metrics)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise RunDataError(f"cannot build the report of {run_dir}: {metrics} is damaged: {error}") from None
    out_dir = run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    built = _run_sections(run_dir, out_dir, strict)
    _write_curves(run_dir, out_dir, built)
    page = out_dir / "index.html"
    write_atomic(page, _render(run_dir, built))
    return page
