"""``EpochMetricAvg(optional=True)``: a step output that no batch returns is not posted (not 0, not NaN); one
that some batches return and others do not is an error naming the key and the batch; the missing count
survives a checkpoint, and checkpoints written before it existed still load."""

from __future__ import annotations

import pytest
import torch

from trainforge.callbacks import EpochMetricAvg
from trainforge.engine import Recipe


def _run(step, batches, **options):
    recipe = Recipe(step, batches)
    average = EpochMetricAvg("loss", **options)
    recipe.callbacks.add(average)
    return recipe, average


@pytest.mark.parametrize("post_each_batch", [True, False])
def test_missing_for_every_batch_posts_nothing(post_each_batch):
    recipe, _ = _run(lambda b: {"output": torch.tensor(b)}, [1.0, 2.0, 3.0],
                     optional=True, post_each_batch=post_each_batch, weight=None)
    metrics = recipe.run(2).metrics
    assert "loss" not in metrics and metrics == {}


def test_weighted_missing_for_every_batch_posts_nothing():
    recipe, _ = _run(lambda b: {"output": torch.tensor(b), "num_samples": 4}, [1.0, 2.0],
                     optional=True, post_each_batch=False, weight="num_samples")
    assert "loss" not in recipe.run(1).metrics


def test_present_for_every_batch_is_averaged_as_before():
    recipe, _ = _run(lambda b: {"loss": torch.tensor(b), "n": int(b)}, [1.0, 3.0], optional=True,
                     post_each_batch=False, weight="n")
    assert recipe.run(1).metrics["loss"] == pytest.approx((1 * 1 + 3 * 3) / 4)


@pytest.mark.parametrize("present", [[True, True, False], [False, False, True], [True, False, True]])
def test_missing_for_some_batches_is_an_error_naming_key_and_batch(present):
    first_change = next(i for i in range(1, len(present)) if present[i] != present[0]) + 1  # counting from 1
    recipe, _ = _run(lambda i: {"loss": torch.tensor(1.0)} if present[i] else {"output": torch.tensor(1.0)},
                     list(range(len(present))), optional=True, post_each_batch=False)
    with pytest.raises(KeyError) as error:
        recipe.run(1)
    message = str(error.value)
    assert "EpochMetricAvg('loss')" in message and "for some batches of this epoch and not for others" in message
    assert f"batch {first_change} " in message and "for none" in message
    if not present[first_change - 1]:
        assert "['output']" in message  # what the step did return


def test_each_epoch_decides_afresh():
    """An epoch without the key after one with it (a loss turned off between evaluations) is not mixed."""
    calls = {"epoch": 0}

    def step(batch):
        return {"loss": torch.tensor(batch)} if calls["epoch"] == 0 else {"output": torch.tensor(batch)}

    recipe, _ = _run(step, [1.0, 2.0], optional=True, post_each_batch=False)
    recipe.callbacks.add(type("Next", (), {"on_epoch_end": lambda self, s: calls.update(epoch=1)})())
    recipe.run(1)
    assert recipe.state.metrics["loss"] == 1.5
    recipe.reset()
    assert "loss" not in recipe.run(1).metrics


def test_required_key_still_errors_and_a_non_dict_output_is_named():
    recipe, _ = _run(lambda b: torch.tensor(b), [1.0])
    with pytest.raises(KeyError, match="returned no 'loss'; it returned a Tensor, not a dict"):
        recipe.run(1)


def test_missing_count_is_saved_and_old_checkpoints_load():
    average = EpochMetricAvg("loss", optional=True)
    average._missing = 3
    state = average.state_dict()
    assert state == {"sum": None, "count": 0, "missing": 3}
    restored = EpochMetricAvg("loss", optional=True)
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    restored.load_state_dict({"sum": torch.tensor(2.0), "count": 2})  # written before "missing" existed
    assert restored.state_dict()["missing"] == 0 and restored.state_dict()["count"] == 2
