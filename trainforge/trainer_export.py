"""What the Trainer's exports carry: the metadata of an exported safetensors file (class names,
preprocessing, versions, config and data hashes) and the example input an ONNX export is traced with."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import ConfigError
from .trainer_resume import data_fingerprint

if TYPE_CHECKING:
    import torch

    from .trainer import Trainer


def export_metadata(trainer: Trainer, preprocessing: Mapping[str, Any] | None) -> dict[str, Any]:
    """``Trainer.export_weights``'s metadata: ``image_size`` from the config updated with ``preprocessing``,
    the class names, the version, a hash of the resolved config and of the training data, whether EMA."""
    settings: dict[str, Any] = {} if trainer.config.image_size is None else {"image_size": trainer.config.image_size}
    settings.update(preprocessing or {})
    config_json = json.dumps(trainer.config.to_dict(), sort_keys=True, default=str)
    return {
        "class_names": trainer.class_names,
        "preprocessing": settings,
        "trainforge_version": __version__,
        "config_hash": hashlib.sha256(config_json.encode()).hexdigest()[:16],
        "dataset_hash": data_fingerprint(trainer)["dataset_hash"],
        "ema": trainer.ema is not None,
    }


def onnx_example_input(trainer: Trainer) -> torch.Tensor:
    """Two samples of the training (else validation) data after ``preprocess``, to trace an ONNX export."""
    from .export.sample import sample_input

    example_input = sample_input(trainer.train_data if trainer.train_data is not None else trainer.valid_data)
    if example_input is None:
        raise ConfigError("export_onnx needs an example input: this trainer has no data to take one from; "
                          "pass example_input=<batch tensor> or input_shape=(C, H, W)")
    return trainer.preprocess(example_input)
