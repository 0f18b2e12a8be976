"""How the report writes a file: whole or not at all, with the run folder's ordinary permissions."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) at ``path`` through ``checkpoint.atomic_file``, so a reader never
    sees half a file; not fsynced (every fit writes the report again). The temporary file is created
    like any new file, so the result has the run folder's ordinary permissions.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_atomic(folder / "a.txt", "hi").read_text()
    'hi'
    """
    from ..checkpoint import atomic_file

    path = Path(path)
    with atomic_file(path, durable=False) as file:
        file.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path
