"""Data sets and loaders: the embedded digits data, and loaders that resume mid-epoch exactly."""

from .digits import DIGITS_CLASSES, load_digits_split
from .loaders import ResumableLoader, collate_indexed, sample_seed
from .shapes import SHAPE_CLASSES, make_shapes

__all__ = [
    "DIGITS_CLASSES",
    "SHAPE_CLASSES",
    "ResumableLoader",
    "collate_indexed",
    "load_digits_split",
    "make_shapes",
    "sample_seed",
]
