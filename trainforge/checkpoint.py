"""Checkpoint I/O: atomic directory writes committed by a SHA-256 manifest, verified weights-only loads,
resume discovery, pruning, and the one safe ``torch.load`` for plain weight files. Policy (when to save,
what to keep) belongs to the checkpoint callback; this module only reads and writes.

A checkpoint is a directory ``<parent>/<name>/`` holding ``state.pt`` (one ``torch.save`` of plain
containers and tensors) and ``MANIFEST.json`` (format version, size and SHA-256 per file, caller
metadata, and a checksum of the manifest itself). The manifest is written last and the directory is
renamed into place only when complete, so a directory without a valid manifest was never committed.
``<parent>/latest`` names the last save; resume prefers the newest committed checkpoint that verifies.

>>> import tempfile, torch
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = save_checkpoint(f"{tmp}/step-000002", {"w": torch.ones(2)}, {"global_step": 2})
...     state = load_checkpoint(path)
...     (path.name, read_latest(tmp), state["w"].tolist(), read_manifest(path)["metadata"])
('step-000002', 'step-000002', [1.0, 1.0], {'global_step': 2})

Fault injection for tests: ``TRAINFORGE_FAULT`` is read at each ``save_checkpoint`` call (values that
other parts of trainforge use are ignored here):

- ``kill_in_save:after_state``: SIGKILL once ``torch.save`` returned, before ``state.pt`` is flushed.
- ``kill_in_save:before_manifest``: ``state.pt`` is fsynced; ``MANIFEST.json`` is not written.
- ``kill_in_save:before_rename``: the temporary directory is complete and fsynced, not yet renamed.
- ``kill_in_save:after_aside``: re-saving an existing name, the old directory was moved aside and the
  new one is not yet in place; ``clean_stale`` moves the old one back.
- ``kill_in_save:before_latest``: committed under its final name; ``latest`` still names the previous
  save. ``find_resume_checkpoint`` picks the new one anyway: it is committed and verified.
- ``enospc_in_save``: the second write into ``state.pt`` raises ``OSError(ENOSPC)``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import pickle
import pickletools
import secrets
import shutil
import signal
import stat
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import CheckpointCorruptError, CheckpointError, CheckpointWriteError, ModelLoadError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

StrPath = str | os.PathLike

STATE_FILE = "state.pt"
MANIFEST_FILE = "MANIFEST.json"
LATEST_FILE = "latest"
FORMAT_VERSION = 1
FAULT_ENV = "TRAINFORGE_FAULT"
KILL_POINTS = ("after_state", "before_manifest", "before_rename", "after_aside", "before_latest")

_TMP_MARK = ".tmp-"  # an unfinished write: never a checkpoint, removed by clean_stale
_OLD_MARK = ".old-"  # a committed checkpoint moved aside while its name is re-saved
_CHUNK = 1 << 20
_MANIFEST_LIMIT = 64 << 20  # a manifest lists a few files; anything larger is not one
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO for reading must not wait for a writer
_LOW_SPACE = 1 << 20  # below this many free bytes a failed write is reported as a full disk
# Bytes per element of the storage classes torch.save references; "UntypedStorage" counts bytes.
_ITEMSIZE = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8, "QInt8Storage": 1, "QInt32Storage": 4,
    "QUInt8Storage": 1, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1, "UntypedStorage": 1,
}  # fmt: skip


# -- atomic files ----------------------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows has no directory handles
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # filesystems without dir fsync
            raise
    finally:
        os.close(fd)


def _scratch_name(name: str, mark: str) -> str:
    return f"{name}{mark}{os.getpid()}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def atomic_file(path: StrPath, durable: bool = True) -> Iterator[BinaryIO]:
    """Write ``path`` all or nothing: yield a binary temporary file in the same folder; on a clean exit
    flush, fsync, ``os.replace`` it onto ``path`` and fsync the folder; on an error remove it, leaving an
    existing ``path`` untouched. A reader that has the old file open or mmap-ed keeps the old bytes.
    ``durable=False`` skips both fsyncs (milliseconds each): still all or nothing if the process dies,
    but a power cut may leave the old file — for summaries that can be written again, never checkpoints.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with atomic_file(f"{tmp}/notes.txt") as f:
    ...         _ = f.write(b"hello")
    ...     open(f"{tmp}/notes.txt", "rb").read()
    b'hello'
    """
    target = Path(path)
    tmp = target.with_name(_scratch_name(target.name, _TMP_MARK))
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        _fsync_dir(target.parent)


def atomic_write_bytes(path: StrPath, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically (see ``atomic_file``); returns the path.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     atomic_write_bytes(f"{tmp}/a.bin", b"xy").read_bytes()
    b'xy'
    """
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


