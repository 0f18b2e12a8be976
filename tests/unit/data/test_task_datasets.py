from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from helpers import EXTERNAL
from imagegen import save_image, write_csv
from PIL import Image

from trainforge.data import (
    CocoDetection,
    ImageDetectionDataset,
    ImageSegmentationDataset,
    ResumableLoader,
    RetrievalDataset,
)
from trainforge.errors import DatasetError

TORCHOK = EXTERNAL / "torchok" / "test_data"
SEG = TORCHOK / "data" / "segmentation_data"


# -- segmentation ------------------------------------------------------------------------------------
def test_torchok_palette_segmentation_csv():
    ds = ImageSegmentationDataset(SEG, "segmentation_test.csv", num_classes=5, augment=[A.HorizontalFlip(p=1.0)])
    sample = ds[0]  # image1.png is a palette image, its mask a gray PNG
    assert sample["input"].shape == (3, 240, 600) and sample["target"].shape == (240, 600)
    assert sample["target"].dtype == torch.int64 and set(sample["target"].unique().tolist()) == {0, 1, 2, 3, 4}
    original = torch.from_numpy(np.asarray(Image.open(SEG / "mask1.png")).astype(np.int64))
    assert torch.equal(sample["target"], original.flip(-1))  # the mask moved with the image


def test_mask_values_are_checked_against_num_classes():
    with pytest.raises(DatasetError, match=r"mask1.png.*values \[4\] outside 0..3"):
        ImageSegmentationDataset(SEG, "segmentation_test.csv", num_classes=4)[0]


def _pair(folder: Path, stem: str, size=(8, 6), mask_size=None, value=1):
    save_image(folder / "images" / f"{stem}.png", size)
    mask = np.full(((mask_size or size)[1], (mask_size or size)[0]), value, np.uint8)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")


def test_parallel_folders_ignore_index_and_resize(tmp_path):
    _pair(tmp_path, "a", value=255)
    _pair(tmp_path, "b", value=2)
    ds = ImageSegmentationDataset(tmp_path, images_folder="images", masks_folder="masks", num_classes=3,
                                  image_size=(4, 4))
    assert len(ds) == 2 and ds[0]["target"].unique().tolist() == [255] and ds[1]["target"].shape == (4, 4)


def test_size_mismatch_names_both_files(tmp_path):
    _pair(tmp_path, "a", size=(8, 6), mask_size=(6, 8))
    ds = ImageSegmentationDataset(tmp_path, images_folder="images", masks_folder="masks")
    with pytest.raises(DatasetError, match=r"images/a.png.*8x6.*masks/a.png.*6x8"):
        ds[0]


def test_unpaired_folders_are_listed(tmp_path):
    _pair(tmp_path, "a")
    save_image(tmp_path / "images" / "lonely.png")
    with pytest.raises(DatasetError, match=r"lonely.png' has no mask"):
        ImageSegmentationDataset(tmp_path, images_folder="images", masks_folder="masks")


# -- detection ---------------------------------------------------------------------------------------
def test_torchok_coco_box_csv_survives_resize_and_flip():
    plain = ImageDetectionDataset(TORCHOK / "detection", "coco_valid.csv")
    first = plain[0]["target"]
    assert len(plain) == 5 and first["boxes"].shape == (19, 4) and first["labels"][:3].tolist() == [44, 67, 1]
    assert first["boxes"][0].tolist() == pytest.approx([217.62, 240.54, 256.61, 298.29], abs=1e-3)  # xywh -> xyxy
    moved = ImageDetectionDataset(TORCHOK / "detection", "coco_valid.csv", transform=[A.Resize(100, 200)],
                                  augment=[A.HorizontalFlip(p=1.0)])[0]
    height, width = plain[0]["input"].shape[1:]
    x1, y1, x2, y2 = first["boxes"][0].tolist()
    expected = [200 - x2 * 200 / width, y1 * 100 / height, 200 - x1 * 200 / width, y2 * 100 / height]
    assert moved["input"].shape == (3, 100, 200)
    assert moved["target"]["boxes"][0].tolist() == pytest.approx(expected, abs=1e-2)


