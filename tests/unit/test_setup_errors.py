"""Bad setups are errors before training, naming what is wrong: missing or empty data, a model and data
that do not fit (checked on the first batch), a loss that is not one number, a model output the default
loss cannot read, monitors checked at set-up, a resume with another optimizer; and what must still work
(lr=0, a custom optimizer without lr, a TensorBoard folder of one's own)."""

from __future__ import annotations

import pytest
import torch
from helpers import cfg, mlp
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from trainforge import Trainer
from trainforge.errors import ConfigError, ResumeMismatchError


@pytest.fixture(scope="module")
def small(digits):
    train, valid = digits
    return Subset(train, range(256)), Subset(valid, range(64))


def run_dir_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "run").rglob("*")) if (tmp_path / "run").exists() else []


# -- data -----------------------------------------------------------------------------------------------
def test_fit_without_training_data_is_an_error(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path, checkpoint={"save_last": True}), valid_data=small[1])
    with pytest.raises(ConfigError, match=r"fit\(\) needs training data: pass train_data="):
        trainer.fit()
    assert "checkpoints" not in run_dir_files(tmp_path)  # no untrained weights saved as a run


def test_empty_training_and_validation_sets_are_named(tmp_path, small):
    with pytest.raises(ConfigError, match=r"^train_data is empty \(0 samples\)"):
        Trainer(mlp(), cfg(tmp_path), train_data=Subset(small[0], [])).fit()
    with pytest.raises(ConfigError, match=r"^valid_data\['noisy'\] is empty"):
        Trainer(mlp(), cfg(tmp_path), train_data=small[0], valid_data={"main": small[1], "noisy": []}).fit()
    assert run_dir_files(tmp_path) == []  # refused before the run folder was made


def test_drop_last_with_a_batch_larger_than_the_data(tmp_path, small):
    few = Subset(small[0], range(50))
    with pytest.raises(ConfigError, match=r"train_data has 50 samples, fewer than batch_size=64, and drop_last=True"):
        Trainer(mlp(), cfg(tmp_path, drop_last=True), train_data=few).fit()
    loader = DataLoader(few, batch_size=64, drop_last=True)
    with pytest.raises(ConfigError, match=r"train_data: the DataLoader gives no batches \(50 samples, batch_size=64"):
        Trainer(mlp(), cfg(tmp_path), train_data=loader).fit()
    Trainer(mlp(), cfg(tmp_path, drop_last=False), train_data=few).fit()  # one partial batch: fine


# -- the first batch against the model --------------------------------------------------------------
def test_more_labels_than_model_outputs(tmp_path, small):
    with pytest.raises(ConfigError) as error:
        Trainer(mlp_with_outputs(5), cfg(tmp_path), train_data=small[0]).fit()
    message = str(error.value)
    assert "labels up to 9, so at least 10 classes, but the model gives 5 outputs" in message
    assert "its last layer '3' has 5 outputs" in message and "num_classes >= 10" in message


def mlp_with_outputs(outputs: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, outputs))


def test_negative_labels_other_than_ignore_index(tmp_path, small):
    x = torch.stack([small[0][i][0] for i in range(64)])
    y = torch.tensor([small[0][i][1] for i in range(64)])
    bad = TensorDataset(x, torch.where(torch.arange(64) == 3, torch.tensor(-1), y))
    with pytest.raises(ConfigError, match=r"has the label -1 \(ignore_index is -100\); class labels are 0..9"):
        Trainer(mlp(), cfg(tmp_path), train_data=bad).fit()
    Trainer(mlp(), cfg(tmp_path), train_data=bad, criterion=nn.CrossEntropyLoss(ignore_index=-1)).fit()


def test_input_channels_name_the_layer_and_both_counts(tmp_path, small):
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    with pytest.raises(ConfigError, match=r"layer '0' \(Conv2d\) expects 3 input channels but gets 1 "
                                          r"\(its input has shape \[64, 1, 8, 8\]"):
        Trainer(conv, cfg(tmp_path), train_data=small[0]).fit()
    wide = nn.Sequential(nn.Flatten(), nn.Linear(128, 10))
    with pytest.raises(ConfigError, match=r"layer '1' \(Linear\) expects 128 input features but gets 64"):
        Trainer(wide, cfg(tmp_path), train_data=small[0]).fit()


