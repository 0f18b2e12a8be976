"""``ResumableLoader``: epoch-seeded data order, per-sample augmentation seeds, and mid-epoch resume
that skips consumed batches at the sampler — so results do not depend on kills or worker counts."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate

from ..errors import DatasetError
from .datasets import Skipped

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, epoch, index) over 63 bits


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's random augmentation: a function of (seed, epoch, index) only."""
    return (seed * _MIX + epoch * 1_000_003 + index * 7_919) % (2**63 - 1)


def may_be_random(dataset: Dataset) -> bool:
    """False for in-memory tensor data (``TensorDataset``, or a ``Subset`` of one): indexing it draws no
    random numbers, so seeding per sample would be pure cost."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return not isinstance(dataset, TensorDataset)


def tensor_source(dataset: Dataset) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None] | None:
    """``(tensors, index map)`` when ``dataset`` is a ``TensorDataset`` or ``Subset``s of one, else None.

    >>> base = TensorDataset(torch.arange(10))
    >>> tensors, mapping = tensor_source(Subset(Subset(base, [9, 8, 7, 6]), [1, 3]))
    >>> mapping.tolist()
    [8, 6]
    """
    mapping: torch.Tensor | None = None
    while isinstance(dataset, Subset):
        indices = torch.as_tensor(dataset.indices, dtype=torch.int64)
        mapping = indices if mapping is None else indices[mapping]
        dataset = dataset.dataset
    return (dataset.tensors, mapping) if isinstance(dataset, TensorDataset) else None


class _Collated:
    """A batch already assembled by ``_SampleSeeded.__getitems__`` (tensor data): collate passes it on."""

    __slots__ = ("batch",)

    def __init__(self, batch: dict[str, Any]) -> None:
        self.batch = batch


class _SampleSeeded(Dataset):
    """Wraps a dataset: item ``(epoch, index)`` seeds python/numpy/torch from ``sample_seed`` and returns
    ``(index, dataset[index])``. In the main process the caller's RNG state is restored afterwards (once
    per batch), so data loading never shifts the training RNG (dropout) — with 0 or N workers alike."""

    def __init__(self, dataset: Dataset, seed: int, seeded: bool) -> None:
        self.dataset = dataset
        self.seed = seed
        self.seeded = seeded and may_be_random(dataset)
        self.tensors = tensor_source(dataset)  # in-memory tensors: one gather per batch, not 64 lookups

    def __len__(self) -> int:
        return len(self.dataset)

    def _fetch(self, epoch: int, index: int) -> tuple[int, Any]:
        if self.seeded:
            seed = sample_seed(self.seed, epoch, index)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.default_generator.manual_seed(seed)  # CPU generator only: 1 µs, torch.manual_seed is 80
        return index, self.dataset[index]

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Any]:
        if self.tensors is not None:
            return self._fetch(*key)
        return self.__getitems__([key])[0]

    def _gather(self, indices: list[int]) -> _Collated:
        return _Collated(self.gather(torch.tensor(indices, dtype=torch.int64)))

    def gather(self, positions: torch.Tensor) -> dict[str, Any]:
        """The batch of in-memory tensor data at ``positions`` (indices into the wrapped dataset)."""
        tensors, mapping = self.tensors
        rows = positions if mapping is None else mapping[positions]
        columns = [t[rows] for t in tensors]
        batch = {"input": columns[0]}
        if len(columns) > 1:
            batch["target"] = columns[1]
        for extra, column in enumerate(columns[2:], start=2):
            batch[f"field{extra}"] = column
        batch["index"] = positions
        return batch

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Any]:
        """The DataLoader fetches a whole batch here: the RNG state is saved and restored once per batch."""
        if self.tensors is not None:
            return [self._gather([index for _, index in keys])]
        if not self.seeded or torch.utils.data.get_worker_info() is not None:
            return [self._fetch(epoch, index) for epoch, index in keys]
        saved = (random.getstate(), np.random.get_state(), torch.default_generator.get_state())
        try:
            return [self._fetch(epoch, index) for epoch, index in keys]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.default_generator.set_state(saved[2])


def collate_indexed(samples: list[Any]) -> dict[str, Any]:
    """Collate ``(index, sample)`` pairs into ``{"input", "target", "index"}`` (or the sample's own dict
    keys plus ``"index"``). Runs in the workers, so the hot loop gets a ready dict.

    A field whose values are dicts (detection targets ``{"boxes", "labels"}``) or tensors of different
    shapes stays a list (torchvision's detection format). A sample a data set skipped (``Skipped``, in
    ``on_bad_file="skip"`` mode) is left out and listed under ``"skipped"``, which the loader removes.

    >>> boxes = [{"boxes": torch.zeros(n, 4), "labels": torch.zeros(n, dtype=torch.int64)} for n in (0, 2)]
    >>> batch = collate_indexed([(i, {"input": torch.zeros(3, 4, 4), "target": t}) for i, t in enumerate(boxes)])
    >>> batch["input"].shape, [t["boxes"].shape[0] for t in batch["target"]], batch["index"].tolist()
    (torch.Size([2, 3, 4, 4]), [0, 2], [0, 1])
    """
    if len(samples) == 1 and type(samples[0]) is _Collated:
        return samples[0].batch
    skipped = [s for _, s in samples if type(s) is Skipped]
    if skipped:
        samples = [(i, s) for i, s in samples if type(s) is not Skipped]
        if not samples:  # the loader counts these and yields nothing for this batch
            return {"skipped": [(s.index, s.path, s.reason) for s in skipped]}
    indices = torch.tensor([i for i, _ in samples], dtype=torch.int64)
    items = [s for _, s in samples]
    first = items[0]
    if isinstance(first, dict):
        batch = {key: _collate_field([item[key] for item in items]) for key in first}
    elif isinstance(first, (tuple, list)):
        columns = default_collate(items)
        batch = {"input": columns[0]}
        if len(columns) > 1:
            batch["target"] = columns[1]
        for extra, column in enumerate(columns[2:], start=2):
            batch[f"field{extra}"] = column
    else:
        batch = {"input": default_collate(items)}
    batch["index"] = indices
    if skipped:
        batch["skipped"] = [(s.index, s.path, s.reason) for s in skipped]
    return batch


def _collate_field(values: list[Any]) -> Any:
    """One field of a batch: stacked when the values agree in shape, else a list (boxes, dict targets)."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        shape = first.shape
        if all(isinstance(v, torch.Tensor) and v.shape == shape for v in values):
            return default_collate(values)  # in a worker: stacked straight into shared memory
        return list(values)
    if isinstance(first, (Mapping, str)) or first is None:
        return list(values)
    try:
        return default_collate(values)
    except (RuntimeError, TypeError):
        return list(values)


