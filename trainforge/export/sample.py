"""An example input for tracing, taken from data: two samples of a data set (dict items with ``"input"``,
or ``(input, target)`` tuples) or the first batch of a DataLoader."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def sample_input(data: Any, count: int = 2) -> torch.Tensor | None:
    """A batch tensor of up to ``count`` inputs from ``data`` (a Dataset, a DataLoader, or a dict of
    them: its first entry); None when ``data`` is None or empty.

    >>> from torch.utils.data import TensorDataset
    >>> sample_input(TensorDataset(torch.zeros(5, 3, 8, 8), torch.zeros(5))).shape
    torch.Size([2, 3, 8, 8])
    """
    if data is None:
        return None
    if isinstance(data, Mapping):
        return sample_input(next(iter(data.values()), None), count)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, torch.utils.data.DataLoader):
        items = [_input_of(data[i]) for i in range(min(count, len(data)))]
        if not items:
            return None
        return torch.stack([torch.as_tensor(x) for x in items])
    batch = next(iter(data), None)
    return None if batch is None else torch.as_tensor(_input_of(batch))


def _input_of(item: Any) -> Any:
    if isinstance(item, Mapping):
        if "input" not in item:
            raise KeyError(f"a data item has no 'input' key (it has {sorted(item)}); pass example_input=... instead")
        return item["input"]
    if isinstance(item, (tuple, list)):
        return item[0]
    return item
