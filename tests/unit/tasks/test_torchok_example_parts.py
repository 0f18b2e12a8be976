"""The parts TorchOk's SOP and Sweet Pepper examples need beyond their data sets: HitAtKMeter, the
contrastive loss on a relevance matrix, pairwise and triplet batches in their tasks, DiceLoss's ``mode``,
timm efficientnet stages for freeze entries, and the config's class count reaching the metrics."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from trainforge import TrainingConfig
from trainforge.config.build import _metric_spec, stage_modules
from trainforge.config.schema import MetricSection, parse
from trainforge.data.shapes import ShapesRetrieval
from trainforge.errors import ConfigError
from trainforge.losses.metric_learning import ContrastiveLoss
from trainforge.losses.segmentation import DiceLoss
from trainforge.metrics.retrieval import HitAtKMeter, RetrievalMetrics
from trainforge.models import build_model
from trainforge.tasks import PairwiseLearnTask, TripletLearnTask


def _embeddings(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % 5
    return torch.randn(n, 6, generator=g) + 1.5 * F.one_hot(targets, 6).float(), targets


def test_hit_at_k_is_leave_one_out_recall_at_k():
    embeddings, targets = _embeddings()
    reference = RetrievalMetrics(top_k=(1, 3), backend="torch")
    reference.update(embeddings, targets)
    expected = reference.compute()
    for k in (1, 3):
        meter = HitAtKMeter(k=k, dataset_type="classification", normalize_vectors=True, search_batch_size=256,
                            backend="torch")
        meter.update(embeddings[:17], targets[:17])  # two batches: the metric is over the whole set
        meter.update(embeddings[17:], targets[17:])
        assert float(meter.compute()) == pytest.approx(float(expected[f"recall_at_{k}"]))
    assert 0.0 < float(expected["recall_at_1"]) < float(expected["recall_at_3"]) <= 1.0


def test_hit_at_k_l2_ranks_by_distance_and_refuses_what_it_cannot_do():
    meter = HitAtKMeter(k=1, metric_distance="L2", backend="torch")
    # by inner product sample 0's nearest would be the long vector 2 (another group); by distance it is 1
    meter.update(torch.tensor([[1.0, 0.0], [0.8, 0.0], [5.0, 0.5]]), torch.tensor([0, 0, 1]))
    assert float(meter.compute()) == pytest.approx(1.0)  # group 1 has no second item: only 0 and 1 count
    with pytest.raises(ConfigError, match=r"dataset_type='representation' is not supported.*RetrievalMetrics"):
        HitAtKMeter(dataset_type="representation")
    with pytest.raises(ConfigError, match="metric_distance='cos'"):
        HitAtKMeter(metric_distance="cos")


def test_contrastive_loss_on_a_relevance_matrix_is_torchoks_and_finite_at_zero_distance():
    embeddings, targets = _embeddings(8)
    embeddings.requires_grad_(True)
    relevance = (targets[:, None] == targets[None, :]).float()
    loss = ContrastiveLoss(margin=1.0)(embeddings, embeddings, relevance)
    distance = torch.cdist(embeddings.detach(), embeddings.detach())
    expected = ((1 - relevance) * F.relu(1.0 - distance).square() + relevance * distance.square()).sum(1).mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()  # the diagonal (each sample with itself, d = 0) must not make the gradient NaN
    assert torch.isfinite(embeddings.grad).all()
    with pytest.raises(ValueError, match=r"R \(8, 7\) fits neither pairs .* nor a relevance matrix"):
        ContrastiveLoss()(embeddings, embeddings, relevance[:, :7])


def test_dice_loss_takes_torchoks_mode_multiclass_only():
    target = torch.tensor([[[0, 1], [2, 1]]])
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20
    assert float(DiceLoss(mode="multiclass")(logits, target)) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ConfigError, match=r"mode='binary' is not supported.*use mode: multiclass"):
        DiceLoss(mode="binary")


def _embedder() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("small_cnn", {"width": 4, "depth": 2}, pooling_name="Pooling", head_name="LinearHead",
                       head_params={"out_channels": 8})


def _ready(task_class: type, model: torch.nn.Module, tmp_path) -> Any:
    config = TrainingConfig(output_dir=str(tmp_path), tensorboard=False, report=False, checkpoint=None)
    task = task_class(model, config, train_data=ShapesRetrieval("train", samples_per_class=4, image_size=16))
    task.setup()
    return task


def test_pairwise_task_gives_torchoks_full_batch_embeddings_and_relevance(tmp_path):
    task = _ready(PairwiseLearnTask, _embedder(), tmp_path)
    batch = {"input": torch.rand(5, 3, 16, 16), "target": torch.tensor([0, 1, 0, 2, 1])}
    outputs = task.forward(batch, training=True)
    assert outputs["emb1"].shape == (5, 8) and outputs["emb2"] is outputs["emb1"]
    assert outputs["R"].tolist()[0] == [1.0, 0.0, 1.0, 0.0, 0.0] and outputs["R"].shape == (5, 5)
    assert torch.isfinite(task.compute_loss(outputs, batch).detach())


def test_triplet_task_embeds_anchor_positive_negative_in_one_pass(tmp_path):
    model = _embedder()
    task = _ready(TripletLearnTask, model, tmp_path)
    images = torch.rand(3, 4, 3, 16, 16)
    batch = {"input": images[0], "positive": images[1], "negative": images[2]}
    model.eval()  # BatchNorm by its running statistics: a sample's embedding does not depend on the others
    outputs = task.forward(batch, training=False)
    with torch.no_grad():
        alone = model(images[2])
    assert outputs["anchor"].shape == outputs["negative"].shape == (4, 8)
    assert torch.allclose(outputs["negative"], alone, atol=1e-5) and outputs["embeddings"] is outputs["anchor"]
    expected = F.triplet_margin_loss(outputs["anchor"], outputs["positive"], outputs["negative"], margin=0.2)
    assert float(task.compute_loss(outputs, batch).detach()) == pytest.approx(float(expected.detach()))
    assert "anchor" not in task.forward({"input": images[0], "target": torch.arange(4)}, training=False)


def test_freeze_stages_of_a_timm_efficientnet_open_its_blocks():
    backbone = build_model("semnasnet_100", {"pretrained": False}, pooling_name="Pooling").backbone
    stages = stage_modules(backbone)
    assert len(stages) == 5  # one per feature level, not the single `blocks` container
    names = {id(m): n for n, m in backbone.named_modules()}
    assert [names[id(m)].rsplit(".", 1)[-1] for m in stages[0]] == ["conv_stem", "bn1", "0"]


def test_metric_class_count_comes_from_the_head_when_task_params_have_none():
    accuracy = parse(MetricSection, {"name": "Accuracy", "phases": ["TRAIN"]}, "metrics[0]")
    assert _metric_spec(accuracy, 11318)["params"] == {"num_classes": 11318}
    given = parse(MetricSection, {"name": "Accuracy", "params": {"num_classes": 3}}, "metrics[0]")
    assert _metric_spec(given, 11318)["params"] == {"num_classes": 3}
    hit = parse(MetricSection, {"name": "HitAtKMeter", "params": {"k": 1}}, "metrics[1]")
    assert _metric_spec(hit, 11318)["params"] == {"k": 1}  # takes no num_classes
