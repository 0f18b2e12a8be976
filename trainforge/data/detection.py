"""Detection data: boxes and labels per image, from a CSV (TorchOk's ``image_path,bbox,label`` with
COCO ``xywh`` boxes) or a COCO JSON file; samples carry ``{"boxes": float32 [N,4] xyxy, "labels": int64 [N]}``
that move with the image through resizing and flipping; an image with no boxes is valid."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from .datasets import VisionDataset, annotation_file, raise_problems, read_csv, require_columns, resolve_file
from .reading import read_image
from .transforms import boxes_tensor, image_tensor

BOX_FORMATS = ("coco", "xyxy", "cxcywh")


def to_xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """Absolute ``[N, 4]`` boxes converted to ``x1, y1, x2, y2``.

    >>> to_xyxy(np.array([[10., 20., 5., 5.]]), "coco").tolist()
    [[10.0, 20.0, 15.0, 25.0]]
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if box_format == "xyxy":
        return boxes.copy()
    if box_format == "coco":
        return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    if box_format == "cxcywh":
        return np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)
    raise ConfigError(f"bbox_format must be one of {', '.join(BOX_FORMATS)}, got {box_format!r}")


class DetectionDataset(VisionDataset):
    """Base of the detection data sets: ``paths``, per-image ``boxes`` (xyxy) and ``labels``."""

    boxes = True

    def _init_targets(self) -> None:
        self.box_arrays: list[np.ndarray] = []
        self.label_arrays: list[np.ndarray] = []

    def add(self, path: Path, boxes: np.ndarray, labels: np.ndarray) -> None:
        self.paths.append(path)
        self.box_arrays.append(boxes.astype(np.float32).reshape(-1, 4))
        self.label_arrays.append(labels.astype(np.int64).reshape(-1))

    def load(self, index: int) -> dict[str, Any]:
        image = read_image(self.paths[index], self.image_format)
        height, width = image.shape[:2]
        boxes = self.box_arrays[index].copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)  # annotations a pixel past the edge are common
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, labels = boxes[keep], self.label_arrays[index][keep]
        if self.image_size is not None and (height, width) != self.image_size:
            from PIL import Image

            new_h, new_w = self.image_size
            squeeze = image.shape[2] == 1
            pil = Image.fromarray(image[..., 0] if squeeze else image).resize((new_w, new_h), Image.Resampling.BILINEAR)
            image = np.asarray(pil)[..., None] if squeeze else np.asarray(pil)
            boxes = boxes * np.array([new_w / width, new_h / height] * 2, dtype=np.float32)
        return {"image": image, "bboxes": boxes, "labels": labels}

    def finish(self, sample: dict[str, Any], index: int) -> dict[str, Any]:
        boxes = boxes_tensor(sample["bboxes"])
        labels = torch.as_tensor(np.asarray(sample["labels"], dtype=np.int64).reshape(-1))
        return {"input": image_tensor(sample["image"]), "target": {"boxes": boxes, "labels": labels}}


def _check_boxes(boxes: np.ndarray, labels: np.ndarray, num_classes: int | None, where: str) -> list[str]:
    problems = []
    if len(boxes) != len(labels):
        problems.append(f"{where}: {len(boxes)} boxes but {len(labels)} labels")
    elif len(boxes):
        flat = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if flat.any() or not np.isfinite(boxes).all():
            problems.append(f"{where}: box {boxes[np.argmax(flat)].tolist()} has no area (or is not finite)")
        if num_classes is not None and ((labels < 0) | (labels >= num_classes)).any():
            bad = sorted({int(v) for v in labels if v < 0 or v >= num_classes})
            problems.append(f"{where}: labels {bad} outside 0..{num_classes - 1}")
    return problems


