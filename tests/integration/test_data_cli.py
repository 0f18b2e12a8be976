"""``trainforge data validate|cache|preview`` through the real command line entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "data"))
from helpers import EXTERNAL
from imagegen import image_folder, truncated_jpeg

from trainforge.cli import main

TORCHOK = EXTERNAL / "torchok" / "test_data"


def test_validate_lists_every_bad_file_and_fails(tmp_path, capsys):
    root = image_folder(tmp_path / "data", ("a", "b"), per_class=2)
    truncated_jpeg(root / "a" / "cut.jpg")
    (root / "b" / "empty.png").write_bytes(b"")
    assert main(["data", "validate", str(root)]) == 1
    out = capsys.readouterr().out
    assert "2 unreadable" in out and "cut.jpg" in out and "empty.png" in out
    (root / "a" / "cut.jpg").unlink()
    (root / "b" / "empty.png").unlink()
    assert main(["data", "validate", str(root)]) == 0


def test_validate_the_torchok_csv_names_the_missing_file(capsys):
    code = main(["data", "validate", "ImageClassificationDataset", f"data_folder={TORCHOK / 'data'}",
                 "annotation_path=multiclass_test.csv"])
    out = capsys.readouterr().out
    assert code == 1 and "dog_2.png" in out and "1 listed but missing" in out


def test_a_wrong_parameter_is_a_clean_error(tmp_path, capsys):
    assert main(["data", "validate", "ImageFolder", f"root={tmp_path}", "img_size=4"]) == 2
    assert "no key 'img_size'" in capsys.readouterr().err


def test_cache_then_preview_with_boxes_and_masks(tmp_path, capsys):
    root = image_folder(tmp_path / "data", ("a", "b"), per_class=3, size=(30, 20))
    assert main(["data", "cache", str(root), "image_size=16", "--cache-dir", str(tmp_path / "cache"),
                 "--workers", "0"]) == 0
    assert "6 images, 0 unreadable" in capsys.readouterr().out
    out = tmp_path / "boxes.png"
    assert main(["data", "preview", "ImageDetectionDataset", f"data_folder={TORCHOK / 'detection'}",
                 "annotation_path=coco_valid.csv", "--augment", "HorizontalFlip:p=1.0", "--count", "4",
                 "--output", str(out)]) == 0
    boxes = np.asarray(Image.open(out))
    assert boxes.shape[2] == 3 and ((boxes == [255, 255, 0]).all(axis=2)).sum() > 100  # yellow boxes drawn
    out = tmp_path / "masks.png"
    assert main(["data", "preview", "ImageSegmentationDataset", f"data_folder={TORCHOK / 'data/segmentation_data'}",
                 "annotation_path=segmentation_test.csv", "--output", str(out)]) == 0
    assert Image.open(out).size[0] > 128
