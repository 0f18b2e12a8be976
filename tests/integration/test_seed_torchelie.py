"""Every code sample of the Torchélie recipes seed (torchelie-recipes.rst), with our names, on digits:
the naive loop, registration, a hand-written optimizer callback, callbacks and state with loggers,
composed recipes, the final sample (>= 95% test accuracy), TrainAndTest, Classification and
CrossEntropyClassification (>= 97% with no step function written)."""

from __future__ import annotations

import functools
import sys
import types

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import trainforge.callbacks as tcb
import trainforge.engine as recipe_engine
import trainforge.loggers as tlog
import trainforge.recipes as tcr
from trainforge.data import load_digits_split
from trainforge.engine import CallbackError

RAdamW = functools.partial(torch.optim.RAdam, decoupled_weight_decay=True)  # torchelie.optim.RAdamW


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.fixture
def loaders(digits):
    torch.manual_seed(0)
    trainset, testset = digits
    trainset.classes = [str(i) for i in range(10)]
    data_loader = DataLoader(trainset, batch_size=32, shuffle=True)
    test_loader = DataLoader(testset, batch_size=128)
    return trainset, data_loader, test_loader


def small_model():  # stands for torchvision.models.resnet18(num_classes=10) on 8x8 digits
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 16, 10))


def test_accuracy(model, test_loader):
    model.eval()
    with torch.no_grad():
        hits = sum((model(x).argmax(1) == y).sum().item() for x, y in test_loader)
    model.train()
    return hits / len(test_loader.dataset)


test_accuracy.__test__ = False  # a helper, not a test


@pytest.fixture
def fake_visdom(monkeypatch):
    """A stand-in visdom server that records every call (visdom is optional and not installed here)."""
    calls = []

    class Visdom:
        def __init__(self, server="http://localhost", port=8097, env="main"):
            calls.append(("init", env))

        def __getattr__(self, name):
            return lambda *args, **kwargs: calls.append((name, kwargs.get("win")))

    monkeypatch.setitem(sys.modules, "visdom", types.SimpleNamespace(Visdom=Visdom))
    return calls


def test_naive_code_and_registering(loaders):
    _, data_loader, _ = loaders
    model = small_model()
    opt = RAdamW(model.parameters(), lr=0.01)

    def forward_pass(batch):
        x, y = batch

        opt.zero_grad()  # Don't be angry at me just now
        pred = model(x)
        loss = nn.functional.cross_entropy(pred, y)
        loss.backward()
        opt.step()

        # For now, just return an empty dict
        return {}

    recipe = recipe_engine.Recipe(forward_pass, data_loader)
    recipe.register('model', model)
    assert recipe.model is model and "model" in recipe.state_dict()["registered"]
    recipe.to("cpu")  # recipe.cuda() on a GPU
    state = recipe.run(2)
    assert state.epoch == 2 and state.global_step == 2 * len(data_loader)


def test_own_optimizer_callback_and_callbacks_with_state(loaders, fake_visdom, capsys):
    _, data_loader, test_loader = loaders

    class OptimizerCallback:
        def __init__(self, opt):
            self.opt = opt

        def on_batch_start(self, state):
            self.opt.zero_grad()

        def on_batch_end(self, state):
            self.opt.step()

    model = small_model()
    opt = RAdamW(model.parameters(), lr=0.01)

    def forward_pass(batch):
        x, y = batch
        pred = model(x)
        loss = nn.functional.cross_entropy(pred, y)
        loss.backward()
        return {'loss': loss}

    recipe = recipe_engine.Recipe(forward_pass, data_loader)
    recipe.callbacks.add_callbacks([
        OptimizerCallback(opt)
    ])
    recipe.run(1)
    assert test_accuracy(model, test_loader) > 0.6  # chance is 0.1; RAdam warms up over the first epoch

    recipe = recipe_engine.Recipe(forward_pass, data_loader)
    recipe.callbacks.add_callbacks([
        tcb.Counter(),
        tcb.Optimizer(opt),
        tcb.EpochMetricAvg('loss', post_each_batch=True),
        tcb.StdoutLogger(log_every=10),
        tlog.VisdomLogger(env='main', log_every=10),
    ])
    state = recipe.run(1)
    out = capsys.readouterr().out
    assert "epoch 1/1 step 10 | lr=0.01 loss=" in out and "global_step=" not in out
    lines = [c for c in fake_visdom if c == ("line", "loss")]
    assert len(lines) == len(data_loader) // 10 + 1  # every 10 steps and at the epoch end
    assert not any(name in ("delete_env", "close", "clear") for name, _ in fake_visdom)  # never wipes an env
    assert isinstance(state.metrics["loss"], float)


