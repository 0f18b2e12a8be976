"""The task report sections on hand-made data: a short gallery's missing neighbours are left blank,
ignored pixels and the background stay uncoloured, odd shapes are refused naming what was expected."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trainforge.report import (
    load_retrieval_samples,
    load_segmentation_samples,
    save_detection_samples,
    save_retrieval_samples,
    save_segmentation_samples,
)
from trainforge.report import tasks as sections


def test_missing_neighbours_are_blank_and_counted_apart(tmp_path):
    queries = torch.rand(2, 3, 8, 8)
    labels = torch.tensor([[0, 1, -1], [1, -1, -1]])  # the gallery held fewer than three items
    path = save_retrieval_samples(tmp_path, queries, torch.tensor([0, 1]), torch.rand(2, 3, 3, 8, 8), labels,
                                  ["a", "b"])
    data = load_retrieval_samples(path)
    assert data["present"].tolist() == [[True, True, False], [True, False, False]]
    assert data["correct"].tolist() == [[True, False, False], [True, False, False]]
    out = sections.draw_retrieval(data, tmp_path / "grid.png")
    pixels = np.asarray(Image.open(out).convert("RGB"))
    _, cell_w, cell_h = sections.retrieval_geometry(8, 8)
    corner = lambda row, col: tuple(int(v) for v in pixels[row * cell_h + sections.PAD + 1,  # noqa: E731
                                                           col * cell_w + sections.PAD + 1])
    assert corner(0, 1) == sections.RIGHT_COLOR and corner(0, 2) == sections.WRONG_COLOR
    assert corner(0, 3) == (255, 255, 255) and corner(1, 2) == (255, 255, 255)  # no neighbour: blank
    section = sections.retrieval_section(tmp_path, tmp_path)[0]
    assert "2 of 3 neighbours shown are right" in section.html


def test_ignored_pixels_and_background_stay_uncoloured(tmp_path):
    mask = torch.tensor([[[0, 1], [255, 2]]])
    image = torch.tensor([[0.0, 1.0], [1.0, 0.5]]).expand(1, 3, 2, 2)  # already spans [0, 1]: shown as it is
    path = save_segmentation_samples(tmp_path, image, mask, mask, ["background", "a", "b"], 3, ignore_index=255)
    data = load_segmentation_samples(path)
    out = sections.draw_segmentation(data, tmp_path / "masks.png")
    scale, cell_w, _ = sections.segmentation_geometry(2, 2)
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    top, left = sections.HEADER + sections.PAD, 2 * cell_w + sections.PAD  # the predicted-mask panel
    at = lambda y, x: pixels[top + y * scale, left + x * scale].tolist()  # noqa: E731
    colors = sections.palette(3)
    assert at(0, 0) == [0, 0, 0] and at(1, 0) == [255, 255, 255]  # background and ignored: the image itself
    assert at(0, 1) == [int(np.round(127.5 + c / 2)) for c in colors[1]]  # half the image, half the colour
    assert at(1, 1) == [int(np.round(64 + c / 2)) for c in colors[2]]


def test_odd_shapes_are_refused_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"predictions must be \(N, H, W\)"):
        save_segmentation_samples(tmp_path, torch.rand(1, 3, 4, 4), torch.zeros(1, 4, 4), torch.zeros(1, 2, 2),
                                  None, 2)
    with pytest.raises(ValueError, match=r"neighbour_images must be \(Q, K, C, H, W\)"):
        save_retrieval_samples(tmp_path, torch.rand(1, 3, 4, 4), torch.tensor([0]), torch.rand(1, 2, 3, 5, 5),
                               torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="pred_boxes must be a list of 2"):
        save_detection_samples(tmp_path, torch.rand(2, 3, 4, 4), [], [], None, 0.5)
    assert not (tmp_path / "report").exists()  # nothing half-written