class ResumableLoader:
    """Batches of ``dataset`` as dicts, in an order fixed by ``(seed, epoch)``, resumable mid-epoch.

    - Order: a permutation from a generator seeded with ``seed + epoch`` (``shuffle=False``: identity),
      split across ``world_size`` ranks (padded to equal length for training, uneven for evaluation).
    - ``iter_epoch(epoch, start)`` skips the first ``start`` batches in the sampler: nothing is loaded
      and discarded. The engine calls it; ``iter(loader)`` is epoch 0 from the start.
    - Random augmentation inside ``dataset[i]`` is seeded from ``(seed, epoch, i)``: the same sample
      gets the same augmentation with 0 or N workers, and after a resume.
    - The DataLoader has its own generator, so iterating never consumes the global torch RNG.

    >>> from torch.utils.data import TensorDataset
    >>> ds = TensorDataset(torch.arange(10.0), torch.arange(10))
    >>> loader = ResumableLoader(ds, batch_size=4, shuffle=True, seed=0)
    >>> [b["index"].tolist() for b in loader.iter_epoch(0, start=1)] == [
    ...     b["index"].tolist() for b in loader.iter_epoch(0, start=0)][1:]
    True
    >>> len(loader)
    3
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        timeout: float = 0.0,
        rank: int = 0,
        world_size: int = 1,
        pad_to_equal: bool = True,
        seeded_samples: bool = True,
        collate_fn: Callable[[list[Any]], Any] = collate_indexed,
        sampler: Any = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad_to_equal = pad_to_equal
        self.sampler = sampler  # an epoch sampler (samplers.py): indices(seed, epoch) replaces the permutation
        base = dataset
        while isinstance(base, Subset):
            base = base.dataset
        # on_bad_file="skip" data sets: batches carry the skipped samples, counted here per epoch
        self.tracks_skips = getattr(base, "on_bad_file", "raise") == "skip"
        self.max_skip_fraction = float(getattr(base, "max_skip_fraction", 1.0))
        self.skipped: list[tuple[int, int, str, str]] = []  # (epoch, index, path, reason)
        self.skip_counts: dict[int, int] = {}
        self._epoch_batches: list[list[tuple[int, int]]] = []
        source = _SampleSeeded(dataset, seed, seeded_samples)
        # in-memory tensors in this process: batches are slices of the epoch order, gathered directly
        # (the DataLoader machinery would cost more than the gather); the batches are the same
        # tensors already on an accelerator (the cached small-data mode) are always sliced here: workers
        # and pinning cannot take them
        resident = source.tensors is not None and any(t.device.type != "cpu" for t in source.tensors[0])
        self._direct = source if (source.tensors is not None and collate_fn is collate_indexed
                                  and (resident or (num_workers == 0 and not pin_memory))) else None
        self._loader = DataLoader(
            source,
            batch_sampler=_ListBatchSampler(self),
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
            timeout=timeout if num_workers > 0 else 0.0,
            collate_fn=collate_fn,
            generator=torch.Generator().manual_seed(seed),
        )

    def indices(self, epoch: int) -> list[int]:
        """This rank's sample indices for ``epoch``, in order."""
        n = len(self.dataset)
        if self.sampler is not None:
            order = [int(i) for i in self.sampler.indices(self.seed, epoch)]
        elif self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=generator).tolist()
        else:
            order = list(range(n))
        if self.world_size > 1:
            if self.pad_to_equal and n % self.world_size:
                order += order[: self.world_size - n % self.world_size]
            order = order[self.rank :: self.world_size]
        return order

    def batches(self, epoch: int) -> list[list[int]]:
        order, size = self.indices(epoch), self.batch_size
        return [order[number * size : (number + 1) * size] for number in range(self._batch_count(len(order)))]

    def _batch_count(self, samples: int) -> int:
        """Batches in an epoch of ``samples``: a short last batch counts unless ``drop_last``."""
        return samples // self.batch_size if self.drop_last else -(-samples // self.batch_size)

    def __len__(self) -> int:
        return len(self.batches(0))

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        if self._direct is not None:
            return self._iter_direct(epoch, start)
        self._epoch_batches = [[(epoch, i) for i in batch] for batch in self.batches(epoch)[start:]]
        if self.tracks_skips:
            return self._count_skips(iter(self._loader), epoch)
        return iter(self._loader)

    def _count_skips(self, batches: Iterator[dict[str, Any]], epoch: int) -> Iterator[dict[str, Any]]:
        """Take the skipped samples off each batch, count them, and stop past ``max_skip_fraction``."""
        limit = self.max_skip_fraction * len(self.indices(epoch))
        for batch in batches:
            found = batch.pop("skipped", None)
            if found:
                self.skipped.extend((epoch, *entry) for entry in found)
                count = self.skip_counts[epoch] = self.skip_counts.get(epoch, 0) + len(found)
                if count > limit:
                    listed = "\n  ".join(f"{path}: {reason}" for e, _, path, reason in self.skipped if e == epoch)
                    raise DatasetError(
                        f"{count} unreadable files skipped in epoch {epoch}, more than max_skip_fraction="
                        f"{self.max_skip_fraction} of {len(self.indices(epoch))} samples:\n  {listed}\n"
                        f"Fix or remove these files (trainforge data validate lists them all), or raise "
                        f"max_skip_fraction"
                    )
                if "input" not in batch:
                    continue  # every sample unreadable: no step for this batch
            yield batch

    def _iter_direct(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        """``iter_epoch`` for in-memory tensors: the same batches as ``batches(epoch)[start:]``."""
        order, size = self.indices(epoch), self.batch_size
        positions = torch.tensor(order, dtype=torch.int64)
        for number in range(start, self._batch_count(len(order))):
            yield self._direct.gather(positions[number * size : (number + 1) * size])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter_epoch(0, 0)


class _ListBatchSampler:
    """The batch sampler the DataLoader iterates (in the main process): the owner's current epoch list."""

    def __init__(self, owner: ResumableLoader) -> None:
        self.owner = owner

    def __iter__(self) -> Iterator[Sequence[tuple[int, int]]]:
        return iter(self.owner._epoch_batches)

    def __len__(self) -> int:
        return len(self.owner._epoch_batches)


class SkippedFilesLog:
    """Trainer callback for ``on_bad_file="skip"`` data: at each epoch end the number of files skipped
    goes into the metrics (``data/skipped_files``, so the logs and the report show it), and at the end of
    the run every skipped path and reason is written to ``skipped_files.json`` in the run folder."""

    def __init__(self, loader: ResumableLoader, run_dir: Any = None) -> None:
        self.loader = loader
        self.run_dir = run_dir

    def on_epoch_end(self, state: Any) -> None:
        state.metrics["data/skipped_files"] = float(self.loader.skip_counts.get(state.epoch, 0))

    def on_fit_end(self, state: Any) -> None:
        if self.run_dir is None:
            return
        import json
        from pathlib import Path

        entries = [{"epoch": e, "index": i, "path": p, "reason": r} for e, i, p, r in self.loader.skipped]
        Path(self.run_dir, "skipped_files.json").write_text(json.dumps(
            {"count": len(entries), "per_epoch": self.loader.skip_counts, "skipped": entries}, indent=1))
