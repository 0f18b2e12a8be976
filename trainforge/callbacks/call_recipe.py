"""``CallRecipe``: run another recipe (usually evaluation) every N batches or at each epoch end."""

from __future__ import annotations

from typing import Any

from ..engine import Recipe, State
from ..loggers.base import COUNTERS


class CallRecipe:
    """Run ``recipe`` for one epoch every ``every`` batches, or at each epoch end when ``every`` is None.

    Fires ``eval_start``/``eval_end`` on the calling recipe around the nested run, then copies the
    nested recipe's metrics into the caller's ``state.metrics`` as ``"<prefix>/<name>"`` (so
    ``eval_end`` hooks such as early stopping see them). The nested recipe's counters (a ``Counter``
    posts ``epoch``, ``global_step``...) are not metrics and are not copied. During the nested run its
    ``state.extra["caller"]`` is the calling recipe's state (loggers log at the caller's step).
    ``run_every`` is Torchélie's name for ``every``.

    >>> import torch
    >>> from trainforge.engine import Recipe
    >>> from trainforge.callbacks import EpochMetricAvg
    >>> test = Recipe(lambda x: {"loss": x}, [torch.tensor(2.0)])
    >>> test.callbacks.add(EpochMetricAvg("loss", post_each_batch=False))
    >>> train = Recipe(lambda x: None, [0, 1])
    >>> train.callbacks.add(CallRecipe(test, prefix="test"))
    >>> train.run(1).metrics
    {'test/loss': 2.0}
    """

    def __init__(
        self, recipe: Recipe, every: int | None = None, prefix: str = "test", *, run_every: int | None = None
    ) -> None:
        if not isinstance(recipe, Recipe):
            raise TypeError(f"CallRecipe runs a Recipe, got {type(recipe).__name__}")
        if run_every is not None:
            if every is not None:
                raise ValueError("pass every or run_every (Torchélie's name), not both")
            every = run_every
        if every is not None and every < 1:
            raise ValueError(f"every must be a positive number of batches or None, got {every}")
        self.recipe = recipe
        self.every = every
        self.prefix = prefix

    def on_batch_end(self, state: State) -> None:
        if self.every is not None and state.global_step % self.every == 0:
            self.call(state)

    def on_epoch_end(self, state: State) -> None:
        if self.every is None:
            self.call(state)

    def call(self, state: State) -> dict[str, Any]:
        """Run the nested recipe once now and return its metrics."""
        owner = state.owner
        if owner is not None:
            owner.callbacks.fire("eval_start", state)
        self.recipe.reset()
        self.recipe.state.extra["caller"] = state
        try:
            nested = self.recipe.run(1)
        finally:
            self.recipe.state.extra.pop("caller", None)
        for name, value in nested.metrics.items():
            if name not in COUNTERS:
                state.metrics[f"{self.prefix}/{name}"] = value
        if owner is not None:
            owner.callbacks.fire("eval_end", state)
        return nested.metrics
