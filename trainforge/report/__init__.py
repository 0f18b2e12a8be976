"""The run report: ``build_report(run_dir)`` turns a run folder (``metrics.jsonl``, optional config,
classification data and extras) into a static HTML page with PNG figures. Sections are extensible with
``register_section``. matplotlib is imported only while figures are drawn."""

from __future__ import annotations

from .build import RunDataNotFoundError, build_report
from .data import CLASSIFICATION_FILE, load_classification_data, per_class_scores, save_classification_data
from .plots import confusion_matrix_figure
from .sections import Section, list_sections, register_section, unregister_section
from .series import load_run, split_name

__all__ = [
    "CLASSIFICATION_FILE",
    "RunDataNotFoundError",
    "Section",
    "build_report",
    "confusion_matrix_figure",
    "list_sections",
    "load_classification_data",
    "load_run",
    "per_class_scores",
    "register_section",
    "save_classification_data",
    "split_name",
    "unregister_section",
]