def test_the_optimizer_itself_in_the_list_is_an_error_not_chance_accuracy(loaders):
    _, data_loader, _ = loaders
    model = small_model()
    opt = RAdamW(model.parameters(), lr=0.01)
    recipe = recipe_engine.Recipe(lambda batch: None, data_loader)
    with pytest.raises(CallbackError, match="use add_callbacks"):
        recipe.callbacks.add([tcb.Optimizer(opt), tcb.Counter()])
    with pytest.raises(CallbackError, match="RAdam is not a callback"):
        recipe.callbacks.add_callbacks([opt])


def test_composing_recipes_and_the_final_sample(loaders, fake_visdom, capsys):
    _, data_loader, test_loader = loaders
    model = small_cnn()
    opt = RAdamW(model.parameters(), lr=0.01)

    def forward_pass(batch):
        x, y = batch
        pred = model(x)
        loss = nn.functional.cross_entropy(pred, y)
        loss.backward()
        return {'loss': loss}

    def test_pass(batch):
        x, y = batch
        with torch.no_grad():
            model.eval()
            pred = model(x)
            loss = nn.functional.cross_entropy(pred, y)
            model.train()
        return {'loss': loss}

    test_recipe = recipe_engine.Recipe(test_pass, test_loader)
    test_recipe.callbacks.add_callbacks([
        tcb.Counter(),
        tcb.EpochMetricAvg('loss', post_each_batch=False),
        tcb.StdoutLogger(log_every=-1, prefix='Test'),
        tlog.VisdomLogger(env='main', log_every=-1, prefix='Test'),
    ])

    recipe = recipe_engine.Recipe(forward_pass, data_loader)
    recipe.register('model', model)
    recipe.register('test_recipe', test_recipe)
    with pytest.raises(CallbackError, match="use add_callbacks"):  # the seed's add_callback([...])
        recipe.callbacks.add_callback([tcb.CallRecipe(test_recipe, run_every=100, prefix='test')])
    recipe.callbacks.add_callbacks([
        tcb.Counter(),
        tcb.Optimizer(opt),
        tcb.EpochMetricAvg('loss', post_each_batch=True),
        tcb.StdoutLogger(log_every=10),
        tlog.VisdomLogger(env='main', log_every=10),
        tcb.CallRecipe(test_recipe, run_every=100, prefix='test'),
    ])
    recipe.to("cpu")
    state = recipe.run(5)
    assert test_accuracy(model, test_loader) >= 0.95
    assert state.metrics["test/loss"] < 0.3
    out = capsys.readouterr().out
    assert out.count("Test | epoch 1/1 | loss=") == 5 * len(data_loader) // 100
    assert "test/epoch=" not in out and "test/global_step=" not in out
    assert ("line", "Test/loss") in fake_visdom


def test_train_and_test_as_written(loaders, capsys):
    _, data_loader, test_loader = loaders
    model = small_model()
    opt = RAdamW(model.parameters(), lr=0.01)
    modes = []

    def forward_pass(batch):
        x, y = batch
        pred = model(x)
        loss = nn.functional.cross_entropy(pred, y)
        loss.backward()
        return {'loss': loss}

    def test_pass(batch):
        modes.append((model.training, torch.is_grad_enabled()))
        x, y = batch
        pred = model(x)
        loss = nn.functional.cross_entropy(pred, y)
        return {'loss': loss}

    recipe = tcr.TrainAndTest(model, forward_pass, test_pass,
                              data_loader, test_loader)

    recipe.callbacks.add_callbacks([
        tcb.Optimizer(opt),
        tcb.EpochMetricAvg('loss', post_each_batch=True)
    ])
    recipe.test_loop.callbacks.add_callbacks([
        tcb.EpochMetricAvg('loss', post_each_batch=False)
    ])

    recipe.to("cpu")
    state = recipe.run(3)
    assert set(modes) == {(False, False)}  # eval mode, no gradients, during the test pass only
    assert model.training and torch.is_grad_enabled()
    assert state.metrics["test/loss"] < 0.6 and test_accuracy(model, test_loader) > 0.88


