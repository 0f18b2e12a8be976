"""The run folder: who may write it (a lock file naming pid and host), which run it holds (``run.json``'s
run id, stamped into every checkpoint's manifest), claiming a new folder atomically, refusing to start
over another run's files (or moving them aside with ``overwrite``), and the path rules for names that
come from a config (one path component; no symbolic links planted among the run's own entries)."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import socket
import warnings
from pathlib import Path
from typing import Any

from .errors import ConfigError, RunFolderError

RUN_FILE = "run.json"
LOCK_FILE = "trainforge.lock"
#: Entries of a run folder that trainforge writes (and ``overwrite`` moves aside); nothing else is touched.
OWN_ENTRIES = ("checkpoints", "metrics.jsonl", "hparams.json", "tensorboard", "report", "config.yaml",
               "env.json", RUN_FILE)  # fmt: skip
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


# -- names from a config ---------------------------------------------------------------------------
def check_component(key: str, value: str) -> str:
    """``value`` unchanged when it is one plain path component; else ``ConfigError`` naming ``key``.

    >>> check_component("experiment_name", "digits-mlp")
    'digits-mlp'
    >>> check_component("experiment_name", "../elsewhere")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: experiment_name='../elsewhere' is not one plain name: ...
    """
    problem = _component_problem(value)
    if problem is not None:
        raise ConfigError(
            f"{key}={value!r} is not one plain name: {problem}. Files stay inside the run folder, so use a "
            "name without '/', '\\\\', '..' or a drive, e.g. 'my-experiment'"
        )
    return value


def check_name_template(key: str, template: str, **values: Any) -> str:
    """The name ``template.format(**values)`` gives (a checkpoint ``filename`` with ``epoch``, ``step``,
    ``score``; zeros when not given); ``ConfigError`` naming ``key`` when it does not format, is not one
    plain name, or is a name trainforge keeps for itself (``last``, ``latest``, scratch marks).

    >>> check_name_template("filename", "epoch{epoch:03d}-step{step:06d}", epoch=2, step=40)
    'epoch002-step000040'
    """
    values = {"epoch": 0, "step": 0, "score": 0.0, **values}
    if not isinstance(template, str):
        raise ConfigError(f"{key}={template!r} must be a str.format template such as 'epoch{{epoch:03d}}'")
    try:
        name = template.format(**values)
    except (KeyError, IndexError, ValueError, AttributeError) as error:
        raise ConfigError(
            f"{key}={template!r} does not format ({type(error).__name__}: {error}); it may use "
            f"{', '.join('{' + k + '}' for k in values)}, e.g. 'epoch{{epoch:03d}}-step{{step:06d}}'"
        ) from None
    check_component(key, name)
    if name in ("last", "latest") or ".tmp-" in name or ".old-" in name:
        raise ConfigError(f"{key}={template!r} gives {name!r}, a name trainforge keeps for itself; pick another")
    return name


def _component_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "it is empty" if value == "" else f"expected a string, got {type(value).__name__}"
    if "\0" in value:
        return "it holds a NUL character"
    if "/" in value or "\\" in value:
        return "it holds a path separator"
    if value in (".", ".."):
        return "it names the folder itself or its parent"
    if os.path.isabs(value) or (len(value) >= 2 and value[1] == ":"):
        return "it is an absolute path"
    if len(value.encode("utf-8", "surrogateescape")) > 255:
        return "it is longer than 255 bytes"
    return None


def refuse_links(run_dir: Path) -> None:
    """``RunFolderError`` when one of the run's own entries (``OWN_ENTRIES`` and the lock) is a symbolic
    link: trainforge never writes through a link planted in a run folder."""
    for name in (*OWN_ENTRIES, LOCK_FILE):
        entry = run_dir / name
        if entry.is_symlink():
            raise RunFolderError(
                f"{entry} is a symbolic link (to {os.readlink(entry)}); trainforge never writes through links "
                "in a run folder. Remove the link, or choose another output_dir"
            )


# -- claiming a new folder -------------------------------------------------------------------------
def claim_new_folder(parent: Path, name: str) -> Path:
    """Create ``parent/name`` (or ``name-1``, ``name-2``... when taken) and return it; the mkdir itself
    decides, so two runs starting in the same second never share a folder.

    >>> import tempfile
    >>> parent = Path(tempfile.mkdtemp())
    >>> [claim_new_folder(parent, "20260101-120000").name for _ in range(3)]
    ['20260101-120000', '20260101-120000-1', '20260101-120000-2']
    """
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(10_000):
        candidate = parent / (name if attempt == 0 else f"{name}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RunFolderError(f"could not claim a new run folder {parent / name}: 10000 names are taken")


def timestamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


# -- the lock ----------------------------------------------------------------------------------------
class RunLock:
    """``<run>/trainforge.lock``: one writer per run folder. The file holds ``{"pid", "host", "token"}``
    and is created atomically (a hard link of a complete file), so a reader never sees half a lock.
    A lock whose pid is dead on this host is stale: taken over with a warning. Any other holder, even
    another Trainer in this process, makes ``acquire`` raise ``RunFolderError`` naming pid and host.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> first, second = RunLock(folder), RunLock(folder)
    >>> first.acquire()
    >>> second.acquire()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.RunFolderError: run folder ... is in use by pid ... on ...
    >>> first.release(); second.acquire(); second.release()
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.token = secrets.token_hex(8)
        self.held = False

    def _record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
                "since": datetime.datetime.now().isoformat(timespec="seconds")}  # fmt: skip

    def acquire(self) -> None:
        """Take the lock (no-op when this object holds it); ``RunFolderError`` when another run holds it."""
        if self.held:
            return
        for _ in range(5):
            if self._create():
                self.held = True
                return
            holder = self._read(self.path)
            if holder is None or not _is_stale(holder):
                raise self._busy(holder)
            self._take_over(holder)
        raise self._busy(self._read(self.path))

    def release(self) -> None:
        """Remove the lock if this object still holds it (a lock taken over by someone else is left)."""
        if not self.held:
            return
        self.held = False
        holder = self._read(self.path)
        if holder is not None and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _create(self) -> bool:
        data = json.dumps(self._record()).encode()
        scratch = self.run_dir / f".{LOCK_FILE}.{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        try:
            os.link(scratch, self.path)  # fails when the lock exists: the test and the write are one step
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create (a reader may see it empty)
            return self._create_exclusive(data)
        finally:
            scratch.unlink()

    def _create_exclusive(self, data: bytes) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        return True

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return None
        try:
            holder = json.loads(os.read(fd, 4096) or b"null")
        except ValueError:
            holder = None
        finally:
            os.close(fd)
        return holder if isinstance(holder, dict) else None

    def _take_over(self, holder: dict[str, Any]) -> None:
        """Move the stale lock aside under a unique name; when what was moved is not the stale lock
        (another process took it over first), put it back."""
        aside = self.run_dir / f".{LOCK_FILE}.stale-{secrets.token_hex(4)}"
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        moved = self._read(aside)
        if moved is not None and moved.get("token") != holder.get("token"):
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
            aside.unlink()
            return
        aside.unlink()
        warnings.warn(
            f"run folder {self.run_dir}: took over the lock of pid {holder.get('pid')} on {holder.get('host')}, "
            "which is no longer running (a run that was killed)", UserWarning, stacklevel=4,
        )

    def _busy(self, holder: dict[str, Any] | None) -> RunFolderError:
        if holder is None:
            return RunFolderError(
                f"run folder {self.run_dir} is locked ({self.path} exists but cannot be read). If no other "
                f"run uses this folder, delete {self.path}"
            )
        return RunFolderError(
            f"run folder {self.run_dir} is in use by pid {holder.get('pid')} on {holder.get('host')} "
            f"(since {holder.get('since', '?')}); two runs never write one folder. Wait for it to finish, stop "
            f"it, or choose another output_dir. If that process is gone, delete {self.path}"
        )