def test_a_loss_per_sample_is_named_before_backward(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path), train_data=small[0], criterion=nn.CrossEntropyLoss(reduction="none"))
    with pytest.raises(ConfigError, match=r"the loss is not one number: CrossEntropyLoss returned a tensor of "
                                          r"shape \[64\].*reduction='mean'"):
        trainer.fit()
    assert trainer.global_step == 0


class Pair(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.net, self.as_dict = mlp(), as_dict

    def forward(self, x):
        logits = self.net(x)
        return {"logits": logits, "features": x.flatten(1)} if self.as_dict else (logits, x.flatten(1))


def test_model_outputs_the_default_loss_cannot_read(tmp_path, small):
    with pytest.raises(ConfigError, match=r"the model returned a tuple of 2 \(a tensor of shape \[64, 10\], a tensor "
                                          r"of shape \[64, 64\]\); the default loss needs one tensor"):
        Trainer(Pair(as_dict=False), cfg(tmp_path), train_data=small[0]).fit()
    with pytest.raises(ConfigError, match=r"the model returned a dict with keys \['features', 'logits'\]; the default "
                                          r"loss reads outputs\['output'\]"):
        Trainer(Pair(as_dict=True), cfg(tmp_path), train_data=small[0]).fit()


def test_the_checks_do_not_linger_after_the_first_batch(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path, max_epochs=2), train_data=small[0])
    assert trainer.fit().global_step == 8
    assert not any(type(c).__name__ == "FirstBatchCheck" for c in trainer.recipe.callbacks)
    with pytest.raises(RuntimeError) as error:  # torch's own error again: no hook of ours is left on the model
        trainer.model(torch.zeros(2, 1, 4, 4))
    assert not isinstance(error.value, ConfigError)


# -- settings checked at set-up, not after the first epoch ----------------------------------------------
def test_monitor_names_are_checked_at_setup(tmp_path, small):
    trainer = Trainer(mlp(), cfg(tmp_path, checkpoint={"monitor": "valid/acuracy", "mode": "max"}),
                      train_data=small[0], valid_data=small[1])
    with pytest.raises(ConfigError, match=r"checkpoint.monitor='valid/acuracy' is not a metric this run logs; did you "
                                          r"mean 'valid/accuracy'\?"):
        trainer.setup()
    assert run_dir_files(tmp_path) == []
    no_valid = Trainer(mlp(), cfg(tmp_path, early_stopping={"monitor": "valid/loss"}), train_data=small[0])
    with pytest.raises(ConfigError, match=r"early_stopping.monitor='valid/loss' is not a metric this run logs"):
        no_valid.setup()
    named = Trainer(mlp(), cfg(tmp_path, checkpoint={"monitor": "valid_noisy/accuracy", "mode": "max"}),
                    train_data=small[0], valid_data={"clean": small[1], "noisy": small[1]})
    named.setup()  # a named extra loader's metrics are loggable


def test_names_of_components_are_checked_at_setup(tmp_path, small):
    for overrides, expected in (
        ({"optimizer": "Adamm"}, "unknown optimizer 'Adamm'. Close matches: adam"),
        ({"metrics": ["Acuracy"]}, "unknown metric 'Acuracy'. Close matches: Accuracy"),
        ({"scheduler": "cosin"}, "unknown scheduler 'cosin'. Close matches: cosine"),
        ({"optimizer": "SGD", "optimizer_params": {"momentun": 0.9}}, r"'momentun' \(did you mean 'momentum'\?\)"),
        ({"metrics": [{"name": "F1Score", "params": {"averag": "macro"}}]},
         r"metrics\[0\] \(F1Score\): Unexpected keyword arguments: `averag`"),
        ({"loss_params": {"label_smoothin": 0.1}}, r"unexpected argument\(s\) \['label_smoothin'\]"),
    ):
        with pytest.raises((ConfigError, KeyError), match=expected):
            Trainer(mlp(), cfg(tmp_path, **overrides), train_data=small[0]).setup()
    assert run_dir_files(tmp_path) == []


