"""Data sets and loaders: the embedded digits data, and loaders that resume mid-epoch exactly."""

from .digits import DIGITS_CLASSES, load_digits_split
from .loaders import ResumableLoader, collate_indexed, sample_seed

__all__ = ["DIGITS_CLASSES", "ResumableLoader", "collate_indexed", "load_digits_split", "sample_seed"]