def _is_stale(holder: dict[str, Any]) -> bool:
    """A lock of a process that no longer runs on this host (a lock of another host is never stale)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


# -- the run id and what a folder holds --------------------------------------------------------------
def read_run_id(run_dir: Path) -> str | None:
    """The run id recorded in ``run_dir/run.json``, or None when there is none (or it is unreadable)."""
    holder = RunLock._read(Path(run_dir) / RUN_FILE)
    run_id = holder.get("run_id") if holder is not None else None
    return run_id if isinstance(run_id, str) and run_id else None


def write_run_id(run_dir: Path, run_id: str) -> None:
    from .loggers.jsonl import write_json_atomic  # atomic: replaces, never writes through, a planted link

    write_json_atomic(Path(run_dir) / RUN_FILE, {"run_id": run_id, "created": timestamp()}, durable=False)


def new_run_id() -> str:
    return f"{timestamp()}-{secrets.token_hex(4)}"


def run_contents(run_dir: Path) -> list[str]:
    """What in ``run_dir`` shows that a run trained there: a non-empty ``metrics.jsonl``, checkpoints
    (folders with a manifest, or the ``latest`` pointer), TensorBoard events, a report."""
    found = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        found.append("metrics.jsonl")
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir():
        names = [p.name for p in checkpoints.iterdir() if p.name == "latest" or (p / "MANIFEST.json").exists()]
        found += [f"checkpoints/{name}" for name in sorted(names)[:3]]
    for name in ("tensorboard", "report"):
        folder = run_dir / name
        if folder.is_dir() and any(folder.iterdir()):
            found.append(f"{name}/")
    return found


def move_aside(run_dir: Path) -> Path | None:
    """``overwrite``: move trainforge's own entries (``OWN_ENTRIES``) of ``run_dir`` into
    ``run_dir/overwritten-<time>/``, deleting nothing; files the user put there stay where they are.
    Returns the folder they went to (None when there was nothing to move)."""
    present = [name for name in OWN_ENTRIES if (run_dir / name).exists() or (run_dir / name).is_symlink()]
    if not present:
        return None
    aside = claim_new_folder(run_dir, f"overwritten-{timestamp()}")
    for name in present:
        os.replace(run_dir / name, aside / name)
    return aside


def prepare(run_dir: Path, *, resuming: bool, overwrite: bool) -> str:
    """Check and claim ``run_dir`` for a run (the caller holds its lock); returns the run id.

    A fresh run into a folder that holds another run's metrics or checkpoints is refused
    (``RunFolderError`` naming ``resume_from`` and ``overwrite``); with ``overwrite=True`` that run's
    files are moved aside first (``move_aside``). A resumed run keeps the folder's run id.
    """
    refuse_links(run_dir)
    if not resuming:
        found = run_contents(run_dir)
        if found and not overwrite:
            raise RunFolderError(
                f"run folder {run_dir} already holds a run ({', '.join(found)}). To continue it, call "
                f"fit(resume_from={str(run_dir)!r}) (or resume_from='auto'); to start over, set "
                "TrainingConfig(overwrite=True), which moves that run's files into an overwritten-<time>/ "
                "folder inside it; or choose another output_dir"
            )
        if found and overwrite:
            aside = move_aside(run_dir)
            if aside is not None:
                warnings.warn(f"overwrite=True: the previous run's files were moved to {aside}", stacklevel=4)
    run_id = read_run_id(run_dir) if resuming else None
    if run_id is None:
        run_id = new_run_id()
        write_run_id(run_dir, run_id)
    return run_id