def test_resume_with_another_optimizer_names_both(tmp_path, small):
    saved = Trainer(mlp(), cfg(tmp_path, optimizer="SGD", optimizer_params={"momentum": 0.9}), train_data=small[0])
    saved.fit()
    path = saved.save(tmp_path / "ckpt")
    other = Trainer(mlp(), cfg(tmp_path, max_epochs=2, optimizer="AdamW", output_dir=str(tmp_path / "run2")),
                    train_data=small[0])
    with pytest.raises(ResumeMismatchError, match=r"optimizer changed from 'SGD' \(saved run\) to 'AdamW' \(this run\)"
                                                  r".*resume with optimizer='SGD'"):
        other.fit(resume_from=path)
    same = Trainer(mlp(), cfg(tmp_path, max_epochs=2, optimizer="sgd", optimizer_params={"momentum": 0.9},
                              output_dir=str(tmp_path / "run3")), train_data=small[0])
    assert same.fit(resume_from=path).epoch == 2  # the same optimizer, spelled in another case


# -- what must keep working -------------------------------------------------------------------------------
def test_lr_zero_trains_without_changing_the_weights(tmp_path, small):
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    Trainer(model, cfg(tmp_path, lr=0.0, optimizer="SGD"), train_data=small[0]).fit()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


class PlainSGD(torch.optim.Optimizer):
    """The Towhee seed's custom optimizer: built with defaults={}, so its param groups have no lr."""

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.data.add_(p.grad, alpha=-0.1)


def test_custom_optimizer_without_lr_trains(tmp_path, small):
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, cfg(tmp_path), train_data=small[0])
    trainer.set_optimizer(PlainSGD(model.parameters(), defaults={}))
    with pytest.warns(UserWarning, match="PlainSGD has no 'lr' in its param groups"):
        state = trainer.fit()
    assert state.global_step == 4 and not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_tensorboard_log_dir_inside_the_run_folder_and_absolute(tmp_path, small):
    Trainer(mlp(), cfg(tmp_path, tensorboard={"log_dir": "mylogdir"}), train_data=small[0]).fit()
    assert any((tmp_path / "run" / "mylogdir").glob("events.out.tfevents.*"))
    assert not (tmp_path / "run" / "tensorboard").exists()
    chosen = tmp_path / "my-tensorboard"
    Trainer(mlp(), cfg(tmp_path, output_dir=str(tmp_path / "run2"), tensorboard={"log_dir": str(chosen)}),
            train_data=small[0]).fit()
    assert any(chosen.glob("events.out.tfevents.*"))


def test_segmentation_masks_with_more_classes_than_output_channels(tmp_path, small):
    images = torch.stack([small[0][i][0] for i in range(64)])
    labels = torch.tensor([small[0][i][1] for i in range(64)])
    masks = (images[:, 0] > images.mean()).long() * labels[:, None, None]  # digit pixels carry the class: 0..9
    torch.manual_seed(0)
    two_class = nn.Conv2d(1, 2, 3, padding=1)
    with pytest.raises(ConfigError, match=r"labels up to 9, so at least 10 classes, but the model gives 2 outputs per "
                                          r"sample \(output shape \[64, 2, 8, 8\]\)"):
        Trainer(two_class, cfg(tmp_path, metrics=[]), train_data=TensorDataset(images, masks)).fit()
    border = masks.clone()
    border[:, 0, :] = 255  # ignored pixels
    ten_class = nn.Conv2d(1, 10, 3, padding=1)
    state = Trainer(ten_class, cfg(tmp_path, metrics=[]), train_data=TensorDataset(images, border),
                    criterion=nn.CrossEntropyLoss(ignore_index=255)).fit()
    assert state.global_step == 1


