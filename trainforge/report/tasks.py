"""The vision tasks' report sections: predicted and true masks over validation images (segmentation),
queries with their nearest gallery neighbours marked right or wrong (retrieval) and predicted and true
boxes (detection). Drawn with Pillow, like the classification grids; a run without the data shows none."""

from __future__ import annotations

import colorsys
import io
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import write_atomic
from .sections import SECTIONS, Section, register_section
from .task_data import (
    DETECTION_FILE,
    RETRIEVAL_FILE,
    SEGMENTATION_FILE,
    load_detection_samples,
    load_retrieval_samples,
    load_segmentation_samples,
)

CELL = 128  # the longer side of a drawn image, in pixels (small images are scaled up, nearest neighbour)
PAD = 4
HEADER = 18  # the column titles above the segmentation grid
CAPTION = 14  # the text under each retrieval image
BORDER = 3  # the retrieval images' right / wrong frame
OVERLAY_ALPHA = 0.5  # a mask colour's share of an overlaid pixel
QUERY_COLOR, RIGHT_COLOR, WRONG_COLOR = (0, 90, 220), (0, 170, 0), (220, 0, 0)
TRUE_BOX_COLOR, PRED_BOX_COLOR = (0, 200, 0), (255, 0, 255)
_BASE = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
         (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
         (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0))


def palette(count: int) -> list[tuple[int, int, int]]:
    """One distinct colour per class (class 0, usually the background, is black); beyond 18 classes
    the hues go round the colour wheel by the golden ratio.

    >>> palette(3)
    [(0, 0, 0), (230, 25, 75), (60, 180, 75)]
    """
    colors = list(_BASE[:count])
    for index in range(len(colors), count):
        r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.75, 0.95)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


