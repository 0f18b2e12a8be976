"""Trainer proofs on real data: digits with the default config, and the Towhee and Kornia examples."""

from __future__ import annotations

import torch

from trainforge import Trainer, TrainingConfig
from trainforge.data import load_digits_split
from trainforge.models import SmallCNN


def test_default_config_small_cnn_reaches_97_percent_on_digits(tmp_path):
    train, valid = load_digits_split()
    torch.manual_seed(0)
    config = TrainingConfig(output_dir=str(tmp_path), tensorboard=False, report=False)
    assert config.max_epochs <= 10
    state = Trainer(SmallCNN(), config, train_data=train, valid_data=valid).fit()
    assert state.metrics["valid/accuracy"] >= 0.97, state.metrics


def test_towhee_example_trains_saves_and_loads(tmp_path, load_example):
    trainer = load_example("towhee_fakedata").main(str(tmp_path))
    assert trainer.epoch == 2 and trainer.global_step == 4
    assert (tmp_path / "another_save_path" / "MANIFEST.json").is_file()
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "checkpoints" / "last").is_dir()


def test_kornia_example_trains_with_its_own_objects(tmp_path, load_example):
    metrics = load_example("kornia_trainer").main(str(tmp_path), num_epochs=2)
    assert set(metrics) >= {"valid/loss", "valid/accuracy"}