# -- fault injection (tests only) ------------------------------------------------------------------
def _read_fault() -> str | None:
    """This module's fault, when ``TRAINFORGE_FAULT`` names one; other modules share the variable."""
    value = os.environ.get(FAULT_ENV, "")
    if value == "enospc_in_save":
        return value
    if value.startswith("kill_in_save:"):
        point = value.partition(":")[2]
        if point not in KILL_POINTS:
            raise ValueError(f"{FAULT_ENV}={value!r}: unknown kill point; expected one of {', '.join(KILL_POINTS)}")
        return value
    return None


def _maybe_kill(fault: str | None, point: str) -> None:
    if fault == f"kill_in_save:{point}":
        os.kill(os.getpid(), signal.SIGKILL)


class _FullDiskWriter:
    """File object for ``torch.save`` whose second write fails with ENOSPC, as a real full disk would."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes > 1:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected by {FAULT_ENV})")
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


# -- saving ----------------------------------------------------------------------------------------
def _is_scratch(name: str) -> bool:
    return _TMP_MARK in name or _OLD_MARK in name


def _valid_name(name: str) -> bool:
    """A checkpoint name is one plain path component that scans would not mistake for scratch."""
    plain = name not in ("", ".", "..", LATEST_FILE) and not any(c in name for c in "/\\\0")
    return plain and len(name) <= 255 and not _is_scratch(name)


def _jsonable(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The metadata exactly as ``read_manifest`` will return it; fails before anything is written."""
    if metadata is None:
        return {}
    try:
        return json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"checkpoint metadata must hold only numbers, strings, bools, None, lists and dicts ({exc}); "
            "convert tensors with .item() or .tolist()"
        ) from exc


