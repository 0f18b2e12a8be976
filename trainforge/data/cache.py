"""Decode once: every image of a data set decoded and resized into one uint8 memory-mapped array, labels
beside it, rebuilt when the file list, sizes, mtimes or resize settings change. One process builds it
while others wait on a file lock; DataLoader workers map the same pages (nothing is copied per worker)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, CorruptImageError

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$TRAINFORGE_CACHE`` or ``~/.cache/trainforge``, then ``datasets/``."""
    base = os.environ.get("TRAINFORGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "trainforge")
    return Path(base) / "datasets"


def cache_fingerprint(dataset: Any) -> str:
    """SHA-256 over what decides the cached pixels: paths, sizes and mtimes of the files, the resize and
    the image format. Any change means a rebuild."""
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_VERSION, list(dataset.image_size), dataset.image_format]).encode())
    for path in dataset.paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


@contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path``: the first process builds, the others wait here, then find it built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class DecodedCache:
    """A built cache folder: ``images.npy`` (uint8 N x H x W x C), ``targets.npy``, ``meta.json`` (the
    fingerprint, the commit marker written last, and the reason for every file that could not be read).
    ``images`` is opened lazily in each process and never pickled (workers map it themselves)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.bad = {int(k): v for k, v in self.meta.get("bad", {}).items()}
        self._images: np.ndarray | None = None

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.folder / "images.npy", mmap_mode="r")
        return self._images

    def image(self, index: int) -> np.ndarray:
        """Pixels of sample ``index`` (a view into the mapped file); ``CorruptImageError`` for a bad file."""
        if index in self.bad:
            raise CorruptImageError(self.bad[index])
        return self.images[index]

    def targets(self) -> np.ndarray:
        return np.load(self.folder / "targets.npy")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return int(self.meta["num_samples"])


class _Decode(torch.utils.data.Dataset):
    """Decodes one file for the cache build (run in DataLoader workers to use every core)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return index, self.dataset.read(self.dataset.paths[index]), None
        except CorruptImageError as error:
            return index, None, str(error)


def _identity(batch: list[Any]) -> list[Any]:
    return batch


def build_cache(dataset: Any, cache_dir: str | os.PathLike[str] | None = None, *, num_workers: int = 0,
                progress: bool | None = None) -> DecodedCache:
    """The cache of ``dataset`` (built now unless an up-to-date one exists). ``dataset.image_size`` must be
    set: one array needs one size. Files that cannot be decoded are recorded with their reason; in
    ``on_bad_file="raise"`` mode the first one stops the build with its path."""
    if dataset.image_size is None:
        raise ConfigError(f"cache=True needs image_size= on {type(dataset).__name__} (every cached image has "
                          f"one size), e.g. image_size=64")
    identity = hashlib.sha256(f"{type(dataset).__name__}\0{dataset.cache_identity()}".encode()).hexdigest()[:20]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / identity
    fingerprint = cache_fingerprint(dataset)
    with _locked(folder.with_suffix(".lock")):
        meta_path = folder / "meta.json"
        if meta_path.exists():
            try:
                if json.loads(meta_path.read_text()).get("fingerprint") == fingerprint:
                    return DecodedCache(folder)
            except ValueError:
                pass  # a damaged marker: rebuild
        _build(dataset, folder, fingerprint, num_workers, progress)
    return DecodedCache(folder)


def _build(dataset: Any, folder: Path, fingerprint: str, num_workers: int, progress: bool | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)  # uncommitted until the new marker is written
    height, width = dataset.image_size
    channels = {"rgb": 3, "gray": 1, "rgba": 4}[dataset.image_format]
    count = len(dataset.paths)
    partial = folder / "images.partial.npy"
    images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(count, height, width, channels))
    bad: dict[int, str] = {}
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    loader = torch.utils.data.DataLoader(_Decode(dataset), batch_size=32, num_workers=num_workers,
                                         collate_fn=_identity)
    with tqdm(total=count, desc=f"caching {count} images", unit="img", disable=not show) as bar:
        for chunk in loader:
            for index, pixels, reason in chunk:
                if pixels is None:
                    if dataset.on_bad_file != "skip":
                        raise CorruptImageError(reason)
                    bad[index] = reason
                else:
                    images[index] = pixels
            bar.update(len(chunk))
    images.flush()
    del images
    os.replace(partial, folder / "images.npy")
    np.save(folder / "targets.npy", np.asarray(dataset.targets))
    meta = {"fingerprint": fingerprint, "num_samples": count, "image_size": [height, width],
            "image_format": dataset.image_format, "bad": {str(k): v for k, v in bad.items()},
            "version": CACHE_VERSION}
    temporary = folder / "meta.json.tmp"
    temporary.write_text(json.dumps(meta))
    os.replace(temporary, folder / "meta.json")


def device_tensors(dataset: Any, device: str | torch.device | None = None) -> torch.utils.data.TensorDataset:
    """The cached images as one float32 ``N x C x H x W`` tensor in [0, 1] on ``device``, with the targets:
    batches are then slices on the device (no workers, no host-to-device copy per batch; augment them
    with ``BatchAugment`` as the Trainer's ``augmentations`` stage). Files that could not be read are
    left out. A ``ConfigError`` says so when the array would not fit in the device's free memory."""
    cache = dataset.decoded_cache
    if cache is None:
        raise ConfigError(f"{type(dataset).__name__}: on_device() needs cache=True (and image_size=)")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    keep = [i for i in range(len(cache)) if i not in cache.bad]
    needed = len(keep) * int(np.prod(cache.images.shape[1:])) * 4
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if needed > 0.8 * free:
            raise ConfigError(f"the cached images need {needed / 2**30:.2f} GiB as float32 on {device}, but only "
                              f"{free / 2**30:.2f} GiB is free; train from the cache with DataLoader workers instead")
    pixels = torch.from_numpy(np.array(cache.images[keep] if cache.bad else cache.images))  # one copy, writable
    images = pixels.to(device).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    targets = torch.as_tensor(dataset.targets)[keep].to(device)
    return torch.utils.data.TensorDataset(images, targets)
