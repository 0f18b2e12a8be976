"""Every code sample of the Kornia training-API seed (kornia-training-api.rst), with our names, on digits:
the positional Trainer call, custom evaluate/fit through ``callbacks``, preprocess and augmentations,
ModelCheckpoint and EarlyStopping monitoring what a custom evaluate returns, and the seed's own typo."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from trainforge import EarlyStopping, ModelCheckpoint, Trainer, TrainingConfig
from trainforge.data import load_digits_split
from trainforge.errors import ConfigError


def accuracy(out, target, topk=(1,)):
    """Kornia's ``kornia.metrics.accuracy``: top-k accuracy in percent."""
    from kornia.metrics import accuracy as kornia_accuracy

    return kornia_accuracy(out, target, topk=topk)


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


def make(digits, tmp_path, epochs=3, **config):
    torch.manual_seed(0)
    train_dataset, valid_dataset = digits
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    train_dataloader = DataLoader(train_dataset, batch_size=64, shuffle=True)
    valid_daloader = DataLoader(valid_dataset, batch_size=64, shuffle=True)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(train_dataloader))
    settings = dict(max_epochs=epochs, output_dir=str(tmp_path), tensorboard=False, report=False,
                    print_steps=1000, checkpoint=None, scheduler=None)
    config = TrainingConfig(**{**settings, **config})
    return model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config


def test_trainer_usage_positional_as_kornia_writes_it(digits, tmp_path, capsys):
    model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config = make(digits, tmp_path)
    trainer = Trainer(
        model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config,
    )
    state = trainer.fit()  # execute your training !
    assert trainer.scheduler is scheduler and trainer.optimizer is optimizer and trainer.criterion is criterion
    assert state.metrics["valid/accuracy"] > 0.9
    assert scheduler.last_epoch == 3 * len(train_dataloader)  # stepped per batch, as the example sizes it


def test_trainer_by_keyword_kornia_and_ours_and_bad_calls(digits, tmp_path):
    model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config = make(digits, tmp_path)
    kornia = Trainer(model, train_dataloader=train_dataloader, valid_dataloader=valid_daloader, criterion=criterion,
                     optimizer=optimizer, scheduler=scheduler, config=config)
    assert kornia.train_data is train_dataloader and kornia.valid_data is valid_daloader and kornia.config is config
    ours = Trainer(model, config, train_data=digits[0], valid_data=digits[1])
    assert ours.train_data is digits[0] and ours.config is config
    with pytest.raises(ConfigError, match=r"argument 4 \(criterion\): expected a loss.*got SGD"):
        Trainer(model, train_dataloader, valid_daloader, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ConfigError, match="after the config, pass the rest by keyword"):
        Trainer(model, config, train_dataloader)
    with pytest.raises(ConfigError, match=r"argument 7 \(config\): expected a TrainingConfig"):
        Trainer(model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, "config.yaml")
    with pytest.raises(ConfigError, match="train_data twice"):
        Trainer(model, train_dataloader, train_data=digits[0])
    with pytest.raises(TypeError, match="unexpected keyword argument 'train_loader'"):
        Trainer(model, config, train_loader=train_dataloader)
    with pytest.raises(TypeError, match="at most 7 positional"):
        Trainer(model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config, None)


def test_custom_evaluate_metrics_drive_checkpoint_and_early_stopping(digits, tmp_path):
    @torch.no_grad()
    def my_evaluate(self) -> dict:
        self.model.eval()
        correct1 = correct5 = count = 0
        for _sample_id, sample in enumerate(self.valid_dataloader):
            source, target = sample  # this might change with new pytorch ataset structure

            # perform the preprocess and augmentations in batch
            img = self.preprocess(source)
            # Forward
            out = self.model(img)
            # Loss computation
            val_loss = self.criterion(out, target)
            assert torch.isfinite(val_loss)

            # measure accuracy and record loss
            acc1, acc5 = accuracy(out.detach(), target, topk=(1, 5))
            size = len(target)
            correct1, correct5, count = correct1 + acc1 * size, correct5 + acc5 * size, count + size
        self.model.train()
        return {"top1": correct1 / count, "top5": correct5 / count}

    model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config = make(
        digits, tmp_path, epochs=4)
    model_checkpoint = ModelCheckpoint(tmp_path / "outputs", monitor="top5", mode="max")
    early_stop = EarlyStopping(monitor="top5", mode="max", patience=3)
    trainer = Trainer(model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config,
                      callbacks={"evaluate": my_evaluate, "on_checkpoint": model_checkpoint,
                                 "on_epoch_end": early_stop})
    state = trainer.fit()
    assert state.metrics["top5"] > 95 and state.metrics["top1"] > 85
    assert early_stop.best == max(early_stop.best, state.metrics["top5"])  # as the user sees it: not negated
    assert model_checkpoint.best_model_path is not None
    from trainforge.checkpoint import read_manifest

    assert read_manifest(model_checkpoint.best_model_path)["metadata"]["monitor"] == "top5"
    records = (tmp_path / "metrics.jsonl").read_text()
    assert '"top5"' in records  # the loggers got the custom evaluation's metrics


