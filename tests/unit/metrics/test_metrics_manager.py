from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, mean_squared_error, top_k_accuracy_score

from trainforge.errors import ConfigError, RegistryError
from trainforge.metrics import MetricsManager, build_metric, list_metrics, phase_prefix, snake_name

K = 5
SPECS = [
    {"name": "Accuracy"},
    {"name": "F1Score", "params": {"average": "macro"}, "alias": "f1_macro"},
    {"name": "ConfusionMatrix", "phases": ["VALID", "TEST"]},
]


def _batches(seed: int, n: int = 200, batch_size: int = 32, k: int = K):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=generator)
    target = torch.randint(0, k, (n,), generator=generator)
    # make the predictions informative, with a seed-dependent strength, so the loaders really differ
    logits[torch.arange(n), target] += 0.5 + seed % 3
    batches = [
        ({"output": logits[i : i + batch_size]}, {"input": torch.zeros(len(logits[i : i + batch_size]), 2),
                                                   "target": target[i : i + batch_size]})
        for i in range(0, n, batch_size)
    ]
    return batches, logits, target


def _feed(manager, phase, batches, loader=None):
    for outputs, batch in batches:
        manager.update(phase, outputs, batch, loader=loader)


def _expected(logits, target, prefix):
    preds = logits.argmax(1).numpy()
    return {
        f"{prefix}/accuracy": accuracy_score(target.numpy(), preds),
        f"{prefix}/f1_macro": f1_score(target.numpy(), preds, average="macro", labels=list(range(K))),
        f"{prefix}/confusion_matrix": confusion_matrix(target.numpy(), preds, labels=list(range(K))),
    }


def test_values_equal_sklearn_per_phase_and_per_loader():
    manager = MetricsManager(SPECS, num_classes=K)
    sources = {("TRAIN", None): 0, ("VALID", None): 1, ("VALID", "noisy"): 2}
    data = {key: _batches(seed) for key, seed in sources.items()}
    for (phase, loader), (batches, _, _) in data.items():
        _feed(manager, phase, batches, loader)

    seen_accuracies = set()
    for (phase, loader), (_, logits, target) in data.items():
        prefix = phase_prefix(phase, loader)
        results = manager.compute(phase, loader)
        expected = _expected(logits, target, prefix)
        if phase == "TRAIN":
            expected.pop(f"{prefix}/confusion_matrix")  # not among TRAIN's phases
        assert sorted(results) == sorted(expected)
        floats = manager.scalars(results)
        assert floats[f"{prefix}/accuracy"] == pytest.approx(expected[f"{prefix}/accuracy"], abs=1e-6)
        assert floats[f"{prefix}/f1_macro"] == pytest.approx(expected[f"{prefix}/f1_macro"], abs=1e-6)
        if phase == "VALID":
            np.testing.assert_array_equal(results[f"{prefix}/confusion_matrix"].numpy(),
                                          expected[f"{prefix}/confusion_matrix"])
        seen_accuracies.add(round(floats[f"{prefix}/accuracy"], 6))
    assert len(seen_accuracies) == 3  # each loader accumulated on its own data


def test_names_follow_the_documented_rule():
    manager = MetricsManager(SPECS, num_classes=K)
    assert manager.names("TRAIN") == ["train/accuracy", "train/f1_macro"]
    assert manager.names("valid", "noisy") == ["valid_noisy/accuracy", "valid_noisy/f1_macro",
                                               "valid_noisy/confusion_matrix"]
    assert manager.names("TEST")[-1] == "test/confusion_matrix"
    assert manager.names("PREDICT") == []
    with pytest.raises(ValueError, match="loader name"):
        manager.names("VALID", "has space")
    with pytest.raises(ConfigError, match="unknown phase"):
        manager.names("VAL")


def test_reset_starts_again_and_unupdated_metrics_are_left_out():
    manager = MetricsManager(SPECS, num_classes=K)
    batches, _, _ = _batches(3)
    assert manager.compute("VALID") == {}
    _feed(manager, "VALID", batches)
    manager.reset("VALID")
    _feed(manager, "VALID", batches[:2])
    logits = torch.cat([b[0]["output"] for b in batches[:2]])
    target = torch.cat([b[1]["target"] for b in batches[:2]])
    expected = accuracy_score(target.numpy(), logits.argmax(1).numpy())
    assert manager.scalars(manager.compute("VALID"))["valid/accuracy"] == pytest.approx(expected)


