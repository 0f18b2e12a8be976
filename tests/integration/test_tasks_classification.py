"""Proof: a model composed from parts, trained by ClassificationTask on digits (the 25% stratified split,
seed 0), reaches >= 99.0% validation accuracy within a CPU minute — printed next to an RBF SVC's."""

from __future__ import annotations

import time

import pytest
import torch

from trainforge import TrainingConfig
from trainforge.data import load_digits_split
from trainforge.models import build_model
from trainforge.tasks import ClassificationTask


def _svc_accuracy() -> float:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    digits = load_digits()  # the classic recipe: raw 0..16 pixels, gamma=0.001
    x_train, x_valid, y_train, y_valid = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
    return float(SVC(kernel="rbf", gamma=0.001).fit(x_train, y_train).score(x_valid, y_valid))


@pytest.mark.slow
def test_digits_classification_beats_99_percent(tmp_path):
    train, valid = load_digits_split(valid_fraction=0.25, seed=0)
    torch.manual_seed(0)  # the model's initial weights
    model = build_model("small_cnn", {"width": 24, "depth": 2}, pooling_name="Pooling",
                        head_name="ClassificationHead", num_classes=10, in_channels=1)
    config = TrainingConfig(max_epochs=10, batch_size=32, lr=3e-3, seed=0, output_dir=str(tmp_path),
                            tensorboard=False, progress_bar=False, checkpoint=None)
    task = ClassificationTask(model, config, train_data=train, valid_data=valid, label_smoothing=0.1)
    start = time.process_time()  # CPU seconds: the machine is shared, wall time is not ours
    task.fit()
    seconds = time.process_time() - start
    metrics = task.evaluate()
    svc = _svc_accuracy()
    print(f"\ndigits (25% split, seed 0): ClassificationTask small_cnn+Pooling+ClassificationHead "
          f"valid accuracy {metrics['valid/accuracy']:.4f} (top-5 {metrics['valid/accuracy_top5']:.4f}) "
          f"in {seconds:.1f} CPU s; RBF SVC {svc:.4f}")
    assert metrics["valid/accuracy"] >= 0.99
    assert seconds < 60
    assert (tmp_path / "report" / "index.html").is_file()