@pytest.mark.slow
def test_classification_as_written(loaders, tmp_path):
    trainset, data_loader, test_loader = loaders
    model = small_model()
    opt = RAdamW(model.parameters(), lr=0.01)

    def forward_pass(batch):
        x, y = batch
        pred = model(x)
        loss = nn.functional.cross_entropy(pred, y)
        loss.backward()
        return {'loss': loss, 'pred': pred}

    def test_pass(batch):
        x, y = batch
        pred = model(x)
        loss = nn.functional.cross_entropy(pred, y)
        return {'loss': loss, 'pred': pred}

    recipe = tcr.Classification(model, forward_pass, test_pass,
                                data_loader, test_loader, trainset.classes, checkpoint=tmp_path / "run")

    recipe.callbacks.add_callbacks([
        tcb.Optimizer(opt),
    ])

    recipe.to("cpu")
    state = recipe.run(3)
    assert state.metrics["test/accuracy"] > 0.88 and state.metrics["accuracy"] > 0.8
    assert state.metrics["test/accuracy"] == pytest.approx(test_accuracy(model, test_loader))
    test = recipe.test_loop.state.metrics
    assert test["confusion_matrix"].shape == (10, 10) and int(test["confusion_matrix"].sum()) == 360
    assert test["worst"].shape == (16, 1, 8, 8) and test["best"].shape == (16, 1, 8, 8)
    assert test["input_gradients"].shape == (16, 1, 8, 8) and float(test["input_gradients"].max()) == 1.0
    assert all(p.grad is None for p in model.parameters())  # gradient maps did not touch training gradients
    run = tmp_path / "run"
    assert (run / "report" / "index.html").is_file() and (run / "metrics.jsonl").is_file()
    assert recipe.checkpoint_callback.best_model_path is not None

    def no_pred(batch):
        x, y = batch
        return {'loss': nn.functional.cross_entropy(model(x), y)}

    bad = tcr.Classification(model, forward_pass, no_pred, data_loader, test_loader, trainset.classes)
    with pytest.raises(Exception, match=r"must return \{'loss': loss, 'pred': logits\}"):
        bad.run(1)


@pytest.mark.slow
def test_cross_entropy_classification_five_lines(loaders):
    trainset, data_loader, test_loader = loaders
    model = small_cnn()

    recipe = tcr.CrossEntropyClassification(model, data_loader,
                                            test_loader, trainset.classes)

    recipe.to("cpu")
    state = recipe.run(5)
    assert state.metrics["test/accuracy"] >= 0.97
    assert test_accuracy(model, test_loader) >= 0.97
    lrs = state.metrics["lr"]
    assert lrs < 3e-3 * 0.01  # the cosine schedule ran to its end over run(5)


def test_cross_entropy_classification_options_and_errors(loaders):
    trainset, data_loader, test_loader = loaders
    model = small_model()
    recipe = tcr.CrossEntropyClassification(model, data_loader, test_loader, trainset.classes, lr=0.05,
                                            optimizer="SGD", precision="bf16-mixed", log_every=1000)
    state = recipe.run(1)
    assert state.metrics["test/accuracy"] > 0.6 and isinstance(recipe.optimizer, torch.optim.SGD)
    with pytest.raises(Exception, match="optimizer='RMSprop'; expected one of AdamW, SGD"):
        tcr.CrossEntropyClassification(model, data_loader, test_loader, trainset.classes, optimizer="RMSprop")
    with pytest.raises(Exception, match="classes must be a list"):
        tcr.CrossEntropyClassification(model, data_loader, test_loader, "0123456789")


@pytest.mark.slow
def test_recipes_example_writes_a_complete_run_folder(load_example, tmp_path):
    final = load_example("recipes_classification").main(epochs=3, run_dir=str(tmp_path))
    assert final["test/accuracy"] >= 0.95, final
    assert (tmp_path / "report" / "index.html").is_file() and (tmp_path / "checkpoints" / "last").is_dir()
    assert any((tmp_path / "tensorboard").iterdir())
    from trainforge.report import CLASSIFICATION_FILE, load_classification_data

    data = load_classification_data(tmp_path / CLASSIFICATION_FILE)
    assert data["confusion_matrix"].sum() == 360 and data["class_names"][0] == "0"
