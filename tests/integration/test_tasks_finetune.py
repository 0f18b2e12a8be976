"""Fine-tuning: train a composed classifier on digits 0-4, save it, load it into a model with a
different head through ``load_checkpoint`` with ``exclude_keys``, train on digits 5-9: the backbone
starts from the saved weights, the new head from its own initialisation."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from trainforge import TrainingConfig
from trainforge.data import load_digits_split
from trainforge.models import build_model
from trainforge.tasks import ClassificationTask


def _part(ds: TensorDataset, digits: range) -> TensorDataset:
    keep = torch.isin(ds.tensors[1], torch.tensor(list(digits)))
    return TensorDataset(ds.tensors[0][keep], ds.tensors[1][keep] - digits.start)


def _model(num_classes: int, head: str = "ClassificationHead") -> torch.nn.Module:
    return build_model("small_cnn", {"width": 16, "depth": 2}, pooling_name="PoolingLinear",
                       pooling_params={"out_channels": 32}, head_name=head, num_classes=num_classes, in_channels=1)


@pytest.mark.slow
def test_fine_tune_with_a_new_head(tmp_path):
    train, valid = load_digits_split(seed=0)
    settings = dict(max_epochs=4, batch_size=32, lr=3e-3, seed=0, tensorboard=False, report=False,
                    progress_bar=False)
    first = ClassificationTask(_model(5), TrainingConfig(output_dir=str(tmp_path / "first"), **settings),
                               train_data=_part(train, range(0, 5)), valid_data=_part(valid, range(0, 5)))
    first.fit()
    saved = first.save(tmp_path / "saved")
    trained = {k: v.clone() for k, v in first.model.state_dict().items()}

    torch.manual_seed(1)
    second_model = _model(5, head="CosFaceHead")  # a head of another kind: its keys differ from the saved ones
    fresh_head = {k: v.clone() for k, v in second_model.head.state_dict().items()}
    seen = {}

    class Probe:
        def on_fit_start(self, state):
            seen.update({k: v.clone() for k, v in second_model.state_dict().items()})

    config = TrainingConfig(output_dir=str(tmp_path / "second"), **settings,
                            load_checkpoint={"base_path": str(saved), "exclude_keys": ["head"]})
    second = ClassificationTask(second_model, config, train_data=_part(train, range(5, 10)),
                                valid_data=_part(valid, range(5, 10)), callbacks=[Probe()])
    metrics = second.fit().metrics
    backbone_keys = [k for k in trained if k.startswith(("backbone.", "pooling."))]
    assert backbone_keys and all(torch.equal(seen[k], trained[k]) for k in backbone_keys)
    assert all(torch.equal(seen[f"head.{k}"], v) for k, v in fresh_head.items())
    assert not torch.equal(second_model.backbone.state_dict()["stages.0.0.0.weight"],
                           trained["backbone.stages.0.0.0.weight"]), "the backbone trained on"
    print(f"\nfine-tuned on digits 5-9 from a 0-4 backbone: valid accuracy {metrics['valid/accuracy']:.3f}")
    assert metrics["valid/accuracy"] > 0.9
