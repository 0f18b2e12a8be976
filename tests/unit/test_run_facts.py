"""What a run records about itself — config.yaml of what was used, class names on every output — tested
through ``Trainer.fit`` on digits."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from helpers import cfg, mlp
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from trainforge import Trainer, TrainingConfig
from trainforge.errors import ConfigError

NAMES = [f"digit{i}" for i in range(10)]


class NamedDigits(TensorDataset):
    """Digits with a ``classes`` attribute, as torchvision's and trainforge's data sets have."""

    classes = NAMES


@pytest.fixture(scope="module")
def named(digits):
    train, valid = digits
    return NamedDigits(*train.tensors[:256]), NamedDigits(*(t[:100] for t in valid.tensors))


# -- config.yaml --------------------------------------------------------------------------------------
def test_config_yaml_records_the_objects_passed_not_the_defaults_they_replaced(tmp_path, named):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    Trainer(model, cfg(tmp_path), train_data=named[0], optimizer=optimizer, scheduler=scheduler,
            criterion=criterion).fit()
    path = tmp_path / "run" / "config.yaml"
    used = TrainingConfig.from_yaml(path)  # still a loadable config
    assert (used.optimizer, used.lr, used.weight_decay) == ("SGD", 0.05, 0.0)
    assert used.optimizer_params["momentum"] == 0.9 and used.optimizer_params["nesterov"] is True
    assert used.loss == "CrossEntropyLoss" and used.loss_params["label_smoothing"] == 0.1
    assert used.scheduler == "StepLR" and used.scheduler_params == {"step_size": 3, "gamma": 0.5}
    assert "AdamW" not in path.read_text() and "cosine" not in path.read_text()
    header = [line[1:] for line in path.read_text().splitlines() if line.startswith("#")]
    objects = yaml.safe_load("\n".join(line.removeprefix("  ") for line in header[1:]))
    parameters = sum(p.numel() for p in model.parameters())
    assert objects["model"] == {"class": "torch.nn.modules.container.Sequential", "parameters": parameters,
                                "trainable": parameters}
    assert objects["optimizer"]["class"] == "torch.optim.sgd.SGD" and objects["optimizer"]["momentum"] == 0.9
    assert objects["criterion"] == {"class": "torch.nn.modules.loss.CrossEntropyLoss", "weight": None,
                                    "ignore_index": -100, "reduction": "mean", "label_smoothing": 0.1}
    assert objects["scheduler"]["class"] == "torch.optim.lr_scheduler.StepLR"
    assert objects["class_names"] == {"names": NAMES, "from": "the training data's classes attribute"}
    hparams = json.loads((tmp_path / "run" / "hparams.json").read_text())["params"]
    assert hparams["optimizer"] == "SGD" and hparams["lr"] == 0.05


def test_config_yaml_of_a_config_only_run_is_the_config(tmp_path, named):
    trainer = Trainer(mlp(), cfg(tmp_path), train_data=named[0])
    trainer.fit()
    assert TrainingConfig.from_yaml(tmp_path / "run" / "config.yaml") == trainer.config


# -- class names --------------------------------------------------------------------------------------
def test_class_names_from_the_data_label_report_figures_and_exported_weights(tmp_path, named):
    from trainforge.export import load_safetensors
    from trainforge.report import CLASSIFICATION_FILE, METRIC_VALUES_FILE, load_classification_data, load_metric_values

    train = DataLoader(Subset(named[0], range(200)), batch_size=50)  # DataLoader -> Subset -> data set
    config = cfg(tmp_path, report=True, metrics=["Accuracy", "ConfusionMatrix"])
    trainer = Trainer(mlp(), config, train_data=train, valid_data=named[1])
    assert trainer.class_names == NAMES
    trainer.fit()
    run = tmp_path / "run"
    assert load_classification_data(run / CLASSIFICATION_FILE)["class_names"] == NAMES
    assert load_metric_values(run / METRIC_VALUES_FILE)["class_names"] == NAMES
    assert "digit7" in (run / "report" / "index.html").read_text()  # the per-class table
    _, metadata = load_safetensors(trainer.export_weights(run / "model.safetensors"))
    assert metadata["class_names"] == NAMES


def test_class_names_argument_labels_the_tensorboard_confusion_matrix(tmp_path, digits, monkeypatch):
    from trainforge.loggers import TensorBoardLogger

    titles = []

    def spy(self, tag, figure, step):
        titles.append([label.get_text() for label in figure.axes[0].get_yticklabels()])
        figure.clear()

    monkeypatch.setattr(TensorBoardLogger, "log_figure", spy)
    names = [f"c{i}" for i in range(10)]
    config = cfg(tmp_path, tensorboard=True, metrics=["ConfusionMatrix"])
    Trainer(mlp(), config, train_data=Subset(digits[0], range(128)), valid_data=Subset(digits[1], range(64)),
            class_names=names).fit()
    assert titles == [names]


def test_class_names_of_the_wrong_length_are_an_error_naming_both(tmp_path, named):
    trainer = Trainer(mlp(), cfg(tmp_path), train_data=named[0], class_names=["cat", "dog", "bird"])
    with pytest.raises(ConfigError, match=r"class_names has 3 names \(from the class_names argument\) but the "
                                          r"model outputs 10 classes"):
        trainer.fit()
    wrong = NamedDigits(*named[0].tensors)
    wrong.classes = ["a", "b"]
    with pytest.raises(ConfigError, match=r"2 names \(from the training data's classes attribute\).* 10 classes"):
        Trainer(mlp(), cfg(tmp_path / "b"), train_data=wrong).fit()


@pytest.mark.parametrize(("names", "message"), [
    ("cat", "class_names must be a list of strings, got str"),
    (["cat", 3], r"class_names\[1\] is 3"),
    (["cat", "cat"], r"class_names repeats \['cat'\]"),
])
def test_bad_class_names_are_rejected_with_what_was_received(tmp_path, names, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(mlp(), cfg(tmp_path), class_names=names)