def _sha256(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    f.seek(0)
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _write_synced(file: Path, data: bytes) -> None:
    with open(file, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_state(file: Path, state: dict[str, Any], fault: str | None) -> dict[str, Any]:
    """Write and fsync ``state.pt``; returns its manifest entry (hashed from disk, as a reader will)."""
    with open(file, "x+b") as f:
        torch.save(state, _FullDiskWriter(f) if fault == "enospc_in_save" else f)
        _maybe_kill(fault, "after_state")
        f.flush()
        os.fsync(f.fileno())
        return {"sha256": _sha256(f), "size": os.fstat(f.fileno()).st_size}


def _refuse_unloadable(file: Path, final: Path) -> None:
    """A checkpoint that ``load_checkpoint`` would reject is useless, so say so at save time."""
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(file)
    if unsafe:
        raise CheckpointError(
            f"refusing to save checkpoint {final}: the state holds {', '.join(sorted(unsafe))}, which "
            "weights-only loading rejects; store tensors, numbers, strings, lists and dicts instead "
            "(e.g. torch.from_numpy(array), numpy RNG state as a list)"
        )


def _write_tree(tmp: Path, final: Path, state: dict[str, Any], metadata: dict[str, Any], fault: str | None) -> None:
    """Fill the temporary directory ``tmp``: state first, the manifest (the commit marker) last."""
    from . import __version__  # late: the package imports this module

    tmp.mkdir()
    entry = _write_state(tmp / STATE_FILE, state, fault)
    _refuse_unloadable(tmp / STATE_FILE, final)
    _maybe_kill(fault, "before_manifest")
    manifest = {
        "format_version": FORMAT_VERSION,
        "trainforge_version": __version__,
        "files": {STATE_FILE: entry},
        "metadata": metadata,
    }
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    _write_synced(tmp / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True).encode())
    _fsync_dir(tmp)


def _check_replaceable(final: Path) -> None:
    """Saving over ``final`` replaces only a trainforge checkpoint (a folder holding ``MANIFEST.json`` and
    nothing but a checkpoint's files) or an empty folder; anything else is refused, untouched."""
    if not (final.exists() or final.is_symlink()):
        return
    what = "a symbolic link" if final.is_symlink() else None if final.is_dir() else "a file"
    names = set(os.listdir(final)) if what is None else set()
    if what is None and (not names or (MANIFEST_FILE in names and names <= {MANIFEST_FILE, STATE_FILE})):
        return
    if what is None:
        shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
        what = f"a folder that is not a trainforge checkpoint (no {MANIFEST_FILE}; it holds {shown})"
    raise CheckpointError(
        f"refusing to save a checkpoint at {final}: it exists and is {what}; nothing was changed. Saving "
        f"replaces only an earlier trainforge checkpoint: pick a new path (e.g. {final / 'checkpoint'}) or "
        "move it away yourself"
    )


def _commit(tmp: Path, final: Path, fault: str | None) -> None:
    """Rename the finished ``tmp`` to ``final``. rename(2) cannot replace a non-empty directory, so an
    existing ``final`` is moved aside first and deleted after; ``clean_stale`` repairs a kill in between."""
    aside = None
    if final.exists() or final.is_symlink():
        _check_replaceable(final)
        aside = final.with_name(_scratch_name(final.name, _OLD_MARK))
        os.replace(final, aside)
        _maybe_kill(fault, "after_aside")
    try:
        os.replace(tmp, final)
    except OSError:
        if aside is not None:
            os.replace(aside, final)  # put the previous checkpoint back
        raise
    _fsync_dir(final.parent)
    if aside is not None:
        _remove(aside)  # a failure leaves an ".old-" directory that clean_stale deletes


def _errno_in_chain(exc: BaseException | None) -> int | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


def _free_bytes(directory: Path) -> int:
    try:
        stats = os.statvfs(directory)
    except (OSError, AttributeError):  # no statvfs on Windows
        return _LOW_SPACE
    return stats.f_bavail * stats.f_frsize


def _write_error(
    final: Path, exc: BaseException, where: str = "", after: str = "the previous checkpoint is untouched"
) -> CheckpointWriteError:
    """torch reports a failed write as "unexpected pos" (E4); recover the errno from the exception
    chain, or from the free space (checked before the temporary files are removed)."""
    code = _errno_in_chain(exc)
    if code is None and _free_bytes(final.parent) < _LOW_SPACE:
        code = errno.ENOSPC
    where = where or f"could not save checkpoint {final}"
    after = f"{after}. Cause: {type(exc).__name__}: {exc}"
    if code is None:
        return CheckpointWriteError(f"{where}; {after}")
    reason = f"{os.strerror(code)} [{errno.errorcode.get(code, code)}]"
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        reason += "; free space or point the checkpoint directory elsewhere"
    return CheckpointWriteError(code, f"{where}: {reason}; {after}")


def save_checkpoint(
    path: StrPath, state: dict[str, Any], metadata: Mapping[str, Any] | None = None, *, update_latest: bool = True
) -> Path:
    """Write ``state`` as the checkpoint directory ``path``, atomically; returns ``path`` as a ``Path``.

    ``state`` must load with ``weights_only=True`` (tensors, numbers, strings, lists, tuples, dicts);
    anything else is refused here, not at resume time. ``metadata`` (JSON-serializable; put
    ``global_step`` in it so scans order checkpoints by step) goes into the manifest. Re-saving an
    existing name replaces it only once the new one is complete. Afterwards ``<parent>/latest`` names
    this checkpoint (``update_latest=False`` leaves it alone, e.g. for a "best" copy).

    Raises ``CheckpointWriteError`` (an ``OSError`` with ``errno`` set when known) naming the path and the
    cause, e.g. "No space left on device [ENOSPC]"; the temporary directory is removed and an earlier
    checkpoint under the same name is untouched.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     first = save_checkpoint(f"{tmp}/last", {"w": torch.zeros(1)}, {"global_step": 1})
    ...     again = save_checkpoint(f"{tmp}/last", {"w": torch.ones(1)}, {"global_step": 2})
    ...     load_checkpoint(again)["w"].item(), read_manifest(again)["metadata"]["global_step"]
    (1.0, 2)
    """
    final = Path(path)
    if not _valid_name(final.name):
        raise ValueError(f"invalid checkpoint name {final.name!r}: use one plain name such as 'step-000120'")
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    metadata_json = _jsonable(metadata)
    _check_replaceable(final)  # before any work: a user's folder at this path is never replaced
    fault = _read_fault()
    tmp = final.with_name(_scratch_name(final.name, _TMP_MARK))
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _write_tree(tmp, final, state, metadata_json, fault)
        _maybe_kill(fault, "before_rename")
        _commit(tmp, final, fault)
    except BaseException as exc:
        failed_io = isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, CheckpointError)
        error = _write_error(final, exc) if failed_io else None  # before cleanup frees the space
        shutil.rmtree(tmp, ignore_errors=True)
        if error is not None:
            raise error from exc
        raise
    _maybe_kill(fault, "before_latest")
    if update_latest:
        try:
            write_latest(final.parent, final.name)
        except OSError as exc:
            where = f"checkpoint {final} is committed, but {final.parent / LATEST_FILE} was not updated"
            raise _write_error(final, exc, where, "resuming still finds the checkpoint by scanning") from exc
    return final


