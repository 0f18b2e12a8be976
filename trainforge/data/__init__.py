"""Data sets and loaders: the embedded digits data, and loaders that resume mid-epoch exactly."""

from .digits import DIGITS_CLASSES, load_digits_split

__all__ = ["DIGITS_CLASSES", "load_digits_split"]