def test_top_k_larger_than_num_classes_is_clamped_with_one_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager = MetricsManager([{"name": "Accuracy", "params": {"top_k": 5}, "alias": "top5"},
                                  {"name": "Accuracy", "params": {"top_k": 2}, "alias": "top2"}], num_classes=3)
    messages = [str(w.message) for w in caught if "top_k" in str(w.message)]
    assert len(messages) == 1 and "top_k=5" in messages[0] and "3 classes" in messages[0]
    batches, logits, target = _batches(4, k=3)
    _feed(manager, "VALID", batches)
    floats = manager.scalars(manager.compute("VALID"))
    assert floats["valid/top5"] == 1.0  # top-3 of 3 classes always holds the target
    expected_top2 = top_k_accuracy_score(target.numpy(), logits.numpy(), k=2, labels=[0, 1, 2])
    assert floats["valid/top2"] == pytest.approx(expected_top2)


def test_unknown_metric_name_suggests_close_names():
    with pytest.raises(RegistryError, match="Accuracy") as info:
        MetricsManager([{"name": "Acuracy"}], num_classes=3)
    assert "list_metrics" in str(info.value)
    with pytest.raises(RegistryError, match="F1Score"):
        build_metric("F1")
    assert "JaccardIndex" in list_metrics() and "AUROC" in list_metrics()


@pytest.mark.parametrize("name", ["Accuracy", "F1Score", "ConfusionMatrix", "MulticlassAccuracy", "AUROC", "ROC",
                                  "JaccardIndex", "Precision", "Recall"])
def test_classification_metrics_build_by_name_and_compute(name):
    metric = build_metric(name, num_classes=4)
    generator = torch.Generator().manual_seed(0)
    metric.update(torch.randn(16, 4, generator=generator).softmax(-1), torch.arange(16) % 4)
    assert metric.compute() is not None


def test_regression_metric_matches_sklearn_with_a_custom_mapping():
    manager = MetricsManager([{"name": "MeanSquaredError", "mapping": {"preds": "prediction", "target": "target"},
                               "alias": "mse"}])
    generator = torch.Generator().manual_seed(0)
    preds, target = torch.randn(50, generator=generator), torch.randn(50, generator=generator)
    for i in range(0, 50, 10):  # tuple batches name their positions input, target, index
        manager.update("TRAIN", {"prediction": preds[i : i + 10]}, (torch.zeros(10), target[i : i + 10]))
    mse = manager.scalars(manager.compute("TRAIN"))["train/mse"]
    assert mse == pytest.approx(mean_squared_error(target.numpy(), preds.numpy()), rel=1e-5)


def test_missing_source_key_names_the_metric_the_key_and_what_exists():
    manager = MetricsManager([{"name": "Accuracy", "mapping": {"preds": "logits", "target": "target"}}],
                             num_classes=3)
    with pytest.raises(KeyError) as info:
        manager.update("TRAIN", {"output": torch.zeros(2, 3)}, {"input": torch.zeros(2), "target": torch.zeros(2)})
    message = str(info.value)
    assert "train/accuracy" in message and "'logits'" in message
    assert "['output']" in message and "['input', 'target']" in message


def test_config_errors():
    with pytest.raises(ConfigError, match="num_classes"):
        MetricsManager([{"name": "Accuracy"}])
    with pytest.raises(ConfigError, match="alias"):
        MetricsManager([{"name": "Accuracy"}, {"name": "Accuracy", "params": {"top_k": 2}}], num_classes=3)
    with pytest.raises(ConfigError, match="unknown keys"):
        MetricsManager([{"name": "Accuracy", "param": {}}], num_classes=3)


def test_inputs_are_validated_on_the_first_update_only():
    manager = MetricsManager([{"name": "Accuracy"}], num_classes=3)
    with pytest.raises(ValueError, match="number of classes"):  # torchmetrics' own check ran
        manager.update("TRAIN", {"output": torch.zeros(2, 4)}, {"target": torch.tensor([0, 1])})
    good = {"input": torch.zeros(2), "target": torch.tensor([0, 1])}
    manager.update("VALID", {"output": torch.zeros(2, 3)}, good)
    (entry,) = manager._bucket("VALID", None)
    assert entry.metric.validate_args is False
    strict = MetricsManager([{"name": "Accuracy"}], num_classes=3, validate_every_step=True)
    strict.update("VALID", {"output": torch.zeros(2, 3)}, good)
    assert strict._bucket("VALID", None)[0].metric.validate_args is True


