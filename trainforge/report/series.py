"""Metric series read from ``metrics.jsonl``: steps and values per name, where a step logged again (a
resumed run repeats the steps after its checkpoint) replaces what was logged from that step on; and how a
name splits into its phase group (``train``, ``valid_noisy``) and base name (``loss``)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..loggers.jsonl import read_metrics_jsonl

Series = tuple[list[int], list[float]]
#: The phase group of a name: a phase prefix, optionally with ``_<loader>`` (see ``metrics.phase_prefix``).
PHASE_GROUP = re.compile(r"^(train|valid|test|predict)(_[A-Za-z0-9_.-]+)?$")


def split_name(name: str) -> tuple[str | None, str]:
    """``(phase group, base name)``; the group is ``None`` for names without a phase prefix.

    >>> split_name("valid_noisy/accuracy"), split_name("lr"), split_name("throughput/samples_per_s")
    (('valid_noisy', 'accuracy'), (None, 'lr'), (None, 'throughput/samples_per_s'))
    """
    head, sep, tail = name.partition("/")
    if sep and PHASE_GROUP.match(head):
        return head, tail
    return None, name


def series_from_records(records: Iterable[Mapping[str, Any]]) -> dict[str, Series]:
    """``{name: (steps, values)}`` in logging order; a step at or before the last one logged for a name
    drops that name's points from that step on (the resumed run supersedes them).

    >>> records = [{"step": s, "metrics": {"loss": float(s)}} for s in (1, 2, 3, 2, 3)]
    >>> series_from_records(records)["loss"]
    ([1, 2, 3], [1.0, 2.0, 3.0])
    """
    series: dict[str, Series] = {}
    for record in records:
        step = int(record["step"])
        for name, value in record["metrics"].items():
            steps, values = series.setdefault(name, ([], []))
            while steps and steps[-1] >= step:
                steps.pop()
                values.pop()
            steps.append(step)
            values.append(math.nan if value is None else float(value))
    return series


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int, size: int) -> tuple[list[dict[str, Any]], dict[str, Series]]:
    records = read_metrics_jsonl(path)
    return records, series_from_records(records)


def load_run(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Series]]:
    """The records and series of a ``metrics.jsonl``, read once per file version (sections share it)."""
    stat = Path(path).stat()
    return _cached(str(path), stat.st_mtime_ns, stat.st_size)
