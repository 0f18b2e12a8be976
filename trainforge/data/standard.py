"""CIFAR-10/100 and MNIST from their official local files (nothing downloads), and scikit-learn's digits,
as in-memory uint8 arrays behind the same sample dicts and transforms. CIFAR's python files are read by an
unpickler that admits plain containers and numpy arrays only; its binary format needs no pickle at all."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError, DatasetError
from .datasets import ClassificationDataset, flag

# what a numpy array needs to unpickle (numpy 1 and 2 spell the module differently)
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles spell bytes: a pure function, as torch's weights_only allows
}


class _DataUnpickler(pickle.Unpickler):
    """Plain containers and numpy arrays; any other global is refused before anything runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 renamed numpy.core
                return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which a data file must not (only containers "
                                     f"and numpy arrays are allowed); nothing was executed")


def safe_unpickle(path: str | os.PathLike[str]) -> Any:
    """Load a data pickle (CIFAR's python format) with ``_DataUnpickler``; errors name the file.

    >>> import tempfile, pickle, numpy as np
    >>> path = tempfile.mkdtemp() + "/batch"
    >>> pickle.dump({b"labels": [1, 2], b"data": np.zeros((2, 3), np.uint8)}, open(path, "wb"))
    >>> sorted(safe_unpickle(path))
    [b'data', b'labels']
    """
    try:
        with open(path, "rb") as handle:
            return _DataUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DatasetError(f"{path}: not a readable data pickle: {error}") from None


class ArrayClassificationDataset(ClassificationDataset):
    """Images held in memory as uint8 ``N x H x W x C`` with int labels (CIFAR, MNIST, digits).
    ``test_mode`` (TorchOk's name, for prediction): items are ``{"input"}`` without their label."""

    test_mode = False

    def _set_arrays(self, images: np.ndarray, labels: np.ndarray, classes: Sequence[str], source: str) -> None:
        if len(images) != len(labels):
            raise DatasetError(f"{source}: {len(images)} images but {len(labels)} labels")
        self.images = images
        self.source = source
        self.paths = [Path(f"{source}#{i}") for i in range(len(images))]  # names for errors and fingerprints
        self._set_targets(labels.astype(np.int64).tolist(), classes)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> dict[str, Any]:
        image = self.images[index]
        if self.image_format == "rgb" and image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        elif self.image_format == "gray" and image.shape[2] == 3:
            image = np.asarray(image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32),
                               dtype=np.uint8)[..., None]
        return {"image": image} if self.test_mode else {"image": image, "target": self.targets[index]}


def _find(root: Path, names: Sequence[str], what: str) -> Path:
    for name in names:
        if (root / name).exists():
            return root / name
    raise DatasetError(f"no {what} under {str(root)!r}: looked for {', '.join(names)}. Download the official files "
                       f"yourself (trainforge downloads nothing) and pass the folder that holds them")