class ImageDetectionDataset(DetectionDataset):
    """Boxes from a CSV (TorchOk's detection layout): an ``input_column`` of paths, a ``bbox_column`` of
    ``[[x, y, w, h], ...]`` lists (``bbox_format``: ``coco`` xywh, ``xyxy`` or ``cxcywh``, absolute pixels)
    and a ``target_column`` of ``[label, ...]`` lists. ``[]`` is an image without objects.
    """

    def __init__(
        self,
        data_folder: str | os.PathLike[str],
        annotation_path: str | os.PathLike[str],
        transform: Any = None,
        augment: Any = None,
        *,
        input_column: str = "image_path",
        bbox_column: str = "bbox",
        target_column: str = "label",
        bbox_format: str = "coco",
        num_classes: int | None = None,
        classes: Sequence[str] | None = None,
        image_format: str = "rgb",
        image_size: int | Sequence[int] | None = None,
        on_bad_file: str = "raise",
        max_skip_fraction: float = 0.1,
    ) -> None:
        super().__init__(transform, augment, image_format=image_format, image_size=image_size,
                         on_bad_file=on_bad_file, max_skip_fraction=max_skip_fraction)
        self._init_targets()
        self.data_folder = Path(data_folder)
        path = annotation_file(self.data_folder, annotation_path)
        header, rows = read_csv(path)
        require_columns(header, [input_column, bbox_column, target_column], path)
        self.num_classes = num_classes if num_classes is not None else (len(classes) if classes else None)
        problems: list[str] = []
        seen: dict[str, int] = {}
        top = -1
        for line, row in enumerate(rows, start=2):
            name = (row.get(input_column) or "").strip()
            if name in seen:
                problems.append(f"line {line}: duplicate entry {name!r} (first on line {seen[name]})")
                continue
            seen[name] = line
            try:
                raw_boxes = json.loads(row.get(bbox_column) or "[]")
                labels = np.asarray(json.loads(row.get(target_column) or "[]"), dtype=np.int64).reshape(-1)
                boxes = to_xyxy(np.asarray(raw_boxes, dtype=np.float32).reshape(-1, 4), bbox_format)
            except (ValueError, TypeError) as error:
                problems.append(f"line {line}: {name!r}: cannot read boxes/labels ({error}); expected "
                                f"[[x, y, w, h], ...] and [label, ...]")
                continue
            found = _check_boxes(boxes, labels, self.num_classes, f"line {line}: {name!r}")
            file, why = resolve_file(self.data_folder, name) if name else (None, f"empty {input_column}")
            if why:
                if on_bad_file == "skip" and name:
                    self.skipped_at_start.append((str(self.data_folder / name), why))
                    continue
                found.append(f"line {line}: {why}")
            problems.extend(found)
            if not found:
                self.add(file, boxes, labels)
                top = max(top, int(labels.max()) if len(labels) else -1)
        raise_problems(problems, f"annotation {path}", "Fix the rows above")
        if not self.paths:
            raise DatasetError(f"annotation {path} lists no usable images ({len(rows)} rows)")
        count = self.num_classes if self.num_classes is not None else top + 1
        self.classes = list(classes) if classes is not None else [str(i) for i in range(count)]


class CocoDetection(DetectionDataset):
    """Boxes from a COCO JSON file (``images``, ``annotations`` with ``bbox`` xywh and ``category_id``,
    ``categories``). ``classes`` are the category names; labels are their positions in ``classes``
    (sorted by category id), with ``category_ids`` mapping back. Crowd annotations are left out.
    """

    def __init__(
        self,
        data_folder: str | os.PathLike[str],
        annotation_path: str | os.PathLike[str],
        transform: Any = None,
        augment: Any = None,
        *,
        image_format: str = "rgb",
        image_size: int | Sequence[int] | None = None,
        on_bad_file: str = "raise",
        max_skip_fraction: float = 0.1,
    ) -> None:
        super().__init__(transform, augment, image_format=image_format, image_size=image_size,
                         on_bad_file=on_bad_file, max_skip_fraction=max_skip_fraction)
        self._init_targets()
        self.data_folder = Path(data_folder)
        path = annotation_file(self.data_folder, annotation_path)
        if not path.is_file():
            raise DatasetError(f"COCO annotation file {str(path)!r} does not exist")
        try:
            coco = json.loads(path.read_text())
            images, categories = coco["images"], coco.get("categories", [])
        except (ValueError, KeyError, TypeError) as error:
            raise DatasetError(f"{str(path)!r} is not a COCO annotation file ({error!r}); expected a JSON object "
                               f"with images, annotations and categories") from None
        categories = sorted(categories, key=lambda c: c["id"])
        self.classes = [str(c.get("name", c["id"])) for c in categories]
        self.category_ids = [int(c["id"]) for c in categories]
        self.num_classes = len(self.classes)
        position = {cid: i for i, cid in enumerate(self.category_ids)}
        per_image: dict[Any, list[dict[str, Any]]] = {image["id"]: [] for image in images}
        problems = []
        for number, annotation in enumerate(coco.get("annotations", [])):
            if annotation.get("image_id") not in per_image:
                problems.append(f"annotations[{number}]: image_id {annotation.get('image_id')!r} is not in images")
            elif annotation.get("category_id") not in position:
                problems.append(f"annotations[{number}]: category_id {annotation.get('category_id')!r} is not in "
                                f"categories")
            elif not annotation.get("iscrowd", 0):
                per_image[annotation["image_id"]].append(annotation)
        for image in images:
            name = str(image.get("file_name", ""))
            file, why = resolve_file(self.data_folder, name)
            entries = per_image[image["id"]]
            boxes = to_xyxy(np.array([a["bbox"] for a in entries], dtype=np.float32).reshape(-1, 4), "coco")
            labels = np.array([position[a["category_id"]] for a in entries], dtype=np.int64)
            found = _check_boxes(boxes, labels, None, f"image {name!r}")
            if why and on_bad_file == "skip":
                self.skipped_at_start.append((str(self.data_folder / name), why))
                continue
            problems.extend(found + ([f"image id {image['id']}: {why}"] if why else []))
            if not found and not why:
                self.add(file, boxes, labels)
        raise_problems(problems, f"COCO annotation {path}", "Fix the entries above")
        if not self.paths:
            raise DatasetError(f"COCO annotation {path} lists no usable images")