def link_checkpoint(source: StrPath, path: StrPath, *, update_latest: bool = True) -> Path:
    """Make ``path`` a second name of the committed checkpoint ``source`` — a folder of hard links to its
    files, so the bytes exist once — committed like a save (scratch folder, rename, ``latest``). Where the
    filesystem has no hard links the files are copied. Deleting either folder leaves the other intact.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     top = save_checkpoint(f"{tmp}/step-000003", {"w": torch.ones(1)}, {"global_step": 3})
    ...     last = link_checkpoint(top, f"{tmp}/last")
    ...     (last / STATE_FILE).stat().st_ino == (top / STATE_FILE).stat().st_ino, read_latest(tmp)
    (True, 'last')
    """
    src, final = Path(source), Path(path)
    if not _valid_name(final.name):
        raise ValueError(f"invalid checkpoint name {final.name!r}: use one plain name such as 'last'")
    names = [*read_manifest(src)["files"], MANIFEST_FILE]
    _check_replaceable(final)
    fault = _read_fault()
    tmp = final.with_name(_scratch_name(final.name, _TMP_MARK))
    try:
        tmp.mkdir()
        for name in names:
            _link_or_copy(src / name, tmp / name)
        _fsync_dir(tmp)
        _maybe_kill(fault, "before_rename")
        _commit(tmp, final, fault)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, CheckpointError):
            raise _write_error(final, exc) from exc
        raise
    if update_latest:
        write_latest(final.parent, final.name)
    return final


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        with _open_regular(source) as f, open(target, "xb") as out:
            shutil.copyfileobj(f, out)
            out.flush()
            os.fsync(out.fileno())


def assert_finite(state: Any) -> None:
    """Raise ``CheckpointError`` naming the first floating tensor in ``state`` with NaN or inf values.

    Whether to refuse such a save is the caller's policy (the trainer refuses). One host sync per
    floating tensor, at save time only.

    >>> import torch
    >>> assert_finite({"model": {"w": torch.ones(2)}})
    >>> assert_finite({"optim": [{"m": torch.tensor([1.0, float("nan")])}]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.CheckpointError: state['optim'][0]['m'] holds 1 NaN/inf of 2 values; ...
    """
    for where, tensor in _tensors(state, "state"):
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise CheckpointError(
                f"{where} holds {bad} NaN/inf of {tensor.numel()} values; refusing to checkpoint it. "
                "Training diverged earlier: lower the learning rate or enable gradient clipping"
            )