def scale_for(height: int, width: int) -> int:
    """The integer factor that brings the longer side of an image up to about ``CELL`` pixels.

    >>> scale_for(16, 32), scale_for(300, 200)
    (4, 1)
    """
    return max(1, CELL // max(height, width))


def to_uint8(images: torch.Tensor, scale: int = 1) -> np.ndarray:
    """Images ``(..., C, H, W)`` in [0, 1] as uint8 RGB ``(..., H*scale, W*scale, 3)`` (grey expanded)."""
    pixels = images.detach().float().clamp(0, 1).cpu()
    if pixels.shape[-3] != 3:
        pixels = pixels[..., :1, :, :].expand(*pixels.shape[:-3], 3, *pixels.shape[-2:])
    pixels = pixels.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    return (pixels.movedim(-3, -1) * 255).round().to(torch.uint8).numpy()


def overlay(image: np.ndarray, mask: np.ndarray, colors: list[tuple[int, int, int]],
            clear: set[int] | frozenset[int] = frozenset()) -> np.ndarray:
    """``image`` (H, W, 3 uint8) with each pixel blended with its class colour (``OVERLAY_ALPHA``);
    pixels of a ``clear`` class (the background, the ``ignore_index``) or of no known class stay as they are.

    >>> out = overlay(np.full((1, 3, 3), 100, np.uint8), np.array([[1, 0, 255]]), [(0, 0, 0), (200, 0, 0)], {0})
    >>> out[0].tolist()
    [[150, 50, 50], [100, 100, 100], [100, 100, 100]]
    """
    table = np.asarray(colors, dtype=np.float32)
    known = (mask >= 0) & (mask < len(colors))
    for index in clear:
        known &= mask != index
    blended = (1 - OVERLAY_ALPHA) * image.astype(np.float32) + OVERLAY_ALPHA * table[np.where(known, mask, 0)]
    return np.where(known[..., None], np.round(blended), image).astype(np.uint8)


def clear_classes(names: list[str], ignore_index: int | None = None) -> set[int]:
    """The classes left uncoloured in a mask overlay: those named ``background`` and the ``ignore_index``.

    >>> sorted(clear_classes(["background", "cat"], 255))
    [0, 255]
    """
    clear = {index for index, name in enumerate(names) if name.strip().lower() == "background"}
    return clear | ({ignore_index} if ignore_index is not None else set())


def _font(size: int = 11) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _save_png(canvas: Any, path: Path) -> None:
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def _legend(draw: Any, names: list[str], colors: list[tuple[int, int, int]], top: int, width: int) -> int:
    """Draw swatches with class names from ``top``, wrapping at ``width``; return the height used."""
    font, left, row, line = _font(), PAD, 0, 18
    for name, color in zip(names, colors):
        span = 16 + int(draw.textlength(name, font=font)) + 12
        if left + span > width and left > PAD:
            left, row = PAD, row + 1
        y = top + row * line + 2
        draw.rectangle([left, y, left + 11, y + 11], fill=color, outline=(90, 90, 90))
        draw.text((left + 16, y), name, fill=(20, 20, 20), font=font)
        left += span
    return (row + 1) * line + PAD


def legend_height(names: list[str], width: int) -> int:
    """The height ``_legend`` uses for ``names`` within ``width`` pixels (for laying out the canvas)."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return _legend(draw, names, [(0, 0, 0)] * len(names), 0, width)


# -- segmentation ------------------------------------------------------------------------------------
def legend_names(names: list[str], ignore_index: int | None = None) -> list[str]:
    """The segmentation legend's entries: the class names, uncoloured ones marked.

    >>> legend_names(["background", "cat"])
    ['background (not coloured)', 'cat']
    """
    clear = clear_classes(names, ignore_index)
    return [f"{name} (not coloured)" if index in clear else name for index, name in enumerate(names)]


def segmentation_geometry(height: int, width: int) -> tuple[int, int, int]:
    """``(scale, cell_w, cell_h)`` of the segmentation grid: each row is image, true mask, predicted mask;
    the image at row ``r``, column ``c`` starts at ``(c * cell_w + PAD, HEADER + r * cell_h + PAD)``."""
    scale = scale_for(height, width)
    return scale, width * scale + 2 * PAD, height * scale + 2 * PAD


def draw_segmentation(data: dict[str, Any], path: Path) -> Path:
    """The segmentation grid as a PNG at ``path``; returns it."""
    from PIL import Image, ImageDraw

    images, targets, predictions = data["images"], data["targets"], data["predictions"]
    names, ignore = data["class_names"], data.get("ignore_index")
    colors, clear = palette(len(names)), clear_classes(names, ignore)
    count, (height, width) = images.shape[0], images.shape[-2:]
    scale, cell_w, cell_h = segmentation_geometry(height, width)
    canvas_w = 3 * cell_w
    legend_h = legend_height(legend_names(names, ignore), canvas_w)
    canvas = Image.new("RGB", (canvas_w, HEADER + count * cell_h + legend_h), "white")
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(("image", "true mask", "predicted mask")):
        draw.text((column * cell_w + PAD, 3), title, fill=(20, 20, 20), font=_font())
    pixels = to_uint8(images, scale)
    for row in range(count):
        true = targets[row].repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
        pred = predictions[row].repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
        panels = (pixels[row], overlay(pixels[row], true, colors, clear), overlay(pixels[row], pred, colors, clear))
        for column, panel in enumerate(panels):
            canvas.paste(Image.fromarray(panel), (column * cell_w + PAD, HEADER + row * cell_h + PAD))
    _legend(draw, legend_names(names, ignore), [(255, 255, 255) if i in clear else c for i, c in enumerate(colors)],
            HEADER + count * cell_h, canvas_w)
    _save_png(canvas, path)
    return path


def segmentation_section(run_dir: Path, out_dir: Path) -> list[Section]:
    path = run_dir / SEGMENTATION_FILE
    if not path.is_file():
        return []
    data = load_segmentation_samples(path)
    draw_segmentation(data, out_dir / "segmentation_samples.png")
    pred, true = data["predictions"], data["targets"]
    ignore = data.get("ignore_index")
    valid = true != ignore if ignore is not None else torch.ones_like(true, dtype=torch.bool)
    accuracy = float((pred == true)[valid].float().mean()) if valid.any() else float("nan")
    weights = escape(data.get("weights") or "final weights")
    html = (f"<p>{pred.shape[0]} validation images ({weights}): the image, the true mask and the predicted "
            f"mask, each class in its colour (legend below the grid). Pixel accuracy over these images: "
            f"{accuracy:.4f}.</p>")
    return [Section("Segmentation: predicted masks", html, ["segmentation_samples.png"])]


# -- retrieval ---------------------------------------------------------------------------------------
def retrieval_geometry(height: int, width: int) -> tuple[int, int, int]:
    """``(scale, cell_w, cell_h)`` of the retrieval grid: row ``q`` is the query then its neighbours;
    the frame of column ``c`` starts at ``(c * cell_w + PAD, q * cell_h + PAD)`` and is ``BORDER`` wide."""
    scale = scale_for(height, width)
    return scale, width * scale + 2 * (PAD + BORDER), height * scale + 2 * (PAD + BORDER) + CAPTION


def draw_retrieval(data: dict[str, Any], path: Path) -> Path:
    """The query / neighbours grid as a PNG at ``path``: the query framed blue, each neighbour green
    (same group label as the query) or red; returns it."""
    from PIL import Image, ImageDraw

    queries, neighbours = data["query_images"], data["neighbour_images"]
    correct, present, names = data["correct"], data["present"], data["class_names"]
    labels, neighbour_labels = data["query_targets"], data["neighbour_targets"]
    count, k = neighbour_labels.shape
    scale, cell_w, cell_h = retrieval_geometry(*queries.shape[-2:])
    canvas = Image.new("RGB", ((k + 1) * cell_w, max(count, 1) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(10)
    query_pixels, neighbour_pixels = to_uint8(queries, scale), to_uint8(neighbours, scale)

    def name(label: int) -> str:
        return names[label] if names is not None and 0 <= label < len(names) else str(label)

    for row in range(count):
        cells = [(query_pixels[row], QUERY_COLOR, f"query: {name(int(labels[row]))}")]
        for column in range(k):
            if not present[row, column]:
                cells.append(None)
                continue
            color = RIGHT_COLOR if correct[row, column] else WRONG_COLOR
            caption = f"{column + 1}: {name(int(neighbour_labels[row, column]))}"
            cells.append((neighbour_pixels[row, column], color, caption))
        for column, cell in enumerate(cells):
            if cell is None:
                continue
            pixels, color, caption = cell
            left, top = column * cell_w + PAD, row * cell_h + PAD
            h, w = pixels.shape[:2]
            draw.rectangle([left, top, left + w + 2 * BORDER - 1, top + h + 2 * BORDER - 1], fill=color)
            canvas.paste(Image.fromarray(pixels), (left + BORDER, top + BORDER))
            draw.text((left, top + h + 2 * BORDER + 1), caption[:22], fill=color, font=font)
    _save_png(canvas, path)
    return path


def retrieval_section(run_dir: Path, out_dir: Path) -> list[Section]:
    path = run_dir / RETRIEVAL_FILE
    if not path.is_file():
        return []
    data = load_retrieval_samples(path)
    draw_retrieval(data, out_dir / "retrieval_neighbours.png")
    correct, present = data["correct"], data["present"]
    right, shown = int(correct.sum()), int(present.sum())
    weights = escape(data.get("weights") or "final weights")
    html = (f"<p>{correct.shape[0]} validation queries ({weights}), each followed by its {correct.shape[1]} "
            f"nearest gallery items, nearest first. Frames: blue the query, <b style='color:#00aa00'>green</b> "
            f"a neighbour of the query's group, <b style='color:#dc0000'>red</b> one of another group. "
            f"{right} of {shown} neighbours shown are right.</p>")
    return [Section("Retrieval: nearest gallery neighbours", html, ["retrieval_neighbours.png"])]


# -- detection ---------------------------------------------------------------------------------------
DETECTION_COLUMNS = 4


def detection_geometry(height: int, width: int) -> tuple[int, int, int]:
    """``(scale, cell_w, cell_h)`` of the detection grid (``DETECTION_COLUMNS`` images a row); image ``i``
    starts at ``((i % columns) * cell_w + PAD, (i // columns) * cell_h + PAD)``."""
    scale = scale_for(height, width)
    return scale, width * scale + 2 * PAD, height * scale + 2 * PAD


def _box(box: torch.Tensor, scale: int, left: int, top: int, width: int, height: int) -> list[int]:
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    x0, x1 = sorted((min(max(x0, 0), width - 1), min(max(x1 - 1, 0), width - 1)))
    y0, y1 = sorted((min(max(y0, 0), height - 1), min(max(y1 - 1, 0), height - 1)))
    return [left + round(x0), top + round(y0), left + round(x1), top + round(y1)]


def draw_detection(data: dict[str, Any], path: Path) -> Path:
    """The detection grid as a PNG at ``path``: true boxes green, predicted boxes magenta with their
    class and score (drawn over the true ones); returns it."""
    from PIL import Image, ImageDraw

    images, names = data["images"], data["class_names"]
    count = images.shape[0]
    height, width = images.shape[-2:]
    scale, cell_w, cell_h = detection_geometry(height, width)
    columns = max(1, min(DETECTION_COLUMNS, count))
    rows = max(1, -(-count // columns))
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "1"  # labels in the box colour only (no blended edges), readable over any image
    font = _font(10)
    pixels = to_uint8(images, scale)
    shown_w, shown_h = width * scale, height * scale
    for index in range(count):
        left, top = (index % columns) * cell_w + PAD, (index // columns) * cell_h + PAD
        canvas.paste(Image.fromarray(pixels[index]), (left, top))
        for box in data["true_boxes"][index]:
            draw.rectangle(_box(box, scale, left, top, shown_w, shown_h), outline=TRUE_BOX_COLOR, width=2)
        texts = []
        for box, label, score in zip(data["pred_boxes"][index], data["pred_labels"][index], data["pred_scores"][index]):
            corners = _box(box, scale, left, top, shown_w, shown_h)
            draw.rectangle(corners, outline=PRED_BOX_COLOR, width=2)
            label = int(label)
            texts.append((corners, f"{names[label] if 0 <= label < len(names) else label} {float(score):.2f}"))
        for corners, text in texts:  # after every box, so no outline hides a label
            x, y = corners[0], corners[1] - 11  # above the box; inside it when the image's top is too near
            if y < top:
                y = corners[1] + 3
            draw.rectangle(draw.textbbox((x, y), text, font=font), fill=(255, 255, 255))
            draw.text((x, y), text, fill=PRED_BOX_COLOR, font=font)
    _save_png(canvas, path)
    return path


def detection_section(run_dir: Path, out_dir: Path) -> list[Section]:
    path = run_dir / DETECTION_FILE
    if not path.is_file():
        return []
    data = load_detection_samples(path)
    draw_detection(data, out_dir / "detection_samples.png")
    predicted = sum(len(b) for b in data["pred_boxes"])
    true = sum(len(b) for b in data["true_boxes"])
    weights = escape(data.get("weights") or "final weights")
    html = (f"<p>{len(data['pred_boxes'])} validation images ({weights}): <b style='color:#00c800'>true boxes in "
            f"green</b>, <b style='color:#ff00ff'>predicted boxes in magenta</b> with their class and score "
            f"(score &ge; {data['score_threshold']:.2f}). {predicted} predicted and {true} true boxes shown.</p>")
    return [Section("Detection: predicted boxes", html, ["detection_samples.png"])]


for _name, _fn in (("segmentation", segmentation_section), ("retrieval", retrieval_section),
                   ("detection", detection_section)):
    register_section(_name, _fn, replace=True)
if "config" in SECTIONS:  # the run's configuration stays the last section
    SECTIONS["config"] = SECTIONS.pop("config")
