"""The Towhee trainer seed's Trainer-side samples (towhee-trainer.md), with our names, on generated images:
construction with train_dataset/eval_dataset, train(resume_checkpoint_path=...), save/load, set_optimizer/
set_loss, LayerFreezer, and custom callbacks written with Towhee's hook names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn, optim
from torchvision import datasets, transforms

from trainforge import Callback, Trainer, TrainingConfig
from trainforge.callbacks import LayerFreezer
from trainforge.engine import CallbackError
from trainforge.errors import ConfigError


def small_model():  # stands for torchvision.models.resnet18() on 32x32 fake images
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


@pytest.fixture
def trained(tmp_path):
    # define dataset and config
    fake_transform = transforms.Compose([transforms.ToTensor()])
    train_data = datasets.FakeData(size=2, image_size=(3, 32, 32), transform=fake_transform)
    eval_data = datasets.FakeData(size=1, image_size=(3, 32, 32), transform=fake_transform)

    training_config = TrainingConfig(
        output_dir=str(tmp_path / "train_dummy_torch"),
        max_epochs=2,
        batch_size=1,
        print_steps=1,
        report=False,
        checkpoint={"save_top_k": -1},  # Towhee's default keeps a checkpoint per epoch
    )

    # initialize Trainer
    model = small_model()
    trainer = Trainer(model, training_config, train_dataset=train_data, eval_dataset=eval_data)

    # start training
    trainer.train()
    return trainer, train_data, eval_data, training_config


def test_train_resume_save_load(trained, tmp_path, capsys):
    trainer, train_data, eval_data, training_config = trained
    assert trainer.epoch == 2 and trainer.global_step == 4
    run = Path(training_config.output_dir)
    assert (run / "tensorboard").is_dir() and (run / "metrics.jsonl").is_file()
    epoch_1 = run / "checkpoints" / "epoch001-step000002"

    again = Trainer(small_model(), training_config, train_dataset=train_data, eval_dataset=eval_data)
    steps = []
    again.add_callback(type("Steps", (Callback,), {"on_batch_end": lambda self, s: steps.append(s.global_step)})())
    again.train(resume_checkpoint_path=str(epoch_1))
    assert steps == [3, 4]  # resumed after epoch 1: only epoch 2 runs again
    again.save(path=str(tmp_path / "another_save_path"))
    loaded = Trainer(small_model(), training_config, train_dataset=train_data, eval_dataset=eval_data)
    loaded.load(path=str(tmp_path / "another_save_path"))
    print(loaded.epoch)
    assert capsys.readouterr().out.strip().endswith("2")
    for a, b in zip(again.model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="does not exist"):
        again.train(resume_checkpoint_path=str(tmp_path / "no_such_checkpoint"))


def test_layer_freezer_as_written():
    my_model = nn.Sequential()
    my_model.add_module("patch_embed", nn.Linear(4, 4))
    my_model.add_module("blocks", nn.Linear(4, 4))
    my_model.add_module("head", nn.Linear(4, 2))
    my_freezer = LayerFreezer(my_model)
    assert my_freezer.show_frozen_layers() == []
    my_freezer.by_names(['head'])
    assert my_freezer.show_frozen_layers() == ['head']
    my_freezer.by_idx([0])
    assert my_freezer.show_frozen_layers() == ['patch_embed', 'head']
    assert not any(p.requires_grad for p in my_model.head.parameters())
    with pytest.raises(ConfigError, match=r"no layer named 'heads'.*head"):
        my_freezer.by_names(['heads'])


def test_custom_callbacks_with_towhee_names_say_ours(trained, capsys):
    trainer, train_data, eval_data, training_config = trained

    class CustomCallback(Callback):
        def on_batch_begin(self, batch, logs) -> None:
            print('on_batch_begin')

    with pytest.raises(CallbackError, match=r"on_batch_begin is another library's hook.*'on_batch_start"):
        trainer.add_callback(CustomCallback())
    for towhee, ours in [("on_epoch_begin", "on_epoch_start"), ("on_train_begin", "on_fit_start"),
                         ("on_train_end", "on_fit_end"), ("on_eval_begin", "on_eval_start"),
                         ("on_train_batch_end", "on_batch_end"), ("on_eval_batch_begin", "on_eval_batch_start")]:
        hook = type("Towhee", (Callback,), {towhee: lambda self, state: None})()
        with pytest.raises(CallbackError, match=f"{towhee} is another.*'{ours}"):
            trainer.add_callback(hook)

    class BadArgs(Callback):
        def on_epoch_end(self, epochs, logs) -> None: ...

    with pytest.raises(CallbackError, match=r"cannot be called as on_epoch_end\(state\)"):
        trainer.add_callback(BadArgs())

    class OurCallback(Callback):
        def on_batch_start(self, state) -> None:
            print('on_batch_start')

    new_run = dataclasses.replace(training_config, output_dir=training_config.output_dir + "_2")
    fresh = Trainer(small_model(), new_run, train_dataset=train_data, eval_dataset=eval_data)
    fresh.add_callback(OurCallback())
    fresh.train()
    assert capsys.readouterr().out.count("on_batch_start") == 4


def test_set_optimizer_and_set_loss(trained):
    trainer, *_ = trained
    model = trainer.model

    class MyOptimizer(optim.Optimizer):
        def step(self, closure):
            print('my step...')

    my_optimizer = MyOptimizer(model.parameters(), defaults={})
    trainer.set_optimizer(my_optimizer)
    assert type(trainer.optimizer) is MyOptimizer

    class MyTripletLossFunc(torch.nn.Module):
        def forward(self):
            print('forward...')
            return 0

    my_loss = MyTripletLossFunc()
    trainer.set_loss(my_loss)
    assert type(trainer.loss) is MyTripletLossFunc
