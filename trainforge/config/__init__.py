"""YAML experiments: the schema (TorchOk's sections, typed), the build from config to Python objects
through the registries, and the Hydra command line. Hydra and OmegaConf are imported only here, lazily."""

from __future__ import annotations

from .build import Experiment, build_experiment, check_experiment
from .schema import ExperimentConfig, describe, parse_experiment

__all__ = ["Experiment", "ExperimentConfig", "build_experiment", "check_experiment", "describe", "parse_experiment"]
