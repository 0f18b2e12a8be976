"""Torchélie's final recipe example, with trainforge names: a train recipe, a test recipe called at
each epoch end through ``CallRecipe``, and loggers — on the embedded digits data.

Run: ``python examples/recipe_digits.py [--epochs N]``; prints progress and the final test accuracy.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader

import trainforge.callbacks as tcb
from trainforge import Recipe
from trainforge.data import load_digits_split


def main(epochs: int = 10, seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    train_set, test_set = load_digits_split(seed=seed)
    data_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=120)  # 3 equal batches: mean of means = mean

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def forward_pass(batch):
        x, y = batch
        pred = model(x)
        loss = nn.functional.cross_entropy(pred, y)
        loss.backward()
        return {"loss": loss}

    @torch.no_grad()
    def test_pass(batch):
        x, y = batch
        model.eval()
        pred = model(x)
        loss = nn.functional.cross_entropy(pred, y)
        model.train()
        return {"loss": loss, "accuracy": (pred.argmax(1) == y).float().mean()}

    test_recipe = Recipe(test_pass, test_loader)
    test_recipe.add_callbacks(
        [
            tcb.EpochMetricAvg("loss", post_each_batch=False),
            tcb.EpochMetricAvg("accuracy", post_each_batch=False),
        ]
    )

    recipe = Recipe(forward_pass, data_loader)
    recipe.register("model", model)
    recipe.register("test_recipe", test_recipe)
    recipe.add_callbacks([tcb.Counter()], group="prologue")
    recipe.add_callbacks(
        [
            tcb.Optimizer(opt),
            tcb.EpochMetricAvg("loss", post_each_batch=True),
            tcb.CallRecipe(test_recipe, prefix="test"),
        ]
    )
    recipe.add_callbacks([tcb.StdoutLogger(log_every=10)], group="epilogue")
    recipe.to("cpu")
    state = recipe.run(epochs)
    final = {k: float(v) for k, v in state.metrics.items() if k.startswith("test/")}
    print("final: " + " ".join(f"{k}={v:.4f}" for k, v in final.items()))
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    main(parser.parse_args().epochs)
