"""``JsonlLogger``: the run's metrics as one JSON object per line (``metrics.jsonl``), the file the report
reads; and ``read_metrics_jsonl``, which reads it back and survives a line cut short by a crash."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import BaseLogger, flatten_params, float_metrics, infer_phase, is_main_process


def write_json_atomic(path: Path, data: Any, durable: bool = True, indent: int | None = 2) -> None:
    """Write ``data`` as JSON to ``path`` all or nothing (``checkpoint.atomic_file``). ``indent=None``
    writes one line with the C encoder (indenting takes json's pure-Python path: ~0.5 ms for 60 keys)."""
    from ..checkpoint import atomic_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, durable=durable) as file:
        file.write(json.dumps(data, indent=indent, sort_keys=True).encode("utf-8"))


class JsonlLogger(BaseLogger):
    """Append ``{"step", "epoch", "phase", "time", "metrics": {name: float}}`` lines to ``path``.

    Lines go to the OS at most ``flush_every_s`` seconds apart (a write system call per line costs more
    than the rest of logging it), before every checkpoint (the trainer calls ``flush``) and at ``close``:
    a crash loses at most the last second of lines, and never one logged before the last checkpoint
    (the resumed run logs the later steps again). ``flush_every_s=0`` flushes every line.
    The file is opened for appending: a resumed run continues it (the report keeps the latest value
    logged for a step). A last line cut short by a crash is cut off first, with a warning, so the
    continued file stays readable. A symbolic link at ``path`` is refused, never written through.
    ``phase`` defaults to the prefix all names share (``"valid"``), else ``""``.
    Values that are not numbers (non-scalar tensors) are left out; NaN and infinities are written as
    JSON's ``NaN``/``Infinity`` extensions, which Python reads back. Only rank 0 writes
    (``enabled=None`` checks ``RANK``). ``log_hyperparams`` writes ``hparams.json`` beside the file.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> with JsonlLogger(path) as logger:
    ...     logger.log_metrics({"train/loss": 0.5, "lr": 0.1}, step=10, epoch=0)
    >>> [(r["step"], r["metrics"]) for r in read_metrics_jsonl(path)]
    [(10, {'train/loss': 0.5, 'lr': 0.1})]
    """

    def __init__(
        self, path: str | Path, enabled: bool | None = None, flush_every_s: float = 1.0, log_every: int = 10,
        prefix: str = "",
    ) -> None:
        self.every(log_every, prefix)  # as a recipe callback (see BaseLogger)
        self.path = Path(path)
        self.enabled = is_main_process() if enabled is None else enabled
        self.flush_every_s = flush_every_s
        self._next_flush = 0.0  # the first line is flushed at once
        self._file = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = _open_for_append(self.path)  # kept open for the run

    def log_metrics(
        self, metrics: Mapping[str, Any], step: int, phase: str | None = None, *, epoch: int | None = None
    ) -> None:
        if self._file is None:
            return
        floats = float_metrics(metrics)
        if not floats:
            return
        record = {
            "step": int(step),
            "epoch": None if epoch is None else int(epoch),
            "phase": phase if phase is not None else infer_phase(floats),
            "time": time.time(),
            "metrics": floats,
        }
        self._file.write(json.dumps(record) + "\n")
        now = time.monotonic()
        if now >= self._next_flush:
            self._file.flush()
            self._next_flush = now + self.flush_every_s

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def log_hyperparams(self, params: Mapping[str, Any], final_metrics: Mapping[str, Any] | None = None) -> None:
        if self.enabled:
            data = {"params": flatten_params(params), "final_metrics": float_metrics(final_metrics or {})}
            # a summary of the run, written again by every fit: atomic, but not worth two fsyncs
            write_json_atomic(self.path.parent / "hparams.json", data, durable=False, indent=None)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _open_for_append(path: Path) -> Any:
    """Open ``path`` for appending text, never through a symbolic link, after cutting back a last line
    that a crash left without its newline (appending after it would damage the next record too)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    if path.is_symlink():
        raise OSError(f"{path} is a symbolic link; metrics are never written through a link: remove it")
    fd = os.open(path, flags, 0o644)
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file; remove it so metrics can be written there")
        _cut_partial_line(fd, path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def _cut_partial_line(fd: int, path: Path) -> None:
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:  # back to the last newline, a block at a time
        start = max(0, end - 65536)
        block = os.pread(fd, end - start, start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    os.ftruncate(fd, end)
    warnings.warn(
        f"{path}: removed an incomplete last line ({size - end} bytes) left by an interrupted run; the "
        "steps it held are logged again by the resumed run", UserWarning, stacklevel=4,
    )


def read_metrics_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl``, in order. A last line cut short (a crash mid-write) is skipped
    with a warning; any other line that is not JSON raises ``ValueError`` naming the file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                warnings.warn(f"{path}: skipped the last line, cut short ({error.msg})", stacklevel=2)
                break
            raise ValueError(f"{path}:{number}: not a JSON record ({error.msg}); the file is damaged") from None
    return records
