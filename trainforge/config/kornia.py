"""Kornia's flat example configs (``data_path, batch_size, num_epochs, lr, output_path``) read as experiments:
each example's ``main.py`` recipe written once as TorchOk sections that interpolate the flat keys, so
``num_epochs=1`` and ``--multirun lr=1e-3,1e-4`` go through Hydra like any other override."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

#: The keys of Kornia's example configs (kornia/examples/train/*/config.yaml).
KORNIA_KEYS = ("data_path", "batch_size", "num_epochs", "lr", "output_path", "image_size")
EXAMPLES = ("image_classifier", "semantic_segmentation", "object_detection")

#: Kornia's image_classifier/main.py: CIFAR-10 from data_path, a resnet18 classifier, AdamW and a cosine
#: schedule over all steps (Kornia sized it per step but stepped it per epoch; here it steps per step),
#: flips as augmentation, checkpoint and early stopping on validation accuracy.
IMAGE_CLASSIFIER: dict[str, Any] = {
    "task": {"name": "ImageClassifierTrainer", "params": {
        "backbone_name": "resnet18", "backbone_params": {"pretrained": False},
        "pooling_name": "Pooling", "head_name": "ClassificationHead", "num_classes": 10}},
    "joint_loss": {"losses": [{"name": "CrossEntropyLoss"}]},
    "optimization": [{"optimizer": {"name": "AdamW", "params": {"lr": "${lr}"}},
                      "scheduler": {"name": "cosine", "pl_params": {"interval": "step"}}}],
    "data": {
        "TRAIN": [{"dataset": {"name": "CIFAR10", "params": {"root": "${data_path}", "train": True},
                               "augment": [{"name": "HorizontalFlip"}]},
                   "dataloader": {"batch_size": "${batch_size}"}}],
        "VALID": [{"dataset": {"name": "CIFAR10", "params": {"root": "${data_path}", "train": False}},
                   "dataloader": {"batch_size": "${batch_size}"}}],
    },
    "metrics": [{"name": "Accuracy"}],
    "callbacks": [{"name": "ModelCheckpoint", "params": {"monitor": "valid/accuracy", "mode": "max"}},
                  {"name": "EarlyStopping", "params": {"monitor": "valid/accuracy", "mode": "max", "patience": 50}}],
    "trainer": {"max_epochs": "${num_epochs}"},
    "logger": {"name": "TensorBoardLogger", "experiment_name": "kornia_image_classifier"},
}

TEMPLATES: dict[str, dict[str, Any]] = {"image_classifier": IMAGE_CLASSIFIER}


def is_kornia_config(values: Any) -> bool:
    """A flat mapping of Kornia's example keys, without TorchOk's sections.

    >>> is_kornia_config({"data_path": "./data", "batch_size": 2, "num_epochs": 2, "lr": 1e-3})
    True
    >>> is_kornia_config({"task": {"name": "ClassificationTask"}, "lr": 1e-3})
    False
    """
    return (isinstance(values, dict) and {"num_epochs", "lr", "data_path"} <= set(values)
            and not {"task", "data"} & set(values))


def kornia_experiment(values: dict[str, Any], example: str) -> tuple[dict[str, Any], list[str]]:
    """``(experiment, notes)``: the example's recipe with the flat keys filled in (still unresolved)."""
    chosen = values.get("kornia_example", example)
    if chosen not in TEMPLATES:
        known = ", ".join(TEMPLATES)
        if chosen in EXAMPLES:
            raise ConfigError(f"Kornia's {chosen} example downloads its data set (no local layout to read): write "
                              f"its data as TorchOk sections (data.TRAIN / data.VALID); ready recipes: {known}")
        raise ConfigError(f"a flat Kornia config: its folder ({chosen!r}) names no Kornia example; pass "
                          f"+kornia_example=NAME ({known}) or write TorchOk sections (task, data, ...)")
    unknown = sorted(set(values) - set(KORNIA_KEYS) - {"kornia_example"})
    if unknown:
        raise ConfigError(f"Kornia config has unknown key(s) {unknown}; its keys are {', '.join(KORNIA_KEYS)}")
    notes = [f"read as Kornia's {chosen} example ({', '.join(sorted(set(values) & set(KORNIA_KEYS)))} filled in)"]
    if "output_path" in values:
        notes.append("output_path is ignored: run folders are runs/<experiment_name>/<timestamp>")
    if "image_size" in values and chosen == "image_classifier":
        notes.append("image_size is ignored by the image_classifier recipe (CIFAR-10 is 32x32)")
    merged = {**_copy(TEMPLATES[chosen]), **values}
    return merged, notes


def strip_flat_keys(resolved: dict[str, Any]) -> dict[str, Any]:
    """The resolved experiment without the flat keys it was filled from."""
    return {k: v for k, v in resolved.items() if k not in (*KORNIA_KEYS, "kornia_example")}


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
