"""Reading images and masks from files: the bytes choose the decoder (not the extension), EXIF orientation
is applied, modes are converted to the one asked for, and every failure is a ``CorruptImageError`` that
names the path — truncated files, text named ``.jpg``, empty files and decompression bombs alike."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, CorruptImageError

#: Extensions an image folder lists (the decoder is still chosen from the bytes).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)
IMAGE_FORMATS: tuple[str, ...] = ("rgb", "gray", "rgba")
#: Pixels an image may declare before it is refused as a decompression bomb (PIL's default limit).
MAX_IMAGE_PIXELS = 89_478_485


def size_pair(size: int | Sequence[int] | None, where: str = "image_size") -> tuple[int, int] | None:
    """``(height, width)`` from an int or a pair; None stays None.

    >>> size_pair(64), size_pair([32, 48])
    ((64, 64), (32, 48))
    """
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        pair = (size, size)
    elif isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) for s in size):
        pair = (int(size[0]), int(size[1]))
    else:
        raise ConfigError(f"{where} must be an int or [height, width], got {size!r}")
    if min(pair) < 1:
        raise ConfigError(f"{where} must be positive, got {size!r}")
    return pair


def check_format(image_format: str) -> str:
    if image_format not in IMAGE_FORMATS:
        raise ConfigError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    return image_format


def _open(path: str | os.PathLike[str]) -> Any:
    """``PIL.Image.open`` with the bomb check made an error (PIL only warns below twice its limit)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > MAX_IMAGE_PIXELS:
                Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # someone turned the guard off; turn it back on
            return Image.open(path)
    except FileNotFoundError:
        raise CorruptImageError(f"{path}: file not found (listed in the data set but missing on disk)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise CorruptImageError(
            f"{path}: refused as a decompression bomb ({error}); images may have at most "
            f"{MAX_IMAGE_PIXELS} pixels — resize the file"
        ) from None
    except UnidentifiedImageError:
        size = os.path.getsize(path) if os.path.exists(path) else -1
        what = "an empty file (0 bytes)" if size == 0 else f"not an image format PIL can read ({size} bytes)"
        raise CorruptImageError(f"{path}: cannot decode: {what}; remove or replace the file") from None
    except OSError as error:
        raise CorruptImageError(f"{path}: cannot open: {error}") from None


def _decode(path: str | os.PathLike[str], draft: tuple[int, int] | None) -> Any:
    """Open, decode fully (so truncation shows here, with the path) and apply EXIF orientation."""
    from PIL import ImageOps

    image = _open(path)
    try:
        if draft is not None and image.format == "JPEG":
            # JPEG can decode at 1/2, 1/4, 1/8 scale directly: 4-16x less work when the target is small
            image.draft("RGB" if image.mode != "L" else "L", (draft[1], draft[0]))
        image.load()
        transposed = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as error:  # PIL's truncation error has no path (RELIABILITY E8)
        raise CorruptImageError(f"{path}: cannot decode ({type(error).__name__}: {error}); the file is "
                                f"truncated or corrupt — re-export or remove it") from None
    return transposed if transposed is not None else image


def _to_8bit(image: Any) -> Any:
    """16-bit and 32-bit gray images scaled to 8 bits (PIL's own convert would clip at 255)."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray((array.astype(np.float64) * (255.0 / top)).round().astype(np.uint8), "L")
    if image.mode == "F":
        array = np.clip(np.asarray(image), 0.0, 1.0 if np.asarray(image).max() <= 1.0 else 255.0)
        scale = 255.0 if array.max() <= 1.0 else 1.0
        return Image.fromarray((array * scale).round().astype(np.uint8), "L")
    return image


def read_image(
    path: str | os.PathLike[str], image_format: str = "rgb", size: tuple[int, int] | None = None
) -> np.ndarray:
    """The image at ``path`` as uint8 ``HxWxC`` (C = 3 for rgb, 1 for gray, 4 for rgba), optionally
    resized to ``size = (height, width)``.

    The decoder is picked from the file's bytes (a JPEG named ``.png`` reads fine); palette, RGBA, gray
    and 16-bit images are converted to ``image_format``. Every failure is a ``CorruptImageError``
    naming ``path``; truncated images are never accepted (``LOAD_TRUNCATED_IMAGES`` stays off).

    >>> import tempfile, PIL.Image
    >>> path = tempfile.mkdtemp() + "/red.png"
    >>> PIL.Image.new("RGB", (4, 2), (255, 0, 0)).save(path)
    >>> read_image(path).shape, read_image(path, "gray", size=(4, 8)).shape
    ((2, 4, 3), (4, 8, 1))
    """
    check_format(image_format)
    image = _to_8bit(_decode(path, size))
    target = {"rgb": "RGB", "gray": "L", "rgba": "RGBA"}[image_format]
    if image.mode == "P" and target == "RGB":
        image = image.convert("RGBA")  # palette transparency would warn when converted straight to RGB
    if image.mode != target:
        image = image.convert(target)
    if size is not None and image.size != (size[1], size[0]):
        from PIL import Image

        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def read_mask(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> np.ndarray:
    """A segmentation mask as int64 ``HxW`` class ids: palette (P-mode) indices or gray values.

    An RGB mask whose three channels agree is read as gray; a colour mask is an error naming the file.
    Resizing uses nearest neighbour, so no class id is invented.
    """
    from PIL import Image

    image = _to_8bit(_decode(path, None))
    if image.mode in ("P", "L", "1"):
        array = np.asarray(image)
    else:
        array = np.asarray(image.convert("RGB"))
        if not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])):
            raise CorruptImageError(
                f"{path}: a mask must hold one class id per pixel (palette or gray image); got a "
                f"{image.mode} image with different channels — save it as a palette or gray PNG"
            )
        array = array[..., 0]
    if size is not None and array.shape != size:
        array = np.asarray(Image.fromarray(array.astype(np.uint8)).resize((size[1], size[0]), Image.Resampling.NEAREST))
    return array.astype(np.int64)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` from the header only (nothing decoded), EXIF rotation included."""
    image = _open(path)
    with image:
        width, height = image.size
        try:
            orientation = image.getexif().get(0x0112, 1)
        except Exception:  # a broken EXIF block: the pixels decide later
            orientation = 1
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def list_images(folder: str | os.PathLike[str], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly in ``folder`` (by extension, hidden files left out), sorted by name."""
    return sorted(
        entry for entry in Path(folder).iterdir()
        if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in extensions
    )