def test_custom_fit_uses_the_kornia_names(digits, tmp_path):
    seen = {}

    def my_fit(self, ):  # this is a custom pytorch training loop
        self.model.train()
        for epoch in range(self.num_epochs):
            for source, targets in self.train_dataloader:
                self.optimizer.zero_grad()

                output = self.model(source)
                loss = self.criterion(output, targets)

                self.backward(loss)
                self.optimizer.step()

            stats = self.evaluate()  # do whatever you want with validation
            seen[epoch] = stats
        return stats

    model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config = make(digits, tmp_path, epochs=2)
    trainer = Trainer(model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config,
                      callbacks={"fit": my_fit})
    stats = trainer.fit()
    assert sorted(seen) == [0, 1] and stats["valid/accuracy"] > 0.85
    # a Dataset rather than a loader: batches still unpack as the data set yields them
    trainer = Trainer(model, config, train_data=digits[0], valid_data=digits[1], callbacks={"fit": my_fit})
    source, target = next(iter(trainer.train_dataloader))
    assert source.shape == (config.batch_size, 1, 8, 8) and target.dtype == torch.int64
    assert trainer.num_epochs == 2


def test_preprocess_and_augmentations_callbacks(digits, tmp_path):
    import kornia as K

    calls = {"preprocess": 0}

    def preprocess(x):
        calls["preprocess"] += 1
        return x.float() / 1.0

    augmentations = nn.Sequential(
        K.augmentation.RandomHorizontalFlip(p=0.75),
        K.augmentation.RandomAffine(degrees=10.),
    )
    model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config = make(digits, tmp_path, epochs=1)
    trainer = Trainer(model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config,
                      callbacks={"preprocess": preprocess, "augmentations": augmentations})
    trainer.fit()
    assert calls["preprocess"] == len(train_dataloader) + len(valid_daloader)


def test_the_seeds_set_typo_is_an_error_and_callbacks_never_leak(digits, tmp_path):
    def my_evaluate(self) -> dict:
        return {"top5": 1.0}

    model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config = make(digits, tmp_path)
    with pytest.raises(ConfigError, match=r"callbacks is a set.*not a dict.*\{\"evaluate\": my_evaluate\}"):
        Trainer(model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config,
                callbacks={"evaluate", my_evaluate})
    with pytest.raises(ConfigError, match="is not a callback"):
        Trainer(model, config, callbacks=[my_evaluate])
    custom = Trainer(model, config, valid_data=digits[1], callbacks={"evaluate": my_evaluate})
    plain = Trainer(model, config, valid_data=digits[1])
    assert custom.evaluate() == {"top5": 1.0}
    assert "valid/accuracy" in plain.evaluate()  # the other trainer (and the class) are untouched
    assert Trainer.evaluate.__name__ == "evaluate" and "evaluate" not in vars(plain)


def test_early_stopping_contract_through_fit(digits, tmp_path):
    """Patience 2, max mode: the monitored sequence 1, 2, 1.9, 1.9 stops the run after the fourth epoch."""
    sequence = itertools.chain([1.0, 2.0, 1.9, 1.9], itertools.repeat(0.0))

    def my_evaluate(self):
        return {"score": next(sequence)}

    model, train_dataloader, valid_daloader, criterion, optimizer, _, config = make(digits, tmp_path, epochs=10)
    early_stop = EarlyStopping(monitor="score", mode="max", patience=2)
    trainer = Trainer(model, train_dataloader, valid_daloader, criterion, optimizer, None, config,
                      callbacks={"evaluate": my_evaluate, "on_epoch_end": early_stop})
    state = trainer.fit()
    assert state.epoch == 4 and early_stop.stopped_epoch == 3
    assert early_stop.best == 2.0 and early_stop.best_score == 2.0


def test_image_classifier_trainer_takes_the_same_positional_order(digits, tmp_path):
    from trainforge.tasks import ImageClassifierTrainer

    model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config = make(digits, tmp_path, epochs=2)
    trainer = ImageClassifierTrainer(model, train_dataloader, valid_daloader, criterion, optimizer, scheduler, config,
                                     callbacks={"augmentations": nn.Identity()})
    state = trainer.fit()
    assert trainer.optimizer is optimizer and state.metrics["valid/accuracy"] > 0.85
    assert "valid/accuracy_top5" in state.metrics  # the task's own metrics
    ours = ImageClassifierTrainer(model, config, train_data=digits[0], valid_data=digits[1], top_k=3)
    assert ours.config.max_epochs == 2 and ours.top_k == 3