def test_detection_batches_are_lists_of_targets_and_empty_images_are_valid(tmp_path):
    for name in ("a", "b"):
        save_image(tmp_path / f"{name}.png", (20, 10))
    write_csv(tmp_path / "boxes.csv", "image_path,bbox,label", ['a.png,"[[1, 1, 5, 5]]","[3]"', "b.png,[],[]"])
    ds = ImageDetectionDataset(tmp_path, "boxes.csv", image_size=(20, 40))
    batch = next(iter(ResumableLoader(ds, batch_size=2)))
    assert batch["input"].shape == (2, 3, 20, 40) and isinstance(batch["target"], list)
    assert batch["target"][0]["boxes"].tolist() == [[2.0, 2.0, 12.0, 12.0]]  # scaled with the resize
    assert batch["target"][1]["boxes"].shape == (0, 4) and batch["target"][1]["labels"].dtype == torch.int64


def test_detection_csv_problems_are_named(tmp_path):
    save_image(tmp_path / "a.png")
    write_csv(tmp_path / "boxes.csv", "image_path,bbox,label",
              ['a.png,"[[1, 1, 0, 5]]","[3]"', 'gone.png,"[[1, 1, 2, 2]]","[1]"', 'a.png,"[[1, 1, 2, 2]]","[1, 2]"',
               'x.png,"[[1, 1,","[1]"'])
    with pytest.raises(DatasetError) as error:
        ImageDetectionDataset(tmp_path, "boxes.csv", num_classes=2)
    text = str(error.value)
    for expected in ("line 2: 'a.png': box [1.0, 1.0, 1.0, 6.0] has no area", "labels [3] outside 0..1",
                     "gone.png' does not exist", "line 4: duplicate entry 'a.png'", "line 5: 'x.png': cannot read"):
        assert expected in text, text


def test_coco_json(tmp_path):
    save_image(tmp_path / "one.jpg", (30, 20), fmt="JPEG")
    save_image(tmp_path / "two.jpg", (30, 20), fmt="JPEG")
    coco = {"images": [{"id": 7, "file_name": "one.jpg"}, {"id": 8, "file_name": "two.jpg"}],
            "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
            "annotations": [{"image_id": 7, "bbox": [2, 3, 10, 5], "category_id": 18},
                            {"image_id": 7, "bbox": [0, 0, 30, 20], "category_id": 3, "iscrowd": 1}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    ds = CocoDetection(tmp_path, "coco.json")
    assert ds.classes == ["car", "dog"] and ds.category_ids == [3, 18]
    assert ds[0]["target"]["boxes"].tolist() == [[2.0, 3.0, 12.0, 8.0]] and ds[0]["target"]["labels"].tolist() == [1]
    assert ds[1]["target"]["boxes"].shape == (0, 4)
    coco["annotations"].append({"image_id": 99, "bbox": [1, 1, 1, 1], "category_id": 3})
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=r"annotations\[2\]: image_id 99"):
        CocoDetection(tmp_path, "coco.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="not a COCO annotation file"):
        CocoDetection(tmp_path, "bad.json")


# -- retrieval ---------------------------------------------------------------------------------------
def test_torchok_retrieval_csvs():
    folder = TORCHOK / "retrieval_data"
    ds = RetrievalDataset(folder, "toilets_paths.csv", matching_path="toilets_match.csv",
                          gallery_path="toilets_gallery.csv")
    assert len(ds) == 20 and ds.is_query.sum() == 3 and ds.is_gallery.sum() == 17
    assert ds.targets[:12].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3] and (ds.targets[12:] == -1).all()
    sample = ds[2]
    assert sample["is_query"] and not sample["is_gallery"] and int(sample["target"]) == 0
    batch = next(iter(ResumableLoader(ds, batch_size=4)))  # images differ in size: inputs stay a list
    assert batch["is_query"].tolist() == [True, False, True, False]
    both = RetrievalDataset(folder, "toilets_paths.csv")
    assert bool(both.is_query.all()) and bool(both.is_gallery.all())


def test_retrieval_match_with_unknown_ids(tmp_path):
    save_image(tmp_path / "a.png")
    write_csv(tmp_path / "paths.csv", "id,image_path,label", ["0,a.png,0"])
    write_csv(tmp_path / "match.csv", "query,relevant,scores", ["0,5 6,1 1"])
    with pytest.raises(DatasetError, match="ids 5, 6 are not in the image list"):
        RetrievalDataset(tmp_path, "paths.csv", matching_path="match.csv")
