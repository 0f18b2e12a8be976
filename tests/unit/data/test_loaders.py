from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from trainforge.data import ResumableLoader, collate_indexed, sample_seed


class Noisy(Dataset):
    """Each item draws from all three global RNGs, as CPU augmentation code does."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int):
        return torch.tensor([float(i), random.random(), float(np.random.rand()), float(torch.rand(()))]), i % 3


def epoch_rows(loader, epoch, start=0):
    return [(b["index"].tolist(), b["input"]) for b in loader.iter_epoch(epoch, start)]


def test_order_depends_on_seed_and_epoch_only():
    ds = TensorDataset(torch.arange(20.0))
    a = ResumableLoader(ds, batch_size=4, shuffle=True, seed=1)
    b = ResumableLoader(ds, batch_size=4, shuffle=True, seed=1)
    assert a.indices(3) == b.indices(3)
    assert a.indices(0) != a.indices(1)
    assert sorted(a.indices(2)) == list(range(20))
    assert ResumableLoader(ds, 4, shuffle=True, seed=2).indices(0) != a.indices(0)


def test_skip_at_sampler_loads_nothing_it_skips():
    loaded = []

    class Spy(Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            loaded.append(i)
            return torch.tensor([float(i)]), 0

    loader = ResumableLoader(Spy(), batch_size=4, shuffle=True, seed=0)
    full = [b["index"].tolist() for b in loader.iter_epoch(0, 0)]
    loaded.clear()
    resumed = [b["index"].tolist() for b in loader.iter_epoch(0, 2)]
    assert resumed == full[2:]
    assert sorted(loaded) == sorted(full[2][i] for i in range(4))  # only the remaining batch was read


def test_augmentation_is_per_sample_and_independent_of_workers():
    zero = ResumableLoader(Noisy(), batch_size=5, shuffle=True, seed=3, num_workers=0)
    two = ResumableLoader(Noisy(), batch_size=5, shuffle=True, seed=3, num_workers=2)
    for epoch in (0, 1):
        for (ia, xa), (ib, xb) in zip(epoch_rows(zero, epoch), epoch_rows(two, epoch)):
            assert ia == ib and torch.equal(xa, xb)
    # a resumed epoch sees the same augmented values for the same samples
    tail = epoch_rows(zero, 1, start=2)
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(tail, epoch_rows(zero, 1)[2:]))
    # different epochs give the same sample different augmentation
    first = {i: row for ids, x in epoch_rows(zero, 0) for i, row in zip(ids, x)}
    second = {i: row for ids, x in epoch_rows(zero, 1) for i, row in zip(ids, x)}
    assert not torch.equal(first[0], second[0])


def test_loading_does_not_move_the_callers_rng():
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    list(ResumableLoader(Noisy(), batch_size=4, shuffle=True, seed=0).iter_epoch(0))
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


def test_sharding_pads_training_and_keeps_evaluation_exact():
    ds = TensorDataset(torch.arange(10.0))
    train = [ResumableLoader(ds, 2, shuffle=True, seed=0, rank=r, world_size=3).indices(0) for r in range(3)]
    assert {len(t) for t in train} == {4} and set().union(*train) == set(range(10))
    evals = [ResumableLoader(ds, 2, rank=r, world_size=3, pad_to_equal=False).indices(0) for r in range(3)]
    assert sorted(i for e in evals for i in e) == list(range(10))  # every sample exactly once


def test_drop_last_and_collate_shapes():
    ds = TensorDataset(torch.zeros(10, 2), torch.arange(10))
    loader = ResumableLoader(ds, batch_size=4, drop_last=True)
    assert len(loader) == 2
    batch = collate_indexed([(7, (torch.ones(2), 1)), (8, (torch.zeros(2), 0))])
    assert batch["input"].shape == (2, 2) and batch["target"].tolist() == [1, 0] and batch["index"].tolist() == [7, 8]
    assert sample_seed(0, 1, 2) != sample_seed(0, 2, 1)


def test_in_memory_tensors_are_sliced_directly_into_the_same_batches_as_through_workers():
    from torch.utils.data import Subset

    base = TensorDataset(torch.randn(50, 3), torch.arange(50), torch.arange(50) * 2)
    for dataset in (base, Subset(Subset(base, list(range(49, 2, -1))), [*range(0, 40, 2), 41])):
        for drop_last in (False, True):
            kwargs = dict(batch_size=4, shuffle=True, seed=3, drop_last=drop_last)
            direct = ResumableLoader(dataset, **kwargs)
            through_workers = ResumableLoader(dataset, **kwargs, num_workers=2)
            assert direct._direct is not None and through_workers._direct is None
            for epoch, start in ((0, 0), (1, 0), (2, 3)):
                got = list(direct.iter_epoch(epoch, start))
                want = list(through_workers.iter_epoch(epoch, start))
                assert len(got) == len(want) == len(direct) - start
                for a, b in zip(got, want):
                    assert a.keys() == b.keys() == {"input", "target", "field2", "index"}
                    assert all(torch.equal(a[k], b[k]) for k in a)