def _tensors(obj: Any, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield where, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _tensors(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{where}[{i}]")


# -- the latest pointer ----------------------------------------------------------------------------
def write_latest(directory: StrPath, name: str) -> Path:
    """Point ``<directory>/latest`` at the checkpoint ``name``, atomically; returns the pointer's path.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = write_latest(tmp, "step-000010")
    ...     read_latest(tmp)
    'step-000010'
    """
    if not _valid_name(name):
        raise ValueError(f"invalid checkpoint name {name!r} for the latest pointer: expected one plain name")
    return atomic_write_bytes(Path(directory) / LATEST_FILE, f"{name}\n".encode())


def read_latest(directory: StrPath) -> str | None:
    """The name ``<directory>/latest`` holds, or None when it is missing or not a plain name.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     read_latest(tmp) is None
    True
    """
    try:
        with _open_regular(Path(directory) / LATEST_FILE) as f:
            name = f.read(1024).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError, CheckpointError):
        return None
    return name if _valid_name(name) else None


# -- reading and verifying -------------------------------------------------------------------------
def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON without this field: a flipped byte in the metadata
    (say, the step) would otherwise go unnoticed."""
    rest = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a parsed manifest object, or None when it is well formed."""
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        return "does not match its own checksum (manifest_sha256)"
    if not isinstance(manifest.get("format_version"), int) or manifest["format_version"] < 1:
        return "has no valid format_version"
    files = manifest.get("files")
    if not isinstance(files, dict) or STATE_FILE not in files:
        return f"does not list {STATE_FILE}"
    for name, entry in files.items():
        if not _valid_name(name):  # a manifest must never point outside its directory
            return f"lists an invalid file name {name!r}"
        sha, size = (entry.get("sha256"), entry.get("size")) if isinstance(entry, dict) else (None, None)
        if not (isinstance(sha, str) and len(sha) == 64 and isinstance(size, int) and size >= 0):
            return f"has no valid sha256 and size for {name!r}"
    if not isinstance(manifest.get("metadata"), dict):
        return "has no metadata object"
    return None


def read_manifest(path: StrPath) -> dict[str, Any]:
    """The parsed ``MANIFEST.json`` of the checkpoint directory ``path``: ``format_version``,
    ``trainforge_version``, ``files`` (``{name: {"sha256", "size"}}``), the caller's ``metadata``, and
    ``manifest_sha256`` (a checksum of the rest, checked here).

    Raises ``CheckpointCorruptError`` when it is missing (the save never committed) or malformed, and
    ``CheckpointError`` when ``path`` is not a directory or the format is newer than this trainforge.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     m = read_manifest(save_checkpoint(f"{tmp}/c", {"w": torch.ones(1)}, {"epoch": 3}))
    ...     m["format_version"], sorted(m["files"]), m["metadata"]
    (1, ['state.pt'], {'epoch': 3})
    """
    directory = Path(path)
    file = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint directory at {directory}: pass the directory holding {MANIFEST_FILE}")
    try:
        with _open_regular(file) as f:
            manifest = json.loads(f.read(_MANIFEST_LIMIT))
    except FileNotFoundError:
        raise CheckpointCorruptError(
            f"{directory} has no {MANIFEST_FILE}: its save never committed; pick a checkpoint with "
            "find_resume_checkpoint"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError covers bad JSON and bad UTF-8
        raise CheckpointCorruptError(f"{file} cannot be read as JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise CheckpointCorruptError(f"{file} is not a JSON object")
    version = manifest.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory} has checkpoint format {version}; this trainforge reads up to {FORMAT_VERSION}: "
            "upgrade trainforge"
        )
    problem = _manifest_problem(manifest)
    if problem is not None:
        raise CheckpointCorruptError(f"{file} {problem}")
    return manifest


def _open_regular(file: Path) -> BinaryIO:
    """Open ``file`` for reading only when it is a regular file: a symbolic link, FIFO, socket or device
    is refused (``CheckpointCorruptError``) without being opened — a FIFO would block the reader forever,
    a link could read anything on the machine. The type is checked again on the open descriptor."""
    kind = _special_kind(os.lstat(file).st_mode)
    if kind is None:
        fd = os.open(file, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
        kind = _special_kind(os.fstat(fd).st_mode)
        if kind is None:
            return os.fdopen(fd, "rb")
        os.close(fd)
    raise CheckpointCorruptError(f"{file} is {kind}, not a regular file; refused without reading it")


def _special_kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISDIR, "a folder"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _open_listed(file: Path) -> BinaryIO:
    try:
        return _open_regular(file)
    except FileNotFoundError:
        raise CheckpointCorruptError(f"{file} is listed in {MANIFEST_FILE} but missing") from None
    except OSError as exc:
        raise CheckpointCorruptError(f"{file} cannot be opened: {exc}") from exc


def _verify_open(f: BinaryIO, file: Path, expected: Mapping[str, Any]) -> None:
    size = os.fstat(f.fileno()).st_size
    actual = _sha256(f)
    f.seek(0)
    if size != expected["size"] or actual != expected["sha256"]:
        raise CheckpointCorruptError(
            f"{file} is corrupt: SHA-256 expected {expected['sha256']}, actual {actual}; "
            f"size expected {expected['size']} bytes, actual {size}"
        )


def verify_checkpoint(path: StrPath) -> None:
    """Check that the checkpoint directory ``path`` is committed and every file matches its manifest
    (size and SHA-256); raises ``CheckpointCorruptError`` naming the file, with expected vs actual.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     verify_checkpoint(save_checkpoint(f"{tmp}/c", {"w": torch.ones(1)}))
    """
    directory = Path(path)
    for name, expected in read_manifest(directory)["files"].items():
        with _open_listed(directory / name) as f:
            _verify_open(f, directory / name, expected)


def load_checkpoint(path: StrPath, map_location: Any = "cpu", *, trust: bool = False) -> dict[str, Any]:
    """The ``state`` dict saved in the checkpoint directory ``path`` (metadata: ``read_manifest``).

    In order: the manifest must parse; every file must match its size and SHA-256
    (``CheckpointCorruptError`` naming the file); ``state.pt`` must be an uncompressed zip whose records
    and declared tensor sizes fit in the file (``CheckpointCorruptError``, before torch allocates
    anything); then ``torch.load(weights_only=True)``, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot
    override. A pickle that references anything outside torch's allowlist raises
    ``UnsafeCheckpointError`` naming it; nothing is executed, and there is no unsafe retry.

    ``trust=True`` loads with ``weights_only=False`` after the same integrity checks and warns: it runs
    whatever code the file holds, so use it only for files you produced yourself.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     load_checkpoint(save_checkpoint(f"{tmp}/c", {"step": 7, "w": torch.ones(1)}))["step"]
    7
    """
    directory = Path(path)
    manifest = read_manifest(directory)
    for name, expected in manifest["files"].items():
        if name != STATE_FILE:
            with _open_listed(directory / name) as f:
                _verify_open(f, directory / name, expected)
    file = directory / STATE_FILE
    with _open_listed(file) as f:
        _verify_open(f, file, manifest["files"][STATE_FILE])
        _prescan(f, file, CheckpointCorruptError)
        if trust:
            return _load_trusted(f, map_location, file)
        hint = "if you produced this file yourself and trust it, pass trust=True"
        return _load_weights_only(f, map_location, file, UnsafeCheckpointError, CheckpointError, hint)


def load_state_file(path: StrPath, map_location: Any = "cpu") -> Any:
    """Load a plain ``.pt``/``.pth`` file (e.g. pretrained weights) safely: the same zip pre-scan as
    ``load_checkpoint`` and ``torch.load(weights_only=True)``. Every failure, including a file that
    references non-allowlisted objects, raises ``ModelLoadError`` naming the file.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     torch.save({"w": torch.arange(3)}, f"{tmp}/weights.pt")
    ...     load_state_file(f"{tmp}/weights.pt")["w"].tolist()
    [0, 1, 2]
    """
    file = Path(path)
    try:
        f = _open_regular(file)
    except (OSError, CheckpointCorruptError) as exc:
        raise ModelLoadError(f"cannot open weights file {file}: {exc}") from exc
    with f:
        _prescan(f, file, ModelLoadError)
        hint = "convert the file once, in an environment you trust, to plain tensors or safetensors"
        return _load_weights_only(f, map_location, file, ModelLoadError, ModelLoadError, hint)


def _load_weights_only(
    f: BinaryIO, map_location: Any, file: Path, unsafe_error: type[Exception], other_error: type[Exception], hint: str
) -> Any:
    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # "from None": torch's own message advises weights_only=False, which we never want to suggest.
        raise unsafe_error(_unsafe_message(f, file, exc, hint)) from None
    except Exception as exc:
        raise other_error(f"{file} could not be loaded: {type(exc).__name__}: {exc}") from exc


def _unsafe_message(f: BinaryIO, file: Path, exc: Exception, hint: str) -> str:
    try:
        f.seek(0)
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(f))
    except Exception:  # the scan is best effort; the refusal already happened
        names = []
    reason = str(exc).rpartition("WeightsUnpickler error:")[2].strip().splitlines()[0:1]
    found = f"it references {', '.join(names)}" if names else f"the unpickler refused it ({''.join(reason)})"
    return f"refused to load {file}: {found}, which weights-only loading does not allow; nothing was executed. {hint}"


def _load_trusted(f: BinaryIO, map_location: Any, file: Path) -> Any:
    """The one unsafe load (``weights_only=False``), reached only through ``trust=True``; the static
    safety gate allowlists this function and no other."""
    message = f"loading {file} with trust=True (weights_only=False): it can run any code it contains"
    logger.warning(message)
    warnings.warn(message, UserWarning, stacklevel=3)
    return torch.load(f, map_location=map_location, weights_only=False)


# -- zip pre-scan: refuse decompression bombs and oversized declarations before torch.load --------
class _ArchiveRejected(Exception):
    """Internal: why a .pt file was refused; callers re-raise it as their own error class."""


def _prescan(f: BinaryIO, file: Path, error: type[Exception]) -> None:
    try:
        _scan_archive(f)
    except _ArchiveRejected as exc:
        raise error(f"{file} refused before torch.load: {exc}") from None
    finally:
        f.seek(0)


def _scan_archive(f: BinaryIO) -> None:
    """torch.save writes an uncompressed zip; a compressed member can declare gigabytes in a few
    kilobytes (E11), so only stored members whose sizes fit in the file pass."""
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as archive:
            members = archive.infolist()
            _check_members(members, size)
            prefix = members[0].filename.split("/")[0]
            pickle_bytes = archive.read(f"{prefix}/data.pkl")  # stored, so bounded by the file size
    except (zipfile.BadZipFile, KeyError, IndexError, ValueError, EOFError, OSError, NotImplementedError) as exc:
        raise _ArchiveRejected(
            f"not a readable torch.save zip archive ({exc}); files in the legacy pre-1.6 format must be "
            "re-saved with a current torch"
        ) from exc
    names = {m.filename for m in members}
    for key, nbytes in _declared_storages(pickle_bytes):
        if nbytes > size:
            raise _ArchiveRejected(f"tensor storage {key!r} declares {nbytes} bytes but the file has {size}")
        if f"{prefix}/data/{key}" not in names:
            raise _ArchiveRejected(f"tensor storage {key!r} has no data record")


def _check_members(members: list[zipfile.ZipInfo], size: int) -> None:
    total = 0
    for m in members:
        if m.compress_type != zipfile.ZIP_STORED:
            raise _ArchiveRejected(
                f"member {m.filename!r} is compressed (method {m.compress_type}); torch.save never "
                "compresses, and a compressed record can expand to gigabytes"
            )
        if m.flag_bits & 0x1:
            raise _ArchiveRejected(f"member {m.filename!r} is encrypted")
        if m.file_size != m.compress_size or m.header_offset + m.file_size > size:
            raise _ArchiveRejected(f"member {m.filename!r} declares {m.file_size} bytes, beyond the file's {size}")
        total += m.file_size
    if total > size:
        raise _ArchiveRejected(f"members declare {total} bytes in total but the file has {size}")


def _declared_storages(pickle_bytes: bytes) -> list[tuple[str, int]]:
    """(record key, declared bytes) of each tensor storage the pickle references."""
    try:
        ids = _persistent_ids(pickle_bytes)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise _ArchiveRejected(f"data.pkl is not a well-formed pickle ({exc})") from exc
    storages = []
    for pid in ids:
        ok = isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
        if not (ok and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0):
            raise _ArchiveRejected("data.pkl holds a malformed tensor storage reference")
        storage_class = str(pid[1]).rpartition(" ")[2] if isinstance(pid[1], str) else ""
        storages.append((pid[2], pid[4] * _ITEMSIZE.get(storage_class, 1)))
    return storages


_SMALL_TUPLES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def _persistent_ids(data: bytes) -> list[Any]:
    """The persistent ids (torch's storage references) in a pickle, found by simulating the pickle stack
    over ``pickletools.genops``. Nothing is imported or called, so a hostile pickle is inert here."""
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[Any, Any] = {}
    found: list[Any] = []
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name == "MARK":
            marks.append(len(stack))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif name == "TUPLE" or name in _SMALL_TUPLES:
            start = marks.pop() if name == "TUPLE" else len(stack) - _SMALL_TUPLES[name]
            if start < 0:
                raise IndexError("tuple of more items than the stack holds")
            items = tuple(stack[start:])
            del stack[start:]
            stack.append(items)
        elif name == "STACK_GLOBAL":
            attribute, module = stack.pop(), stack.pop()
            stack.append(f"{module} {attribute}")
        elif name in ("BINPERSID", "PERSID"):
            found.append(stack.pop() if name == "BINPERSID" else arg)
            stack.append(None)
        else:
            _generic_stack_effect(op, arg, stack, marks)
    return found


def _generic_stack_effect(op: pickletools.OpcodeInfo, arg: Any, stack: list[Any], marks: list[int]) -> None:
    """Pop and push what ``op`` would, keeping literal arguments (strings, ints, GLOBAL names) as values."""
    before = op.stack_before
    below = len(before)
    if pickletools.markobject in before:  # the items above the mark go with it
        below = before.index(pickletools.markobject)
        del stack[marks.pop() :]
    if below:
        if len(stack) < below:
            raise IndexError(f"{op.name} on a stack of {len(stack)} items")
        del stack[len(stack) - below :]
    if not before and len(op.stack_after) == 1:
        stack.append(arg)  # literal push; arg is None for NONE, EMPTY_* and the like
    else:
        stack.extend([None] * len(op.stack_after))


# -- discovery, cleanup, pruning -------------------------------------------------------------------
def _scan(directory: Path) -> tuple[list[tuple[Path, dict[str, Any]]], list[tuple[Path, str]]]:
    """Committed checkpoints with their manifests, and directories whose manifest is unreadable.

    A ``<name>.old-*`` directory counts while ``<name>`` is missing: a kill hit the re-save of ``<name>``
    after the old copy was moved aside, and it is the only copy until ``clean_stale`` renames it back."""
    committed, broken = [], []
    if not directory.is_dir():
        return committed, broken
    for child in sorted(directory.iterdir()):
        manifest = child / MANIFEST_FILE
        if _TMP_MARK in child.name or child.is_symlink() or not (manifest.exists() or manifest.is_symlink()):
            continue  # unfinished writes, links out of the run folder, folders that are not checkpoints
        if _OLD_MARK in child.name and (directory / child.name.partition(_OLD_MARK)[0]).exists():
            continue  # superseded by the completed re-save
        try:
            committed.append((child, read_manifest(child)))
        except CheckpointError as exc:
            broken.append((child, str(exc)))
    return committed, broken


def _age(entry: tuple[Path, dict[str, Any]], latest: str | None = None) -> tuple[Any, ...]:
    """Sort key, oldest first: checkpoints with a ``global_step`` by step, after those without; ties go
    to the one ``latest`` names, then to the later commit (manifest mtime), then to the name."""
    path, manifest = entry
    step = manifest["metadata"].get("global_step")
    has_step = isinstance(step, int) and not isinstance(step, bool)
    try:
        committed_at = (path / MANIFEST_FILE).stat().st_mtime_ns
    except OSError:
        committed_at = 0
    return (has_step, step if has_step else 0, path.name == latest, committed_at, path.name)


def list_checkpoints(directory: StrPath) -> list[Path]:
    """Committed checkpoint directories in ``directory``, oldest first: by ``metadata["global_step"]``
    when present (those without one come first, by commit time). Unfinished writes (``*.tmp-*``),
    symlinks and folders without a readable manifest are left out; files are not verified here. A
    ``<name>.old-*`` copy is listed only while ``<name>`` is missing (see ``clean_stale``).

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for step in (20, 10):
    ...         _ = save_checkpoint(f"{tmp}/step-{step:06d}", {"w": torch.ones(1)}, {"global_step": step})
    ...     [p.name for p in list_checkpoints(tmp)]
    ['step-000010', 'step-000020']
    """
    committed, _ = _scan(Path(directory))
    return [path for path, _ in sorted(committed, key=_age)]


def find_resume_checkpoint(directory: StrPath, run_id: str | None = None) -> Path | None:
    """The newest committed checkpoint in ``directory`` that verifies, or None when there is none.

    With ``run_id``, only checkpoints whose manifest metadata carries that ``run_id`` count (the run
    folder's own run); others are skipped with a warning naming them.

    Candidates are tried newest first (order of ``list_checkpoints``, with the one ``latest`` names
    winning ties), so a checkpoint committed just before a kill is used even if ``latest`` still names
    the previous one. Each skipped checkpoint (corrupt file, unreadable manifest) gets a warning naming
    it and why. Temporary directories and directories without a manifest are never returned. If a kill
    interrupted re-saving ``<name>`` after the old copy was moved aside, that copy (``<name>.old-*``) can
    be returned; ``clean_stale`` renames it back to ``<name>``, so call it first where you can.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = save_checkpoint(f"{tmp}/step-000005", {"w": torch.ones(1)}, {"global_step": 5})
    ...     find_resume_checkpoint(tmp).name
    'step-000005'
    """
    committed, broken = _scan(Path(directory))
    for path, reason in broken:
        warnings.warn(f"skipping checkpoint {path}: {reason}", UserWarning, stacklevel=2)
    if run_id is not None:
        foreign = [path for path, manifest in committed if manifest["metadata"].get("run_id") != run_id]
        if foreign:
            warnings.warn(
                f"skipping {len(foreign)} checkpoint(s) not written by run {run_id} of this folder: "
                f"{', '.join(p.name for p in foreign)}", UserWarning, stacklevel=2,
            )
        committed = [(path, manifest) for path, manifest in committed if manifest["metadata"].get("run_id") == run_id]
    latest = read_latest(directory)
    if latest is not None and latest not in {path.name.partition(_OLD_MARK)[0] for path, _ in committed}:
        warnings.warn(f"{Path(directory) / LATEST_FILE} names {latest!r}, not a committed checkpoint", stacklevel=2)
    for path, _ in sorted(committed, key=lambda entry: _age(entry, latest), reverse=True):
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"skipping corrupt checkpoint {path}, trying an older one: {exc}", UserWarning, stacklevel=2)
            continue
        return path
    return None