# -- arguments of the wrong kind --------------------------------------------------------------------------
@pytest.mark.parametrize("argument, value, message", [
    ("criterion", nn.CrossEntropyLoss, r"criterion is the class CrossEntropyLoss, not a loss: pass an instance, "
                                       r"CrossEntropyLoss\(\)"),
    ("optimizer", torch.optim.SGD, r"optimizer is the class SGD, not an optimizer: pass an instance, SGD\("),
    ("train_data", torch.zeros(8, 64), r"train_data is a tensor of shape \[8, 64\], not a data set: pass "
                                       r"TensorDataset\(inputs, targets\)"),
    ("valid_data", torch.zeros(8, 64), r"valid_data is a tensor of shape \[8, 64\]"),
])
def test_a_class_or_a_tensor_where_an_object_belongs_is_named(tmp_path, small, argument, value, message):
    """Each used to fail inside torch (a tensor's truth value, a 3-D conv input) or train on nonsense."""
    given = {"train_data": small[0], "valid_data": small[1], argument: value}
    with pytest.raises(ConfigError, match=message):
        Trainer(mlp(), cfg(tmp_path), **given)
    assert not (tmp_path / "run").exists()


def test_a_model_class_gets_the_call_to_make(tmp_path, small):
    with pytest.raises(TypeError, match=r"got the class Linear: pass an instance, Linear\(\.\.\.\)"):
        Trainer(nn.Linear, cfg(tmp_path), train_data=small[0])


def test_a_list_of_validation_sets_is_several_sets_as_in_lightning(tmp_path, small):
    """``valid_data=[a, b]`` (Lightning's ``val_dataloaders=[...]``): the first logs ``valid/``, the second
    ``valid_1/``; it used to reach the model as one batch of data set objects."""
    second = Subset(small[1].dataset, range(64, 96))
    metrics = Trainer(mlp(), cfg(tmp_path), train_data=small[0],
                      valid_data=[small[1], DataLoader(second, batch_size=16)]).fit().metrics
    assert {"valid/loss", "valid_1/loss", "valid/accuracy", "valid_1/accuracy"} <= set(metrics), sorted(metrics)
    assert metrics["valid/loss"] != metrics["valid_1/loss"]  # each set evaluated on its own samples


def test_a_list_of_training_sets_or_a_mixed_list_is_refused(tmp_path, small):
    with pytest.raises(ConfigError, match=r"train_data is a list of 2 data sets; training takes one: join them "
                                          r"with torch.utils.data.ConcatDataset"):
        Trainer(mlp(), cfg(tmp_path), train_data=[small[0], small[0]])
    with pytest.raises(ConfigError, match=r"valid_data mixes data sets with other values"):
        Trainer(mlp(), cfg(tmp_path), train_data=small[0], valid_data=[small[1], "extra.csv"])
    batches = [(torch.zeros(8, 64), torch.zeros(8, dtype=torch.long))] * 3  # a list of batches is still a loader
    assert Trainer(mlp(), cfg(tmp_path / "batches"), train_data=batches).fit().global_step == 3


@pytest.mark.parametrize("label", [0, torch.tensor(0)])
def test_a_list_of_samples_read_as_batches_is_named(tmp_path, label):
    """A list that is not a Dataset is read as batches; a list of (input, label) samples used to fail in
    nn.Flatten with "Dimension out of range"."""
    samples = [(torch.zeros(64), label)] * 16
    expected = (r"the first training batch is one sample, not a batch: batch\['target'\] is the single value 0 and "
                r"batch\['input'\] has shape \[64\].*TensorDataset")
    with pytest.raises(ConfigError, match=expected):
        Trainer(mlp(), cfg(tmp_path), train_data=samples).fit()


def test_evaluating_an_empty_set_is_an_error_not_empty_metrics(tmp_path, small):
    from trainforge.errors import EmptyLoaderError

    trainer = Trainer(mlp(), cfg(tmp_path), train_data=small[0])
    trainer.fit()
    empty = TensorDataset(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long))
    for data in (empty, (batch for batch in [])):
        with pytest.raises(EmptyLoaderError, match=r"evaluate: the VALID data gave no batches, so there is nothing"):
            trainer.evaluate(data)
    assert set(trainer.evaluate(small[1])) == {"valid/loss", "valid/accuracy"}  # the trainer is still usable
