"""RetrievalMetrics: hand-checked values, faiss and torch k-NN agree, queries never find themselves,
and two processes (gloo) give the metrics of the whole set; metric-learning tasks train and report."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from trainforge import TrainingConfig
from trainforge.data.shapes import ShapesRetrieval
from trainforge.errors import ConfigError
from trainforge.metrics.retrieval import RetrievalMetrics
from trainforge.models import build_model
from trainforge.tasks import MarginLearnTask, PairwiseLearnTask, TripletLearnTask


def _data(seed: int = 0, n: int = 60):
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % 4
    embeddings = torch.randn(n, 8, generator=g) + 2.0 * torch.nn.functional.one_hot(targets, 8).float()
    query = torch.arange(n) % 3 == 0
    return embeddings, targets, query, ~query


def test_values_by_hand_and_self_exclusion():
    metric = RetrievalMetrics(top_k=(1, 3), backend="torch")
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    metric.update(emb, torch.tensor([0, 1, 1]))  # every sample a query and in the gallery, itself excluded
    result = {k: float(v) for k, v in metric.compute().items()}
    # query 0: no other class-0 item (skipped); query 1 finds 0 (wrong) then 2; query 2 finds 1 first
    assert result["recall_at_1"] == pytest.approx(0.5) and result["recall_at_3"] == pytest.approx(1.0)
    assert result["map_at_3"] == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ConfigError, match="top_k must be a positive int"):
        RetrievalMetrics(top_k=0)


def test_faiss_and_torch_agree():
    pytest.importorskip("faiss")  # faiss-cpu is a dev dependency: this runs in the suite
    embeddings, targets, query, gallery = _data()
    results = []
    for backend in ("torch", "faiss"):
        metric = RetrievalMetrics(top_k=(1, 5), backend=backend)
        metric.update(embeddings, targets, query, gallery)
        results.append({k: float(v) for k, v in metric.compute().items()})
    assert results[0] == pytest.approx(results[1])
    both = RetrievalMetrics(top_k=(1, 5), backend="faiss")
    both.update(embeddings, targets)  # leave-one-out through faiss: its own entry dropped
    loo = RetrievalMetrics(top_k=(1, 5), backend="torch")
    loo.update(embeddings, targets)
    assert {k: float(v) for k, v in both.compute().items()} == pytest.approx(
        {k: float(v) for k, v in loo.compute().items()})


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    embeddings, targets, query, gallery = _data()
    metric = RetrievalMetrics(top_k=(1, 5), backend="torch")
    shard = slice(rank, None, world)  # each process sees half of the samples
    metric.update(embeddings[shard], targets[shard], query[shard], gallery[shard])
    out[rank] = {k: float(v) for k, v in metric.compute().items()}
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_compute_the_whole_set():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, port, out), nprocs=2, join=True)
    embeddings, targets, query, gallery = _data()
    whole = RetrievalMetrics(top_k=(1, 5), backend="torch")
    whole.update(embeddings, targets, query, gallery)
    expected = {k: float(v) for k, v in whole.compute().items()}
    half = RetrievalMetrics(top_k=(1, 5), backend="torch")
    half.update(embeddings[::2], targets[::2], query[::2], gallery[::2])
    assert out[0] == pytest.approx(expected) and out[1] == pytest.approx(expected)
    assert {k: float(v) for k, v in half.compute().items()} != pytest.approx(expected)  # a shard alone differs


@pytest.mark.parametrize("task_class", [TripletLearnTask, PairwiseLearnTask, MarginLearnTask])
def test_metric_learning_tasks_train_and_retrieve(tmp_path, task_class):
    train = ShapesRetrieval("train", samples_per_class=24, image_size=16, seed=0)
    valid = ShapesRetrieval("valid", samples_per_class=12, queries_per_class=4, image_size=16, seed=0)
    torch.manual_seed(0)
    if task_class is MarginLearnTask:
        model = build_model("small_cnn", {"width": 8, "depth": 2}, pooling_name="PoolingLinear",
                            pooling_params={"out_channels": 16}, head_name="CosFaceHead", num_classes=6)
    else:
        model = build_model("small_cnn", {"width": 8, "depth": 2}, pooling_name="GeM", head_name="LinearHead",
                            head_params={"out_channels": 16})
    config = TrainingConfig(max_epochs=2, batch_size=48, lr=3e-3, output_dir=str(tmp_path), tensorboard=False,
                            report=False, progress_bar=False, checkpoint=None)
    task = task_class(model, config, train_data=train, valid_data=valid)
    metrics = task.fit().metrics
    assert 0.0 <= metrics["valid/retrieval/recall_at_1"] <= 1.0
    assert metrics["valid/retrieval/recall_at_5"] >= metrics["valid/retrieval/recall_at_1"]
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    if task_class is MarginLearnTask:
        assert "valid/loss" not in metrics  # not computed on held-out classes: not logged (it was NaN)
        assert all(math.isfinite(float(v)) for k, v in metrics.items() if isinstance(v, (int, float))), metrics
    else:
        assert math.isfinite(metrics["valid/loss"])
    with pytest.raises(ConfigError, match="margin head"):
        MarginLearnTask(build_model("small_cnn", pooling_name="Pooling"), config)