def test_non_scalar_results_are_kept():
    manager = MetricsManager(
        [{"name": "ConfusionMatrix"}, {"name": "ROC"}, {"name": "Accuracy", "params": {"average": "none"},
                                                        "alias": "per_class_accuracy"}, {"name": "Accuracy"}],
        num_classes=3,
    )
    batches, _, _ = _batches(5, k=3)
    _feed(manager, "TEST", batches)
    results = manager.compute("TEST")
    assert results["test/confusion_matrix"].shape == (3, 3)
    assert isinstance(results["test/roc"], tuple) and len(results["test/roc"]) == 3
    assert results["test/per_class_accuracy"].shape == (3,)
    assert set(manager.scalars(results)) == {"test/accuracy"}
    assert set(manager.non_scalars(results)) == {"test/confusion_matrix", "test/roc", "test/per_class_accuracy"}


def test_state_dict_round_trip_continues_accumulation_exactly():
    specs = [*SPECS, {"name": "AUROC"}]  # AUROC without thresholds keeps list states
    batches, _, _ = _batches(6)
    extra, _, _ = _batches(7)
    uninterrupted = MetricsManager(specs, num_classes=K)
    _feed(uninterrupted, "VALID", batches)
    _feed(uninterrupted, "VALID", extra, loader="noisy")

    first = MetricsManager(specs, num_classes=K)
    _feed(first, "VALID", batches[:3])
    _feed(first, "VALID", extra[:2], loader="noisy")
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = MetricsManager(specs, num_classes=K)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    restored = resumed.compute("VALID")  # computable right away: update counts are restored too
    assert sorted(restored) == sorted(first.compute("VALID"))
    for name, value in first.compute("VALID").items():
        torch.testing.assert_close(restored[name], value, rtol=0, atol=0)
    _feed(resumed, "VALID", batches[3:])
    _feed(resumed, "VALID", extra[2:], loader="noisy")

    for loader in (None, "noisy"):
        want, got = uninterrupted.compute("VALID", loader), resumed.compute("VALID", loader)
        assert sorted(want) == sorted(got) and len(want) == 4
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
    assert resumed.compute("VALID")["valid/accuracy"] != first.compute("VALID")["valid/accuracy"]


def test_load_state_dict_rejects_other_metrics():
    saved = MetricsManager(SPECS, num_classes=K).state_dict()
    other = MetricsManager([{"name": "Accuracy"}], num_classes=K)
    with pytest.raises(KeyError, match=r"missing \[.*\], unexpected"):
        other.load_state_dict(saved)
    other.load_state_dict(saved, strict=False)


def test_to_moves_metrics_and_later_loaders():
    manager = MetricsManager(SPECS, num_classes=K).to("cpu")
    assert manager.device == torch.device("cpu")
    manager.names("VALID", "later")
    assert all(e.metric.device == torch.device("cpu") for e in manager._bucket("VALID", "later"))


def test_snake_name():
    assert snake_name("JaccardIndex") == "jaccard_index"
    assert snake_name("ROC") == "roc"
    assert snake_name("R2Score") == "r2_score"


def test_f1_precision_recall_default_to_macro_averaging_through_fit(tmp_path, digits):
    """Micro F1, precision and recall equal accuracy on single-label data; the defaults are per-class means."""
    from helpers import cfg, mlp
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
    from torch.utils.data import Subset

    from trainforge import Trainer

    valid = Subset(digits[1], range(120))
    config = cfg(tmp_path, metrics=["Accuracy", "F1Score", "Precision", "Recall"], lr=0.003)
    trainer = Trainer(mlp(), config, train_data=Subset(digits[0], range(128)), valid_data=valid)
    metrics = trainer.fit().metrics
    predictions = torch.cat([p["output"].argmax(1) for p in trainer.predict(valid)]).numpy()
    target = torch.stack([valid[i][1] for i in range(len(valid))]).numpy()
    labels = list(range(10))
    expected = {
        "accuracy": accuracy_score(target, predictions),
        "f1_score": f1_score(target, predictions, average="macro", labels=labels, zero_division=0),
        "precision": precision_score(target, predictions, average="macro", labels=labels, zero_division=0),
        "recall": recall_score(target, predictions, average="macro", labels=labels, zero_division=0),
    }
    for name, value in expected.items():
        assert metrics[f"valid/{name}"] == pytest.approx(value, abs=1e-5), name
    assert abs(metrics["valid/f1_score"] - metrics["valid/accuracy"]) > 1e-3  # not the micro value
