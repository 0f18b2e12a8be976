"""One pass over a data set's files before training: every unreadable image, mask/image size mismatch and
out-of-range mask, listed together (``trainforge data validate`` prints it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptImageError, DatasetError


@dataclass
class ValidationReport:
    """What ``validate_dataset`` found: ``bad_files`` as ``(path, reason)``, and what was dropped before
    (``skipped_at_start``: files the annotation lists that are missing, in skip mode)."""

    num_samples: int
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    skipped_at_start: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad_files and not self.skipped_at_start

    def summary(self) -> str:
        lines = [f"{self.num_samples} samples checked: {len(self.bad_files)} unreadable, "
                 f"{len(self.skipped_at_start)} listed but missing"]
        lines += [f"  {path}: {reason}" for path, reason in self.skipped_at_start + self.bad_files]
        return "\n".join(lines)


def validate_dataset(dataset: Any, progress: Callable[[int, int], None] | None = None) -> ValidationReport:
    """Decode every sample of a trainforge data set (pixels, masks, sizes), collecting every failure.

    >>> from trainforge.data import ImageFolder
    >>> import tempfile, os, PIL.Image
    >>> root = tempfile.mkdtemp(); os.makedirs(root + "/a")
    >>> PIL.Image.new("RGB", (4, 4)).save(root + "/a/ok.png")
    >>> open(root + "/a/bad.png", "wb").close()
    >>> [(os.path.basename(path), reason) for path, reason in validate_dataset(ImageFolder(root)).bad_files]
    [('bad.png', 'cannot decode: an empty file (0 bytes); remove or replace the file')]
    """
    report = ValidationReport(len(dataset), skipped_at_start=list(getattr(dataset, "skipped_at_start", [])))
    for index in range(len(dataset)):
        try:
            dataset.load(index)
        except (CorruptImageError, DatasetError) as error:
            path = str(dataset.paths[index])
            report.bad_files.append((path, str(error).removeprefix(path + ": ")))
        if progress is not None:
            progress(index + 1, len(dataset))
    return report
