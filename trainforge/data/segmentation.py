"""Segmentation data: image + mask pairs from a CSV (TorchOk's ``image_path,mask``) or from two parallel
folders; palette and gray masks, class ids checked against ``num_classes`` with an ignore index."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from .datasets import VisionDataset, annotation_file, raise_problems, read_csv, require_columns, resolve_file
from .reading import list_images, read_image, read_mask
from .transforms import image_tensor, mask_tensor


class ImageSegmentationDataset(VisionDataset):
    """Images and their masks: ``{"input": float CHW, "target": int64 HxW}``.

    Pairs come from ``annotation_path`` (a CSV with ``input_column`` and ``target_column``, paths relative
    to ``data_folder``) or, without it, from ``images_folder`` and ``masks_folder`` under ``data_folder``
    matched by file stem. Masks are palette indices or gray values; with ``num_classes`` every value must
    be below it or equal ``ignore_index`` (an error names the mask and the values). An image and a mask of
    different sizes are an error naming both files. ``augment``/``transform`` move the mask with the image.
    """

    def __init__(
        self,
        data_folder: str | os.PathLike[str],
        annotation_path: str | os.PathLike[str] | None = None,
        transform: Any = None,
        augment: Any = None,
        *,
        images_folder: str | None = None,
        masks_folder: str | None = None,
        input_column: str = "image_path",
        target_column: str = "mask",
        num_classes: int | None = None,
        ignore_index: int | None = 255,
        classes: Sequence[str] | None = None,
        image_format: str = "rgb",
        image_size: int | Sequence[int] | None = None,
        on_bad_file: str = "raise",
        max_skip_fraction: float = 0.1,
    ) -> None:
        super().__init__(transform, augment, image_format=image_format, image_size=image_size,
                         on_bad_file=on_bad_file, max_skip_fraction=max_skip_fraction)
        self.data_folder = Path(data_folder)
        self.num_classes = num_classes if num_classes is not None else (len(classes) if classes else None)
        self.ignore_index = ignore_index
        self.classes = list(classes) if classes is not None else (
            [str(i) for i in range(self.num_classes)] if self.num_classes else None)
        self.mask_paths: list[Path] = []
        if annotation_path is not None:
            pairs, where = self._from_csv(Path(annotation_path), input_column, target_column), str(annotation_path)
        elif images_folder is not None and masks_folder is not None:
            pairs, where = self._from_folders(images_folder, masks_folder), str(self.data_folder)
        else:
            raise ConfigError("ImageSegmentationDataset needs annotation_path= (a CSV image_path,mask) or both "
                              "images_folder= and masks_folder=")
        for image, mask in pairs:
            self.paths.append(image)
            self.mask_paths.append(mask)
        if not self.paths:
            raise DatasetError(f"segmentation data {where} holds no image/mask pairs")

    def _from_csv(self, path: Path, input_column: str, target_column: str) -> list[tuple[Path, Path]]:
        path = annotation_file(self.data_folder, path)
        header, rows = read_csv(path)
        require_columns(header, [input_column, target_column], path)
        problems, pairs, seen = [], [], {}
        for line, row in enumerate(rows, start=2):
            names = [(row.get(input_column) or "").strip(), (row.get(target_column) or "").strip()]
            if not all(names):
                problems.append(f"line {line}: empty {input_column if not names[0] else target_column}")
                continue
            if names[0] in seen:
                problems.append(f"line {line}: duplicate entry {names[0]!r} (first on line {seen[names[0]]})")
                continue
            seen[names[0]] = line
            found = [resolve_file(self.data_folder, name) for name in names]
            missing = [why for _, why in found if why]
            if missing:
                if self.on_bad_file == "skip":
                    self.skipped_at_start.append((str(self.data_folder / names[0]), "; ".join(missing)))
                else:
                    problems.extend(f"line {line}: {why}" for why in missing)
                continue
            pairs.append((found[0][0], found[1][0]))
        raise_problems(problems, f"annotation {path}", "Fix the rows above")
        return pairs

    def _from_folders(self, images_folder: str, masks_folder: str) -> list[tuple[Path, Path]]:
        folders = [self.data_folder / images_folder, self.data_folder / masks_folder]
        for folder in folders:
            if not folder.is_dir():
                raise DatasetError(f"segmentation folder {str(folder)!r} does not exist")
        images = {p.stem: p for p in list_images(folders[0])}
        masks = {p.stem: p for p in list_images(folders[1])}
        problems = [f"image {str(images[s])!r} has no mask in {str(folders[1])!r}"
                    for s in sorted(images.keys() - masks.keys())]
        problems += [f"mask {str(masks[s])!r} has no image in {str(folders[0])!r}"
                     for s in sorted(masks.keys() - images.keys())]
        raise_problems(problems, f"segmentation folders {folders[0]} and {folders[1]}",
                       "Fix: every image needs a mask with the same file stem")
        return [(images[s], masks[s]) for s in sorted(images)]

    def load(self, index: int) -> dict[str, Any]:
        image_path, mask_path = self.paths[index], self.mask_paths[index]
        image = read_image(image_path, self.image_format)  # resized after the size check, not before
        mask = read_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise DatasetError(f"image {str(image_path)!r} is {image.shape[1]}x{image.shape[0]} but its mask "
                               f"{str(mask_path)!r} is {mask.shape[1]}x{mask.shape[0]}; they must match")
        self._check_values(mask, mask_path)
        if self.image_size is not None:
            image, mask = _resize_pair(image, mask, self.image_size)
        return {"image": image, "mask": mask}

    def _check_values(self, mask: np.ndarray, path: Path) -> None:
        if self.num_classes is None or int(mask.max()) < self.num_classes:
            return
        values = np.unique(mask)
        bad = [int(v) for v in values if v >= self.num_classes and v != self.ignore_index]
        if bad:
            raise DatasetError(f"mask {str(path)!r} holds values {bad[:10]} outside 0..{self.num_classes - 1} "
                               f"(ignore_index={self.ignore_index}); fix the mask or num_classes/ignore_index")

    def finish(self, sample: dict[str, Any], index: int) -> dict[str, Any]:
        return {"input": image_tensor(sample["image"]), "target": mask_tensor(sample["mask"])}


def _resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    squeeze = image.shape[2] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(pil)
    out_mask = np.asarray(Image.fromarray(mask.astype(np.int32)).resize((size[1], size[0]), Image.Resampling.NEAREST))
    return (array[..., None] if squeeze else array), out_mask.astype(np.int64)
