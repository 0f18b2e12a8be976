"""The TorchOk seed's MetricsManager (torchok-getting-started.rst, "Metrics"): metrics with mappings,
``update(phase, **named_outputs)`` with the ``Phase`` enum or its strings, and ``on_epoch_end(phase)``
returning the epoch's metrics and resetting them — on digits, in a plain training loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from trainforge.data import load_digits_split
from trainforge.metrics import MetricsManager, Phase

METRICS = [  # the seed's YAML, as Python
    {"name": "Accuracy", "mapping": {"preds": "prediction", "target": "target"}},
    {"name": "F1Score", "mapping": {"preds": "prediction", "target": "target"}},
    {"name": "ConfusionMatrix", "mapping": {"preds": "prediction", "target": "target"}, "phases": ["VALID"]},
]


def test_metrics_manager_update_and_on_epoch_end_as_documented():
    torch.manual_seed(0)
    train, valid = load_digits_split()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    metrics_manager = MetricsManager(METRICS, num_classes=10)
    history = []
    for _ in range(3):
        for x, y in DataLoader(train, batch_size=64, shuffle=True):
            prediction = model(x)
            nn.functional.cross_entropy(prediction, y).backward()
            opt.step()
            opt.zero_grad()
            metrics_manager.update(Phase.TRAIN, prediction=prediction.detach(), target=y)
        with torch.no_grad():
            for x, y in DataLoader(valid, batch_size=128):
                metrics_manager.update("VALID", prediction=model(x), target=y)  # the phase as a string
        train_metrics = metrics_manager.on_epoch_end(Phase.TRAIN)
        valid_metrics = metrics_manager.on_epoch_end("valid")
        history.append((float(train_metrics["train/accuracy"]), float(valid_metrics["valid/accuracy"])))
        assert sorted(train_metrics) == ["train/accuracy", "train/f1_score"]
        assert valid_metrics["valid/confusion_matrix"].sum() == len(valid)  # non-scalar metrics are fine
    assert history[-1][1] > 0.9 and history[-1][0] > history[0][0]
    # reset after on_epoch_end: the next epoch starts empty
    assert metrics_manager.on_epoch_end(Phase.TRAIN) == {} and metrics_manager.on_epoch_end(Phase.VALID) == {}


def test_metrics_manager_bad_inputs_name_the_fix():
    manager = MetricsManager(METRICS[:1], num_classes=3)
    with pytest.raises(KeyError, match=r"reads 'prediction'.*Fix the metric's 'mapping'"):
        manager.update(Phase.TRAIN, preds=torch.zeros(2, 3), target=torch.zeros(2, dtype=torch.long))
    with pytest.raises(Exception, match="unknown phase 'TRIAN'"):
        manager.update("TRIAN", prediction=torch.zeros(2, 3), target=torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="needs outputs"):
        manager.update(Phase.TRAIN)
