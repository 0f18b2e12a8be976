"""Retrieval data: images with group labels, each marked as query and/or gallery (TorchOk's retrieval CSVs:
an image list with ``id,image_path,label``, an optional gallery-only list, an optional query/relevant match)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import DatasetError
from .datasets import VisionDataset, raise_problems, read_csv, require_columns, resolve_file
from .transforms import image_tensor


class RetrievalDataset(VisionDataset):
    """``{"input", "target": int64 group label, "is_query": bool, "is_gallery": bool}`` per image.

    - ``annotation_path``: a CSV of ``id_column``, ``input_column`` and ``target_column`` (the group label).
    - ``matching_path`` (optional, TorchOk's ``query,relevant,scores``): the ids in its ``query`` column are
      the queries; every other listed image is gallery. Without it every labelled image is both, and the
      metric leaves the query itself out (leave-one-out retrieval).
    - ``gallery_path`` (optional): gallery-only images (``id,image_path``), distractors with label -1.
    Relevant ids in the match file that are not in the image list are errors naming the row.
    """

    def __init__(
        self,
        data_folder: str | os.PathLike[str],
        annotation_path: str | os.PathLike[str],
        transform: Any = None,
        augment: Any = None,
        *,
        matching_path: str | os.PathLike[str] | None = None,
        gallery_path: str | os.PathLike[str] | None = None,
        id_column: str = "id",
        input_column: str = "image_path",
        target_column: str = "label",
        image_format: str = "rgb",
        image_size: int | Sequence[int] | None = None,
        on_bad_file: str = "raise",
        max_skip_fraction: float = 0.1,
    ) -> None:
        super().__init__(transform, augment, image_format=image_format, image_size=image_size,
                         on_bad_file=on_bad_file, max_skip_fraction=max_skip_fraction)
        self.data_folder = Path(data_folder)
        self._seen: set[Path] = set()
        problems: list[str] = []
        labels, ids = [], []
        path = self._path(annotation_path)
        header, rows = read_csv(path)
        require_columns(header, [id_column, input_column, target_column], path)
        for line, row in enumerate(rows, start=2):
            label = (row.get(target_column) or "").strip()
            if not label.lstrip("-").isdigit():
                problems.append(f"{path.name} line {line}: label {label!r} is not an integer group id")
                continue
            if self._add(path.name, line, row, id_column, input_column, ids, problems):
                labels.append(int(label))
        self.queries = list(ids)
        gallery_only = 0
        if gallery_path is not None:
            gallery = self._path(gallery_path)
            header, rows = read_csv(gallery)
            require_columns(header, [input_column], gallery)
            for line, row in enumerate(rows, start=2):
                if self._add(gallery.name, line, row, id_column, input_column, [], problems):
                    labels.append(-1)
                    gallery_only += 1
        is_query = [True] * len(self.queries) + [False] * gallery_only
        is_gallery = [True] * len(is_query)
        if matching_path is not None:
            chosen = self._queries(self._path(matching_path), set(ids), problems)
            is_query = [i in chosen for i in ids] + [False] * gallery_only
            is_gallery = [not q for q in is_query]
        raise_problems(problems, f"retrieval data {path}", "Fix the rows above")
        if not self.paths:
            raise DatasetError(f"retrieval data {path} lists no usable images")
        self.targets = torch.tensor(labels, dtype=torch.int64)
        self.is_query = torch.tensor(is_query)
        self.is_gallery = torch.tensor(is_gallery)
        self.ids = ids

    def _path(self, name: str | os.PathLike[str]) -> Path:
        path = Path(name)
        return path if path.is_absolute() or path.is_file() else self.data_folder / path

    def _add(self, source: str, line: int, row: dict[str, str], id_column: str, input_column: str,
             ids: list[str], problems: list[str]) -> bool:
        name = (row.get(input_column) or "").strip()
        file, why = resolve_file(self.data_folder, name) if name else (None, f"empty {input_column}")
        if why:
            if self.on_bad_file == "skip" and name:
                self.skipped_at_start.append((str(self.data_folder / name), why))
            else:
                problems.append(f"{source} line {line}: {why}")
            return False
        if file in self._seen:
            problems.append(f"{source} line {line}: duplicate entry {name!r}")
            return False
        self._seen.add(file)
        self.paths.append(file)
        ids.append((row.get(id_column) or "").strip())
        return True

    @staticmethod
    def _queries(path: Path, known: set[str], problems: list[str]) -> set[str]:
        header, rows = read_csv(path)
        require_columns(header, ["query", "relevant"], path)
        chosen = set()
        for line, row in enumerate(rows, start=2):
            query = (row.get("query") or "").strip()
            relevant = (row.get("relevant") or "").split()
            unknown = [i for i in [query, *relevant] if i not in known]
            if unknown:
                problems.append(f"{path.name} line {line}: ids {', '.join(unknown)} are not in the image list")
            chosen.add(query)
        return chosen

    def load(self, index: int) -> dict[str, Any]:
        return {"image": self.read(self.paths[index])}

    def finish(self, sample: dict[str, Any], index: int) -> dict[str, Any]:
        return {"input": image_tensor(sample["image"]), "target": self.targets[index],
                "is_query": self.is_query[index], "is_gallery": self.is_gallery[index]}