def _remove(path: Path) -> bool:
    """Delete a file or directory tree; a failure is logged, not raised, so the caller can retry."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return True
    except OSError as exc:
        logger.warning("could not remove %s (%s); it is left in place, retry later", path, exc)
        return False
    return True


def remove_checkpoint(path: StrPath) -> bool:
    """Delete a checkpoint (pruning). Returns False, and logs a warning, when the delete fails; a
    checkpoint that could not be deleted at all stays valid. Do not remove the one ``latest`` names.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     old = save_checkpoint(f"{tmp}/step-000001", {"w": torch.ones(1)}, update_latest=False)
    ...     remove_checkpoint(old), old.exists()
    (True, False)
    """
    return _remove(Path(path))


def clean_stale(directory: StrPath) -> list[Path]:
    """Tidy what interrupted saves left in ``directory`` (call before resuming); returns what was removed.

    Removes ``*.tmp-*`` files and directories of other processes. A checkpoint moved aside for a re-save
    (``<name>.old-*``) is deleted when ``<name>`` exists, and renamed back to ``<name>`` when the kill came
    before the new one was in place. Failures are logged and skipped.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (pathlib.Path(tmp) / "step-000009.tmp-1-ab12").mkdir()
    ...     [p.name for p in clean_stale(tmp)], sorted(p.name for p in pathlib.Path(tmp).iterdir())
    (['step-000009.tmp-1-ab12'], [])
    """
    folder = Path(directory)
    if not folder.is_dir():
        return []
    removed = []
    for child in sorted(folder.iterdir()):
        mark = _OLD_MARK if _OLD_MARK in child.name else _TMP_MARK if _TMP_MARK in child.name else None
        if mark is None or _written_by_this_process(child.name, mark):
            continue
        original = folder / child.name.partition(mark)[0]
        if mark == _OLD_MARK and not original.exists():
            _restore(child, original)
        elif _remove(child):
            removed.append(child)
    return removed


def _restore(aside: Path, original: Path) -> None:
    try:
        os.replace(aside, original)
        _fsync_dir(original.parent)
    except OSError as exc:
        logger.warning("could not rename %s back to %s (%s); it stays usable as it is", aside, original, exc)
        return
    logger.warning("restored checkpoint %s, which an interrupted re-save had moved aside", original)


def _written_by_this_process(name: str, mark: str) -> bool:
    """Scratch of a save still running in this process (e.g. on another thread) is not stale."""
    return name.rpartition(mark)[2].split("-")[0] == str(os.getpid())