class CIFAR10(ArrayClassificationDataset):
    """CIFAR-10 from ``root`` holding ``cifar-10-batches-py`` (python format) or ``cifar-10-batches-bin``
    (binary format), or that folder itself. ``train=False``: the test batch."""

    variant = "cifar-10"
    label_key = b"labels"
    names_key, meta_file, names_file = b"label_names", "batches.meta", "batches.meta.txt"

    def __init__(self, root: str | os.PathLike[str], train: bool = True, transform: Any = None,
                 augment: Any = None, *, image_format: str = "rgb", test_mode: bool = False) -> None:
        super().__init__(transform, augment, image_format=image_format)
        self.train = flag(train, "train", type(self).__name__)
        self.test_mode = flag(test_mode, "test_mode", type(self).__name__)
        root = Path(root)
        folder = _find(root, [f"{self.variant}-batches-py", f"{self.variant}-python", f"{self.variant}-batches-bin",
                              f"{self.variant}-binary", "."], f"{self.variant} files")
        if (folder / self.meta_file).exists() or (folder / self._python_files()[0]).exists():
            images, labels, classes = self._read_python(folder)
        else:
            images, labels, classes = self._read_binary(folder)
        self._set_arrays(images, labels, classes, str(folder))

    def _python_files(self) -> list[str]:
        return [f"data_batch_{i}" for i in range(1, 6)] if self.train else ["test_batch"]

    def _binary_files(self) -> list[str]:
        return [f"data_batch_{i}.bin" for i in range(1, 6)] if self.train else ["test_batch.bin"]

    label_bytes = 1

    def _read_python(self, folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
        data, labels = [], []
        for name in self._python_files():
            batch = safe_unpickle(folder / name)
            try:
                data.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.extend(batch[self.label_key])
            except (KeyError, ValueError, TypeError) as error:
                raise DatasetError(f"{folder / name}: not a {self.variant} batch ({error!r})") from None
        meta = safe_unpickle(folder / self.meta_file) if (folder / self.meta_file).exists() else {}
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(self.names_key, [])]
        images = np.concatenate(data).transpose(0, 2, 3, 1)
        return images, np.asarray(labels), names or [str(i) for i in range(int(max(labels)) + 1)]

    def _read_binary(self, folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
        record = self.label_bytes + 3072
        chunks = []
        for name in self._binary_files():
            path = folder / name
            if not path.exists():
                raise DatasetError(f"{self.variant}: {str(path)!r} is missing (neither python nor binary files found)")
            raw = np.fromfile(path, dtype=np.uint8)
            if raw.size % record:
                raise DatasetError(f"{str(path)!r}: {raw.size} bytes is not a whole number of {record}-byte records")
            chunks.append(raw.reshape(-1, record))
        rows = np.concatenate(chunks)
        labels = rows[:, self.label_bytes - 1].astype(np.int64)  # CIFAR-100: coarse then fine; the fine label
        images = rows[:, self.label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        names_path = folder / self.names_file
        names = []
        if names_path.exists():
            names = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
        return np.ascontiguousarray(images), labels, names or [str(i) for i in range(int(labels.max()) + 1)]


class CIFAR100(CIFAR10):
    """CIFAR-100 (fine labels) from ``cifar-100-python`` or ``cifar-100-binary`` under ``root``."""

    variant = "cifar-100"
    label_key = b"fine_labels"
    names_key, meta_file, names_file = b"fine_label_names", "meta", "fine_label_names.txt"
    label_bytes = 2

    def _python_files(self) -> list[str]:
        return ["train" if self.train else "test"]

    def _binary_files(self) -> list[str]:
        return ["train.bin" if self.train else "test.bin"]


def _read_idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    head = np.frombuffer(data[:4], dtype=">u4")
    if len(data) < 8 or int(head[0]) != magic:
        raise DatasetError(f"{str(path)!r} is not an MNIST idx file (magic {data[:4].hex()}, expected {magic:08x})")
    dims = magic & 0xFF
    shape = tuple(int(d) for d in np.frombuffer(data[4 : 4 + 4 * dims], dtype=">u4"))
    body = np.frombuffer(io.BytesIO(data[4 + 4 * dims :]).read(), dtype=np.uint8)
    if body.size != int(np.prod(shape)):
        raise DatasetError(f"{str(path)!r} is truncated: header says {shape}, found {body.size} bytes")
    return body.reshape(shape)


class MNIST(ArrayClassificationDataset):
    """MNIST from its idx files (``train-images-idx3-ubyte`` etc., optionally ``.gz``) in ``root``,
    ``root/raw`` or ``root/MNIST/raw`` (torchvision's layout). Images are 28x28 gray."""

    files: ClassVar[dict[bool, tuple[str, str]]] = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

    def __init__(self, root: str | os.PathLike[str], train: bool = True, transform: Any = None,
                 augment: Any = None, *, image_format: str = "gray", test_mode: bool = False) -> None:
        super().__init__(transform, augment, image_format=image_format)
        self.train = flag(train, "train", type(self).__name__)
        self.test_mode = flag(test_mode, "test_mode", type(self).__name__)
        base = Path(root)
        folder = next((f for f in (base, base / "raw", base / "MNIST" / "raw") if f.is_dir() and any(
            (f / (self.files[train][0] + ext)).exists() for ext in ("", ".gz"))), base)
        images_name, labels_name = self.files[train]
        images = _read_idx(_find(folder, [images_name, images_name + ".gz"], "MNIST images"), 0x00000803)
        labels = _read_idx(_find(folder, [labels_name, labels_name + ".gz"], "MNIST labels"), 0x00000801)
        self._set_arrays(images[..., None], labels, [str(i) for i in range(10)], str(folder))


class Digits(ArrayClassificationDataset):
    """scikit-learn's bundled 8x8 digits as a data set: ``split`` ``"train"`` or ``"valid"`` of a stratified
    split fixed by ``seed`` (the same split as ``load_digits_split``), gray uint8 images."""

    def __init__(self, split: str = "train", transform: Any = None, augment: Any = None, *,
                 valid_fraction: float = 0.2, seed: int = 0, image_format: str = "gray") -> None:
        if split not in ("train", "valid"):
            raise ConfigError(f"Digits split must be 'train' or 'valid', got {split!r}")
        super().__init__(transform, augment, image_format=image_format)
        from .digits import DIGITS_CLASSES, load_digits_split

        train, valid = load_digits_split(valid_fraction=valid_fraction, seed=seed)
        images, labels = (train if split == "train" else valid).tensors
        pixels = (images.numpy()[:, 0, :, :, None] * 255.0).round().astype(np.uint8)
        self._set_arrays(pixels, labels.numpy(), DIGITS_CLASSES, f"digits-{split}")
