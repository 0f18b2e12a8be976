"""Image data sets for classification: ``ImageFolder`` (one sub-folder per class) and
``ImageClassificationDataset`` (TorchOk's ``data_folder`` + ``annotation_path`` CSV), on the shared
``VisionDataset`` base that reads, augments, converts and applies the bad-file policy."""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, CorruptImageError, DatasetError
from .reading import IMAGE_EXTENSIONS, check_format, list_images, read_image, size_pair
from .transforms import build_pipeline, image_tensor, seed_steps, seedable_steps

BAD_FILE_POLICIES = ("raise", "skip")
_MAX_LISTED = 50  # problems listed in one error; the rest are counted


class Skipped:
    """What a data set returns, in ``on_bad_file="skip"`` mode, for a sample it could not read; the
    collate leaves it out of the batch and the loader counts it."""

    __slots__ = ("index", "path", "reason")

    def __init__(self, index: int, path: str, reason: str) -> None:
        self.index, self.path, self.reason = index, path, reason

    def __repr__(self) -> str:
        return f"Skipped({self.index}, {self.path!r}, {self.reason!r})"


def raise_problems(problems: list[str], what: str, fix: str) -> None:
    """One ``DatasetError`` listing every problem (the first ``_MAX_LISTED``, then a count)."""
    if not problems:
        return
    shown = problems[:_MAX_LISTED]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise DatasetError(f"{what}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more + f"\n{fix}")


class VisionDataset(Dataset):
    """Base of trainforge's image data sets: subclasses fill ``paths`` and implement ``load(index)``
    (raw numpy sample: ``image`` plus ``mask``/``bboxes``/``labels``/``target``); this class runs
    ``augment`` then ``transform`` and returns tensors.

    ``on_bad_file="raise"`` (default) lets a ``CorruptImageError`` naming the path stop the run;
    ``"skip"`` leaves the sample out of its batch, counts it (``ResumableLoader.skipped``), and stops
    the run once more than ``max_skip_fraction`` of an epoch's samples were skipped.
    """

    boxes = False  # detection data sets: the pipeline moves boxes with the image
    sampler: Any = None  # an epoch sampler (samplers.py) the Trainer's training loader draws from

    def __init__(
        self,
        transform: Any = None,
        augment: Any = None,
        *,
        image_format: str = "rgb",
        image_size: int | Sequence[int] | None = None,
        on_bad_file: str = "raise",
        max_skip_fraction: float = 0.1,
    ) -> None:
        if on_bad_file not in BAD_FILE_POLICIES:
            raise ConfigError(f"on_bad_file must be one of {', '.join(BAD_FILE_POLICIES)}, got {on_bad_file!r}")
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise ConfigError(f"max_skip_fraction must be in [0, 1], got {max_skip_fraction!r}")
        self.transform = transform
        self.augment = augment
        self.image_format = check_format(image_format)
        self.image_size = size_pair(image_size)
        self.on_bad_file = on_bad_file
        self.max_skip_fraction = float(max_skip_fraction)
        self.paths: list[Path] = []
        self.skipped_at_start: list[tuple[str, str]] = []  # (path, reason) dropped before training (skip mode)
        self._pipeline: Any = None
        self._seedable: list[Any] = []
        self._pipeline_built = False

    # -- what subclasses provide ---------------------------------------------------------------------
    def load(self, index: int) -> dict[str, Any]:
        """The raw sample ``index``: ``{"image": uint8 HxWxC, ...}`` (numpy); raises ``CorruptImageError``."""
        raise NotImplementedError

    def finish(self, sample: dict[str, Any], index: int) -> dict[str, Any]:
        """Tensors from the transformed raw sample; the base handles image-only samples."""
        out = {"input": image_tensor(sample["image"])}
        if "target" in sample:
            out["target"] = sample["target"]
        return out

    # -- the shared path -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.paths)

    def read(self, path: str | os.PathLike[str]) -> np.ndarray:
        return read_image(path, self.image_format, self.image_size)

    @property
    def pipeline(self) -> Any:
        if not self._pipeline_built:  # built on first use: albumentations is imported only when needed
            self._pipeline = build_pipeline(self.augment, self.transform, boxes=self.boxes)
            self._seedable = seedable_steps(self._pipeline) if self._pipeline is not None else []
            self._pipeline_built = True
        return self._pipeline

    def __getitem__(self, index: int) -> dict[str, Any] | Skipped:
        try:
            sample = self.load(index)
        except CorruptImageError as error:
            if self.on_bad_file == "skip":
                path = str(self.paths[index])
                return Skipped(int(index), path, str(error).removeprefix(path + ": "))
            raise
        return self.finish(self.apply_pipeline(sample), index)

    def apply_pipeline(self, sample: dict[str, Any]) -> dict[str, Any]:
        """``augment`` then ``transform`` on a raw sample (everything but its ``target``)."""
        pipeline = self.pipeline
        if pipeline is not None:
            if self._seedable:  # from the global RNG, which the loader seeds per (seed, epoch, index)
                seed_steps(self._seedable, random.getrandbits(32))
            sample = dict(sample, **pipeline(**{k: v for k, v in sample.items() if k != "target"}))
        return sample

    def fingerprint(self) -> str:
        """A cheap identity for resume checks: the files (last two path parts, so a moved folder still
        matches) and the labels, not the pixels."""
        import hashlib

        digest = hashlib.sha256(type(self).__name__.encode())
        for path in self.paths:
            digest.update("/".join(Path(path).parts[-2:]).encode() + b"\n")
        targets = getattr(self, "targets", None)
        if isinstance(targets, torch.Tensor):
            digest.update(targets.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pipeline"], state["_pipeline_built"], state["_seedable"] = None, False, []  # rebuilt per worker
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples)"


def _labels_tensor(values: list[Any], multilabel: bool, num_classes: int) -> torch.Tensor:
    if not multilabel:
        return torch.tensor(values, dtype=torch.int64)
    hot = torch.zeros(len(values), num_classes, dtype=torch.float32)
    for row, ids in enumerate(values):
        hot[row, list(ids)] = 1.0
    return hot


class ClassificationDataset(VisionDataset):
    """Images with one label (int64 ``target``) or several (float multi-hot ``target``); ``classes`` and
    ``class_to_idx`` as in torchvision. Subclasses fill ``paths``, ``targets``, ``classes``."""

    multilabel = False
    decoded_cache: Any = None  # a DecodedCache once cache=True: pixels come from the mapped array

    def cache_identity(self) -> str:
        """What names this data set's cache folder (its root or annotation file)."""
        return str(getattr(self, "annotation_path", None) or getattr(self, "root", ""))

    def enable_cache(self, cache_dir: str | os.PathLike[str] | None = None, num_workers: int = 0) -> Any:
        """Decode and resize every image once into a memory-mapped array (``cache=True`` does this at
        construction); rebuilt when files or resize settings change. Returns the ``DecodedCache``."""
        from .cache import build_cache

        self.decoded_cache = build_cache(self, cache_dir, num_workers=num_workers)
        return self.decoded_cache

    def on_device(self, device: str | torch.device | None = None) -> Dataset:
        """The cached data as one tensor data set on ``device`` (the small-data mode; see ``cache.device_tensors``)."""
        from .cache import device_tensors

        return device_tensors(self, device)

    def _set_targets(self, values: list[Any], classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.targets = _labels_tensor(values, self.multilabel, len(self.classes))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, index: int) -> dict[str, Any]:
        if self.decoded_cache is not None:
            return {"image": self.decoded_cache.image(index), "target": self.targets[index]}
        return {"image": self.read(self.paths[index]), "target": self.targets[index]}


class ImageFolder(ClassificationDataset):
    """An image folder with one sub-folder per class (torchvision's layout): ``root/cat/1.jpg``...

    ``classes`` are the sub-folder names, sorted (or the ``classes`` given, in that order, as a subset).
    Empty or missing class folders are listed together in one ``DatasetError``.

    >>> import tempfile, PIL.Image, os
    >>> root = tempfile.mkdtemp()
    >>> for name in ("cat", "dog"):
    ...     os.makedirs(f"{root}/{name}")
    ...     PIL.Image.new("RGB", (8, 6)).save(f"{root}/{name}/a.png")
    >>> ds = ImageFolder(root)
    >>> ds.classes, ds.class_to_idx["dog"], ds[1]["input"].shape, int(ds[1]["target"])
    (['cat', 'dog'], 1, torch.Size([3, 6, 8]), 1)
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Any = None,
        augment: Any = None,
        *,
        classes: Sequence[str] | None = None,
        extensions: Sequence[str] | None = None,
        image_format: str = "rgb",
        image_size: int | Sequence[int] | None = None,
        on_bad_file: str = "raise",
        max_skip_fraction: float = 0.1,
        cache: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(transform, augment, image_format=image_format, image_size=image_size,
                         on_bad_file=on_bad_file, max_skip_fraction=max_skip_fraction)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"ImageFolder root {str(self.root)!r} is not a folder; pass the folder that holds "
                               f"one sub-folder per class")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        names = list(classes) if classes is not None else found
        if not names:
            raise DatasetError(f"ImageFolder {str(self.root)!r} has no class sub-folders; "
                               f"expected root/<class>/<image>")
        allowed = IMAGE_EXTENSIONS
        if extensions:
            allowed = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        problems, labels = [], []
        for label, name in enumerate(names):
            folder = self.root / name
            if not folder.is_dir():
                problems.append(f"class folder {str(folder)!r} does not exist (classes= lists {name!r})")
                continue
            files = list_images(folder, allowed)
            if not files:
                problems.append(f"class folder {str(folder)!r} is empty (no files ending in "
                                f"{', '.join(sorted(allowed))})")
            self.paths.extend(files)
            labels.extend([label] * len(files))
        raise_problems(problems, f"ImageFolder {str(self.root)!r}",
                       "Fix: add images to every class folder, remove the empty ones, or pass classes=[...]")
        self._set_targets(labels, names)
        if cache:
            self.enable_cache(cache_dir)



def flag(value: Any, name: str, owner: str) -> bool:
    """``value`` if it is a bool; anything else (``"false"``, ``1``, ``None``) is an error naming the
    parameter, instead of Python's truthiness quietly picking a split.

    >>> flag(True, "train", "CIFAR10")
    True
    >>> flag("no", "train", "CIFAR10")
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: CIFAR10 train='no': expected true or false
    """
    if not isinstance(value, bool):
        raise ConfigError(f"{owner} {name}={value!r}: expected true or false")
    return value


def annotation_file(data_folder: Path, annotation_path: str | os.PathLike[str]) -> Path:
    """TorchOk's rule for an annotation file: as given when it is absolute or exists from here, else
    relative to ``data_folder``.

    >>> annotation_file(Path("/data"), "labels.csv")
    PosixPath('/data/labels.csv')
    """
    path = Path(annotation_path)
    return path if path.is_absolute() or path.is_file() else data_folder / path

def read_csv(path: str | os.PathLike[str], delimiter: str = ",") -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV file (``DatasetError`` naming the file when it is missing or empty);
    ``delimiter=" "`` reads space-separated lists such as SOP's ``Ebay_train.txt``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"annotation file {str(path)!r} does not exist; pass annotation_path= a CSV file")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter, skipinitialspace=delimiter == " ")
        rows = list(reader)
        header = list(reader.fieldnames or [])
    if not header:
        raise DatasetError(f"annotation file {str(path)!r} is empty; expected a header line such as image_path,label")
    return header, rows


def require_columns(header: list[str], columns: Sequence[str], path: Path) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(f"annotation file {str(path)!r} has no column(s) {', '.join(map(repr, missing))}; its "
                           f"columns are {', '.join(header)} — pass input_column=/target_column= to match")


def resolve_file(folder: Path, name: str) -> tuple[Path | None, str | None]:
    """``folder/name``; a name without extension resolves to the one file ``name.*`` (Towhee's Kaggle
    layout). Returns ``(path, None)`` or ``(None, why)``."""
    path = folder / name
    if path.is_file():
        return path, None
    if not path.suffix or path.suffix.lower() not in IMAGE_EXTENSIONS:
        matches = sorted(p for p in path.parent.glob(path.name + ".*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if len(matches) == 1:
            return matches[0], None
        if len(matches) > 1:
            listed = ", ".join(p.name for p in matches)
            return None, f"{name!r} matches {len(matches)} files ({listed}); add the extension"
    return None, f"file {str(path)!r} does not exist"


def _parse_label(cell: str, multilabel: bool) -> list[str]:
    cell = cell.strip()
    if not multilabel:
        return [cell]
    return [part.strip() for part in cell.replace(";", ",").split(",") if part.strip()] if cell else []


class ImageClassificationDataset(ClassificationDataset):
    """Images listed in a CSV (TorchOk's layout): ``data_folder`` + ``annotation_path``, an
    ``input_column`` of relative paths and a ``target_column`` of labels.

    - Labels are class ids (``0``) or names (``cat``, mapped to ids by sorted name unless ``classes``
      is given); ``multilabel=True`` reads ``"0,1"`` as a multi-hot target.
    - ``target_column`` may be a list of columns holding 0/1 each: a multi-label target, one class per
      column (the column names are the classes).
    - A file name without extension resolves when exactly one ``name.*`` exists (Towhee's Kaggle CSV).
    - Before anything trains, one pass over the CSV lists every missing file, empty or out-of-range
      label and duplicate row in one ``DatasetError`` (``on_bad_file="skip"`` drops missing files instead
      and records them in ``skipped_at_start``).
    """

    def __init__(
        self,
        data_folder: str | os.PathLike[str],
        annotation_path: str | os.PathLike[str],
        transform: Any = None,
        augment: Any = None,
        *,
        input_column: str = "image_path",
        target_column: str | Sequence[str] = "label",
        multilabel: bool = False,
        num_classes: int | None = None,
        classes: Sequence[str] | None = None,
        image_format: str = "rgb",
        image_size: int | Sequence[int] | None = None,
        on_bad_file: str = "raise",
        max_skip_fraction: float = 0.1,
        cache: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(transform, augment, image_format=image_format, image_size=image_size,
                         on_bad_file=on_bad_file, max_skip_fraction=max_skip_fraction)
        self.data_folder = Path(data_folder)
        self.annotation_path = annotation_file(self.data_folder, annotation_path)
        header, rows = read_csv(self.annotation_path)
        columns = [target_column] if isinstance(target_column, str) else list(target_column)
        require_columns(header, [input_column, *columns], self.annotation_path)
        self.multilabel = bool(multilabel) or len(columns) > 1
        where = str(self.annotation_path)
        problems: list[str] = []
        kept: list[tuple[int, Path, list[str]]] = []
        seen: dict[str, int] = {}
        for line, row in enumerate(rows, start=2):
            name = (row.get(input_column) or "").strip()
            if not name:
                problems.append(f"line {line}: empty {input_column}")
                continue
            if name in seen:
                problems.append(f"line {line}: duplicate entry {name!r} (first on line {seen[name]})")
                continue
            seen[name] = line
            if len(columns) > 1:
                raw = [c for c in columns if (row.get(c) or "").strip() not in ("", "0", "0.0")]
                bad = [c for c in columns if (row.get(c) or "").strip() not in ("", "0", "1", "0.0", "1.0")]
                if bad:
                    problems.append(f"line {line}: {name!r}: columns {', '.join(bad)} must hold 0 or 1")
                    continue
            else:
                cell = row.get(columns[0])
                if cell is None or (not cell.strip() and not self.multilabel):
                    problems.append(f"line {line}: {name!r} has no {columns[0]}")
                    continue
                raw = _parse_label(cell, self.multilabel)
            path, why = resolve_file(self.data_folder, name)
            if path is None:
                if on_bad_file == "skip":
                    self.skipped_at_start.append((str(self.data_folder / name), why))
                else:
                    problems.append(f"line {line}: {why}")
                continue
            kept.append((line, path, raw, row))
        if classes is not None:
            names = list(classes)
        else:
            names = columns if len(columns) > 1 else self._class_names(kept, num_classes)
        if num_classes is not None and num_classes != len(names):
            problems.append(f"num_classes={num_classes} but the annotation has {len(names)} classes: "
                            f"{', '.join(names[:20])}")
        index = {n: i for i, n in enumerate(names)}
        values = []
        self._header, self._rows = header, []
        for line, path, raw, row in kept:
            ids = [index.get(label) for label in raw]
            unknown = [label for label, i in zip(raw, ids) if i is None]
            if unknown:
                hint = f"0..{len(names) - 1}" if all(n.isdigit() for n in names) else ", ".join(names)
                problems.append(f"line {line}: {path.name}: label {', '.join(map(repr, unknown))} is outside the "
                                f"classes ({hint})")
                continue
            self.paths.append(path)
            self._rows.append(row)
            values.append(ids if self.multilabel else ids[0])
        raise_problems(problems, f"annotation {where}",
                       "Fix the rows above (or pass on_bad_file='skip' to leave missing files out)")
        if not self.paths:
            raise DatasetError(f"annotation {where} lists no usable images ({len(rows)} rows)")
        self._set_targets(values, names)
        if cache:
            self.enable_cache(cache_dir)

    def column(self, name: str) -> list[str]:
        """The cells of annotation column ``name`` for each sample (e.g. weights for ``WeightedSampler``)."""
        if name not in self._header:
            raise ConfigError(f"{self.annotation_path} has no column {name!r}; columns: {', '.join(self._header)}")
        return [(row.get(name) or "").strip() for row in self._rows]

    @staticmethod
    def _class_names(kept: list[tuple[int, Path, list[str], Any]], num_classes: int | None) -> list[str]:
        labels = {label for _, _, raw, _ in kept for label in raw}
        if labels and all(label.lstrip("-").isdigit() for label in labels):
            top = num_classes if num_classes is not None else max(int(label) for label in labels) + 1
            return [str(i) for i in range(max(top, 0))]
        return sorted(labels)
