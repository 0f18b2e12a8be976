"""The run report: ``build_report(run_dir)`` turns a run folder (``metrics.jsonl``, optional config,
classification data, the vision tasks' samples and extras) into a static HTML page with SVG charts and
PNG sample grids. Sections are extensible with ``register_section``. No plotting library is imported."""

from __future__ import annotations

from .build import RunDataError, RunDataNotFoundError, build_report
from .data import (
    CLASSIFICATION_FILE,
    METRIC_VALUES_FILE,
    ClassificationSamples,
    load_classification_data,
    load_metric_values,
    per_class_scores,
    save_classification_data,
    save_classification_samples,
    save_metric_values,
)
from .plots import confusion_matrix_figure, metric_figure
from .sections import Section, list_sections, register_section, unregister_section
from .series import load_run, split_name
from .task_data import (
    DETECTION_FILE,
    RETRIEVAL_FILE,
    SEGMENTATION_FILE,
    display_images,
    load_detection_samples,
    load_retrieval_samples,
    load_segmentation_samples,
    save_detection_samples,
    save_retrieval_samples,
    save_segmentation_samples,
)

__all__ = [
    "CLASSIFICATION_FILE",
    "DETECTION_FILE",
    "METRIC_VALUES_FILE",
    "RETRIEVAL_FILE",
    "SEGMENTATION_FILE",
    "ClassificationSamples",
    "RunDataError",
    "RunDataNotFoundError",
    "Section",
    "build_report",
    "confusion_matrix_figure",
    "display_images",
    "list_sections",
    "load_classification_data",
    "load_detection_samples",
    "load_metric_values",
    "load_retrieval_samples",
    "load_run",
    "load_segmentation_samples",
    "metric_figure",
    "per_class_scores",
    "register_section",
    "save_classification_data",
    "save_classification_samples",
    "save_detection_samples",
    "save_metric_values",
    "save_retrieval_samples",
    "save_segmentation_samples",
    "split_name",
    "unregister_section",
]
