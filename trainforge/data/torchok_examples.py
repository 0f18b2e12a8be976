"""The data sets of TorchOk's example configs, read from their unpacked archives (nothing downloads):
``SOP`` (Stanford Online Products lists), ``TRIPLET_SOP`` (anchor/positive/negative CSVs) and
``SweetPepper`` (image/mask CSVs), with TorchOk's names, folders and split files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import DatasetError
from .datasets import ClassificationDataset, VisionDataset, flag, raise_problems, read_csv, resolve_file
from .segmentation import ImageSegmentationDataset
from .transforms import image_tensor

SOP_LAYOUT = """data_folder/Stanford_Online_Products/
    Ebay_train.txt   space-separated, header 'image_id class_id super_class_id path'
    Ebay_test.txt    the same for the test classes
    bicycle_final/111085122871_0.JPG ...   the images those lists name (paths relative to the folder)"""
TRIPLET_SOP_LAYOUT = """data_folder/Stanford_Online_Products/
    sop_triplet_train.csv   header 'anchor,positive,negative' (image paths relative to the folder)
    sop_triplet_test.csv    the same for the test split
    bicycle_final/111085122871_0.JPG ...   the images those files name"""
SWEET_PEPPER_LAYOUT = """data_folder/sweet_pepper/
    train.csv, valid.csv   header 'image_path,mask' (paths relative to sweet_pepper/)
    the images and masks they name; masks are gray or palette PNGs of class ids 0 background, 1 fruit,
    2 peduncle"""
_ARCHIVES = {"Stanford_Online_Products": "Stanford_Online_Products.tar.gz from "
                                         "https://cvgl.stanford.edu/projects/lifted_struct/ (or TorchOk's hub copy)",
             "sweet_pepper": "sweet_pepper.tar.gz (TorchOk's hub copy of "
                             "https://www.kaggle.com/datasets/lemontyc/sweet-pepper)"}


def example_folder(data_folder: str | os.PathLike[str], base_folder: str, dataset: str, layout: str,
                   split_file: str) -> Path:
    """``data_folder/base_folder`` once it holds ``split_file``; otherwise a ``DatasetError`` naming the
    folder, the layout expected and the archive to unpack (TorchOk's ``download: true`` fetched it).

    >>> import tempfile
    >>> example_folder(tempfile.mkdtemp(), "sweet_pepper", "SweetPepper", SWEET_PEPPER_LAYOUT, "train.csv")
    Traceback (most recent call last):
    ...
    trainforge.errors.DatasetError: SweetPepper: ...
    """
    root = Path(data_folder)
    folder = root / base_folder
    if (folder / split_file).is_file():
        return folder
    if not root.is_dir():
        found = f"data_folder {str(root)!r} does not exist"
    elif not folder.is_dir():
        found = f"data_folder {str(root)!r} has no {base_folder}/ folder"
    else:
        found = f"{str(folder / split_file)!r} does not exist"
    raise DatasetError(f"{dataset}: {found}. trainforge downloads nothing (download: true is ignored): unpack "
                       f"{_ARCHIVES[base_folder]} into data_folder, or point data_folder at the folder that "
                       f"holds {base_folder}/. Expected layout:\n{layout}")


def listed_image(dataset: VisionDataset, folder: Path, name: str | None, where: str,
                 problems: list[str]) -> Path | None:
    """The image ``name`` under ``folder`` that a list's row names; a missing one is a problem naming
    ``where`` (the file and line), or under ``on_bad_file="skip"`` recorded in ``skipped_at_start``."""
    name = (name or "").strip()
    path, why = resolve_file(folder, name) if name else (None, "empty image path")
    if why is None:
        return path
    if dataset.on_bad_file == "skip" and name:
        dataset.skipped_at_start.append((str(folder / name), why))
    else:
        problems.append(f"{where}: {why}")
    return None


def _require(header: list[str], columns: Sequence[str], path: Path, layout: str) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(f"{str(path)!r} has no column(s) {', '.join(map(repr, missing))} (its header is "
                           f"{' '.join(header)!r}); expected the official files:\n{layout}")


class SOP(ClassificationDataset):
    """Stanford Online Products (TorchOk's ``SOP``): ``data_folder/Stanford_Online_Products`` with
    ``Ebay_train.txt`` (``train=True``) or ``Ebay_test.txt``.

    The split's ``class_id`` values become contiguous targets in id order (the official train ids
    1..11318 give 0..11317, the test ids 11319..22634 give 0..11315, as TorchOk subtracts 1 or 11319).
    Training items are ``{"input", "target"}``; test items are retrieval items whose every image is query
    and gallery (leave-one-out, TorchOk's ``dataset_type: classification``): ``{"input", "target",
    "is_query", "is_gallery"}``. ``test_mode=True``: ``{"input"}`` only. ``classes`` are the class ids.

    >>> import tempfile, os, PIL.Image
    >>> root = tempfile.mkdtemp(); os.makedirs(f"{root}/Stanford_Online_Products/chair_final")
    >>> lines = ["image_id class_id super_class_id path"]
    >>> for i, class_id in enumerate([11319, 11319, 11320]):
    ...     PIL.Image.new("RGB", (8, 8)).save(f"{root}/Stanford_Online_Products/chair_final/{i}.JPG")
    ...     lines.append(f"{i + 1} {class_id} 1 chair_final/{i}.JPG")
    >>> _ = open(f"{root}/Stanford_Online_Products/Ebay_test.txt", "w").write("\\n".join(lines))
    >>> test = SOP(root, train=False)
    >>> test.classes, sorted(test[2]), int(test[2]["target"])
    (['11319', '11320'], ['input', 'is_gallery', 'is_query', 'target'], 1)
    """

    base_folder = "Stanford_Online_Products"
    split_files: ClassVar[dict[bool, str]] = {True: "Ebay_train.txt", False: "Ebay_test.txt"}

    def __init__(
        self,
        data_folder: str | os.PathLike[str],
        train: bool = True,
        transform: Any = None,
        augment: Any = None,
        *,
        test_mode: bool = False,
        image_format: str = "rgb",
        image_size: int | Sequence[int] | None = None,
        on_bad_file: str = "raise",
        max_skip_fraction: float = 0.1,
    ) -> None:
        super().__init__(transform, augment, image_format=image_format, image_size=image_size,
                         on_bad_file=on_bad_file, max_skip_fraction=max_skip_fraction)
        self.train = flag(train, "train", type(self).__name__)
        self.test_mode = flag(test_mode, "test_mode", type(self).__name__)
        self.root = example_folder(data_folder, self.base_folder, "SOP", SOP_LAYOUT, self.split_files[self.train])
        self.annotation_path = self.root / self.split_files[self.train]
        header, rows = read_csv(self.annotation_path, delimiter=" ")
        _require(header, ["class_id", "path"], self.annotation_path, SOP_LAYOUT)
        problems: list[str] = []
        ids: list[int] = []
        seen: dict[str, int] = {}
        for line, row in enumerate(rows, start=2):
            where = f"{self.annotation_path.name} line {line}"
            cell, name = (row.get("class_id") or "").strip(), (row.get("path") or "").strip()
            if not cell.isdigit() or int(cell) < 1:
                problems.append(f"{where}: class_id {cell!r} is not a positive integer (SOP numbers classes from 1)")
                continue
            if name in seen:
                problems.append(f"{where}: duplicate path {name!r} (first on line {seen[name]})")
                continue
            seen[name] = line
            path = listed_image(self, self.root, name, where, problems)
            if path is not None:
                self.paths.append(path)
                ids.append(int(cell))
        raise_problems(problems, f"SOP list {self.annotation_path}",
                       "Fix the rows above (or pass on_bad_file='skip' to leave missing images out)")
        if not self.paths:
            raise DatasetError(f"SOP list {str(self.annotation_path)!r} lists no usable images ({len(rows)} rows)")
        order = {class_id: i for i, class_id in enumerate(sorted(set(ids)))}
        self._set_targets([order[i] for i in ids], [str(i) for i in order])
        self.is_query = self.is_gallery = torch.ones(len(self.paths), dtype=torch.bool)

    def finish(self, sample: dict[str, Any], index: int) -> dict[str, Any]:
        out = {"input": image_tensor(sample["image"])}
        if self.test_mode:
            return out
        out["target"] = sample["target"]
        if not self.train:
            out["is_query"], out["is_gallery"] = self.is_query[index], self.is_gallery[index]
        return out


class TripletSOP(VisionDataset):
    """SOP as triplets (TorchOk's ``TRIPLET_SOP``): rows of ``sop_triplet_train.csv`` (``train=True``)
    or ``sop_triplet_test.csv`` under ``data_folder/Stanford_Online_Products`` name an anchor, a positive
    and a negative image. Items are ``{"input": anchor, "positive", "negative"}`` (float CHW each), each
    image augmented on its own draw, as TorchOk does; ``TripletLearnTask`` embeds all three."""

    base_folder = SOP.base_folder
    split_files: ClassVar[dict[bool, str]] = {True: "sop_triplet_train.csv", False: "sop_triplet_test.csv"}

    def __init__(
        self,
        data_folder: str | os.PathLike[str],
        train: bool = True,
        transform: Any = None,
        augment: Any = None,
        *,
        anchor_column: str = "anchor",
        positive_column: str = "positive",
        negative_column: str = "negative",
        image_format: str = "rgb",
        image_size: int | Sequence[int] | None = None,
        on_bad_file: str = "raise",
        max_skip_fraction: float = 0.1,
    ) -> None:
        super().__init__(transform, augment, image_format=image_format, image_size=image_size,
                         on_bad_file=on_bad_file, max_skip_fraction=max_skip_fraction)
        self.train = flag(train, "train", type(self).__name__)
        self.root = example_folder(data_folder, self.base_folder, "TRIPLET_SOP", TRIPLET_SOP_LAYOUT,
                                   self.split_files[self.train])
        self.annotation_path = self.root / self.split_files[self.train]
        columns = [anchor_column, positive_column, negative_column]
        header, rows = read_csv(self.annotation_path)
        _require(header, columns, self.annotation_path, TRIPLET_SOP_LAYOUT)
        problems: list[str] = []
        self.triplets: list[tuple[Path, Path, Path]] = []
        for line, row in enumerate(rows, start=2):
            where = f"{self.annotation_path.name} line {line}"
            found = [listed_image(self, self.root, row.get(c), f"{where} ({c})", problems) for c in columns]
            if all(p is not None for p in found):
                self.triplets.append(tuple(found))
                self.paths.append(found[0])
        raise_problems(problems, f"triplet list {self.annotation_path}",
                       "Fix the rows above (or pass on_bad_file='skip' to leave rows with missing images out)")
        if not self.triplets:
            raise DatasetError(f"triplet list {str(self.annotation_path)!r} lists no usable triplets "
                               f"({len(rows)} rows)")

    def load(self, index: int) -> dict[str, Any]:
        anchor, positive, negative = self.triplets[index]
        return {"image": self.read(anchor), "positive": self.read(positive), "negative": self.read(negative)}

    def apply_pipeline(self, sample: dict[str, Any]) -> dict[str, Any]:
        return {key: super(TripletSOP, self).apply_pipeline({"image": image})["image"] for key, image in sample.items()}

    def finish(self, sample: dict[str, Any], index: int) -> dict[str, Any]:
        return {"input": image_tensor(sample["image"]), "positive": image_tensor(sample["positive"]),
                "negative": image_tensor(sample["negative"])}

    def fingerprint(self) -> str:
        import hashlib

        digest = hashlib.sha256(type(self).__name__.encode())
        for triplet in self.triplets:
            digest.update(" ".join("/".join(p.parts[-2:]) for p in triplet).encode() + b"\n")
        return digest.hexdigest()[:16]


class SweetPepper(ImageSegmentationDataset):
    """Kaggle's Sweet Pepper segmentation (TorchOk's ``SweetPepper``): ``data_folder/sweet_pepper`` with
    ``train.csv`` (``train=True``) or ``valid.csv`` (columns ``image_path,mask``, paths relative to
    ``sweet_pepper/``). Three classes: 0 background, 1 fruit, 2 peduncle; any other mask value is an
    error naming the mask. Items ``{"input", "target": int64 HxW}``; ``test_mode=True``: ``{"input"}``."""

    base_folder = "sweet_pepper"
    split_files: ClassVar[dict[bool, str]] = {True: "train.csv", False: "valid.csv"}
    CLASSES = ("background", "fruit", "peduncle")

    def __init__(
        self,
        data_folder: str | os.PathLike[str],
        train: bool = True,
        transform: Any = None,
        augment: Any = None,
        *,
        test_mode: bool = False,
        image_format: str = "rgb",
        image_size: int | Sequence[int] | None = None,
        on_bad_file: str = "raise",
        max_skip_fraction: float = 0.1,
    ) -> None:
        self.train = flag(train, "train", type(self).__name__)
        self.test_mode = flag(test_mode, "test_mode", type(self).__name__)
        split = self.split_files[self.train]
        folder = example_folder(data_folder, self.base_folder, "SweetPepper", SWEET_PEPPER_LAYOUT, split)
        # an absolute list path: a train.csv in the working directory must not be read instead
        super().__init__(folder, (folder / split).resolve(), transform, augment, classes=self.CLASSES,
                         ignore_index=None, image_format=image_format, image_size=image_size,
                         on_bad_file=on_bad_file, max_skip_fraction=max_skip_fraction)

    def finish(self, sample: dict[str, Any], index: int) -> dict[str, Any]:
        out = super().finish(sample, index)
        return {"input": out["input"]} if self.test_mode else out
