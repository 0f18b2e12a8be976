"""ClassificationTask: its defaults (loss, metrics with top-k clamped), mixup/cutmix, multi-label and
margin heads, each trained for real on a small slice of digits or shapes."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

from trainforge import TrainingConfig
from trainforge.data import load_digits_split, make_shapes
from trainforge.errors import ConfigError
from trainforge.models import build_model
from trainforge.registry import get_registry
from trainforge.tasks import ClassificationTask, ImageClassifierTrainer


def _config(tmp_path, **changes):
    base = dict(max_epochs=1, batch_size=32, lr=3e-3, output_dir=str(tmp_path), tensorboard=False, report=False,
                progress_bar=False, checkpoint=None, print_steps=None)
    base.update(changes)
    return TrainingConfig(**base)


def _model(num_classes=10, in_channels=1, head="ClassificationHead"):
    return build_model("small_cnn", {"width": 8, "depth": 2}, pooling_name="Pooling", head_name=head,
                       num_classes=num_classes, in_channels=in_channels)


def test_registered_under_torchok_and_kornia_names():
    tasks = get_registry("tasks")
    assert tasks.get("ClassificationTask") is ClassificationTask
    assert tasks.get("ImageClassifierTrainer") is ImageClassifierTrainer


def test_top_k_is_clamped_to_the_class_count(tmp_path):
    shapes = make_shapes(60, image_size=16)  # 3 classes: Kornia's top-5 broke here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task = ClassificationTask(_model(3, 3), _config(tmp_path), train_data=shapes, valid_data=shapes)
        metrics = task.evaluate()
    assert set(metrics) == {"valid/accuracy", "valid/accuracy_top5", "valid/loss"}
    assert metrics["valid/accuracy_top5"] == pytest.approx(1.0)  # top-3 of 3 classes
    assert task.config.metrics[1]["params"] == {"top_k": 3}


def test_label_smoothing_and_a_users_own_choices_are_kept(tmp_path):
    task = ClassificationTask(_model(), _config(tmp_path), label_smoothing=0.2)
    assert task.config.loss == "CrossEntropyLoss" and task.config.loss_params == {"label_smoothing": 0.2}
    own = ClassificationTask(_model(), _config(tmp_path, loss="NLLLoss", metrics=["F1Score"]))
    assert own.config.loss == "NLLLoss" and own.config.metrics == ["F1Score"]
    with pytest.raises(ConfigError, match="label_smoothing must be in"):
        ClassificationTask(_model(), _config(tmp_path), label_smoothing=1.5)
    with pytest.raises(ConfigError, match="top_k must be a positive int"):
        ClassificationTask(_model(), _config(tmp_path), top_k=0)


@pytest.mark.parametrize("alphas", [(0.4, 0.0), (0.0, 1.0)])
def test_mixup_and_cutmix_train_on_soft_targets(tmp_path, alphas):
    train, valid = load_digits_split(seed=0)
    seen = []

    class Spy(ClassificationTask):
        def compute_loss(self, outputs, batch):
            if self.model.training:
                seen.append(batch.get("mixed_target"))
            return super().compute_loss(outputs, batch)

    task = Spy(_model(), _config(tmp_path, max_epochs=2, drop_last=True), train_data=train, valid_data=valid,
               mixup_alpha=alphas[0], cutmix_alpha=alphas[1])
    metrics = task.fit().metrics
    assert seen and all(t is not None and t.shape == (32, 10) for t in seen)
    assert all(torch.allclose(t.sum(1), torch.ones(32)) for t in seen)
    assert not all(torch.equal(t, t.round()) for t in seen), "some targets are mixed"
    assert metrics["valid/accuracy"] > 0.5


def test_multilabel_trains_with_bce_and_reports_map_and_f1(tmp_path):
    train, valid = load_digits_split(seed=0)

    def multi_hot(ds):  # label "digit >= 5" and "digit is even": two independent labels
        y = ds.tensors[1]
        return TensorDataset(ds.tensors[0], torch.stack([(y >= 5), (y % 2 == 0)], 1).float())

    task = ClassificationTask(_model(2, head="MultiLabelHead"), _config(tmp_path, max_epochs=3),
                              train_data=multi_hot(train), valid_data=multi_hot(valid))
    assert task.config.loss == "BCEWithLogitsLoss"
    metrics = task.fit().metrics
    assert metrics["valid/map"] > 0.8 and metrics["valid/f1"] > 0.7, metrics


def test_arcface_head_gets_the_target_while_training(tmp_path):
    train, valid = load_digits_split(seed=0)
    model = build_model("small_cnn", {"width": 8, "depth": 2}, pooling_name="PoolingLinear",
                        pooling_params={"out_channels": 32}, head_name="ArcFaceHead",
                        head_params={"scale": 16.0, "margin": 0.2}, num_classes=10, in_channels=1)
    calls = []
    original = model.head.forward
    model.head.forward = lambda x, target=None: (calls.append(target is not None), original(x, target))[1]
    task = ClassificationTask(model, _config(tmp_path, max_epochs=3), train_data=train, valid_data=valid)
    metrics = task.fit().metrics
    assert True in calls and False in calls  # margins while training, plain cosines in evaluation
    assert metrics["valid/accuracy"] > 0.8
