from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import EXTERNAL
from imagegen import image_folder, save_image, write_csv
from PIL import Image

from trainforge.data import ImageClassificationDataset, ImageFolder, read_image, read_mask
from trainforge.errors import ConfigError, CorruptImageError, DatasetError
from trainforge.registry import get_registry

TORCHOK = EXTERNAL / "torchok" / "test_data"
TOWHEE = EXTERNAL / "towhee" / "kaggle_dataset_small" / "train"


# -- reading ---------------------------------------------------------------------------------------
def test_bytes_choose_the_decoder_not_the_extension():
    image = read_image(TORCHOK / "data" / "dog_1.png")  # TorchOk ships a JPEG named .png
    assert image.shape == (391, 600, 3) and image.dtype == np.uint8


@pytest.mark.parametrize("mode", ["P", "RGBA", "L", "1", "CMYK"])
@pytest.mark.parametrize("image_format, channels", [("rgb", 3), ("gray", 1), ("rgba", 4)])
def test_every_mode_converts_to_the_format_asked(tmp_path, mode, image_format, channels):
    path = save_image(tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"), (5, 4), (255, 255, 255), mode=mode)
    image = read_image(path, image_format)
    assert image.shape == (4, 5, channels) and image.dtype == np.uint8
    assert image[..., :min(channels, 3)].min() >= 254  # white stays white


def test_sixteen_bit_scales_to_eight(tmp_path):
    Image.fromarray(np.array([[32768, 65535]], np.uint16)).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png", "gray")[0, :, 0].tolist() == [128, 255]  # scaled, not clipped
    assert read_image(tmp_path / "deep.png", "rgb").shape == (1, 2, 3)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (6, 2), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg").shape == (6, 2, 3)


def test_resize_on_read(tmp_path):
    path = save_image(tmp_path / "big.jpg", (256, 256), fmt="JPEG")
    assert read_image(path, size=(64, 32)).shape == (64, 32, 3)


def test_unknown_image_format_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="bgr"):
        read_image(save_image(tmp_path / "a.png"), "bgr")


def test_palette_mask_keeps_class_ids():
    mask = read_mask(TORCHOK / "data" / "segmentation_data" / "mask1.png")
    assert mask.dtype == np.int64 and mask.shape == (240, 600) and set(np.unique(mask)) == {0, 1, 2, 3, 4}


def test_colour_mask_is_an_error_naming_the_file(tmp_path):
    path = save_image(tmp_path / "mask.png", color=(1, 2, 3))
    with pytest.raises(CorruptImageError, match=r"mask.png"):
        read_mask(path)


# -- ImageFolder -------------------------------------------------------------------------------------
def test_image_folder_classes_like_torchvision(tmp_path):
    ds = ImageFolder(image_folder(tmp_path, ("b_square", "a_circle")))
    assert ds.classes == ["a_circle", "b_square"] and ds.class_to_idx == {"a_circle": 0, "b_square": 1}
    assert len(ds) == 6 and ds.targets.tolist() == [0, 0, 0, 1, 1, 1]
    sample = ds[4]
    assert sample["input"].dtype == torch.float32 and sample["input"].shape == (3, 8, 12)
    assert 0.0 <= float(sample["input"].min()) and float(sample["input"].max()) <= 1.0
    assert int(sample["target"]) == 1


def test_image_folder_lists_every_empty_class_folder_at_once(tmp_path):
    image_folder(tmp_path, ("cat",))
    (tmp_path / "dog").mkdir()
    (tmp_path / "owl").mkdir()
    (tmp_path / "owl" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError) as error:
        ImageFolder(tmp_path)
    assert "2 problem(s)" in str(error.value) and "dog" in str(error.value) and "owl" in str(error.value)


def test_image_folder_missing_root_and_classes_subset(tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere")
    image_folder(tmp_path, ("a", "b", "c"), per_class=1)
    ds = ImageFolder(tmp_path, classes=["c", "a"])
    assert ds.classes == ["c", "a"] and ds.targets.tolist() == [0, 1] and ds.paths[0].parent.name == "c"
    with pytest.raises(DatasetError, match="'zebra'"):
        ImageFolder(tmp_path, classes=["a", "zebra"])


def test_augment_runs_before_transform(tmp_path):
    calls = []

    def augment(image, **_):
        calls.append(("augment", image.shape))
        return {"image": image[:4, :4]}

    def transform(image, **_):
        calls.append(("transform", image.shape))
        return {"image": image}

    ds = ImageFolder(image_folder(tmp_path), transform=transform, augment=augment)
    assert ds[0]["input"].shape == (3, 4, 4)
    assert calls == [("augment", (8, 12, 3)), ("transform", (4, 4, 3))]


def test_albumentations_list_and_compose(tmp_path):
    import albumentations as A

    root = image_folder(tmp_path)
    ds = ImageFolder(root, transform=[A.Resize(16, 16), A.Normalize(mean=0.5, std=0.5, max_pixel_value=255.0)],
                     augment=A.Compose([A.HorizontalFlip(p=1.0)]))
    assert ds[0]["input"].shape == (3, 16, 16) and float(ds[0]["input"].min()) < 0  # normalised
    with pytest.raises(ConfigError, match="transform"):
        _ = ImageFolder(root, transform=42).pipeline


# -- annotation CSV ----------------------------------------------------------------------------------
def test_torchok_multiclass_csv_names_the_missing_file():
    with pytest.raises(DatasetError) as error:
        ImageClassificationDataset(TORCHOK / "data", "multiclass_test.csv")
    assert "line 8" in str(error.value) and "dog_2.png" in str(error.value)


def test_torchok_multiclass_csv_in_skip_mode():
    ds = ImageClassificationDataset(TORCHOK / "data", "multiclass_test.csv", on_bad_file="skip")
    assert len(ds) == 6 and ds.classes == ["0", "1", "2"]
    assert [Path(p).name for p, _ in ds.skipped_at_start] == ["dog_2.png"]
    assert ds[5]["input"].shape == (3, 391, 600) and int(ds[5]["target"]) == 2  # dog_1.png, a JPEG


def test_torchok_multilabel_csv():
    with pytest.raises(DatasetError, match=r"cat_dog_2.png"):
        ImageClassificationDataset(TORCHOK / "data", "multilabel_test.csv", multilabel=True, num_classes=2)
    ds = ImageClassificationDataset(TORCHOK / "data", "multilabel_test.csv", multilabel=True, num_classes=2,
                                    on_bad_file="skip")
    assert ds.targets.tolist() == [[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]]
    assert ds[0]["target"].dtype == torch.float32


def test_towhee_kaggle_csv_string_labels_and_names_without_extension():
    ds = ImageClassificationDataset(TOWHEE, "train_labels.csv", input_column="image_name", target_column="category")
    assert ds.classes == ["cat", "dog"] and len(ds) == 14
    assert all(p.suffix == ".jpg" for p in ds.paths)
    assert ds.targets.tolist().count(0) == 5  # five cats


def test_csv_reports_every_problem_at_once(tmp_path):
    for name in ("a", "b", "c"):
        save_image(tmp_path / f"{name}.png")
    save_image(tmp_path / "twin.png")
    save_image(tmp_path / "twin.jpg")
    write_csv(tmp_path / "labels.csv", "image_path,label",
              ["a.png,0", "b.png,7", "a.png,1", "gone.png,1", "c.png,", "twin,0", ",1"])
    with pytest.raises(DatasetError) as error:
        ImageClassificationDataset(tmp_path, tmp_path / "labels.csv", num_classes=3)
    text = str(error.value)
    for expected in ("line 3: b.png: label '7' is outside the classes (0..2)", "line 4: duplicate entry 'a.png'",
                     "gone.png' does not exist", "line 6: 'c.png' has no label", "'twin' matches 2 files",
                     "line 8: empty image_path"):
        assert expected in text, text


def test_csv_wrong_columns_and_missing_file(tmp_path):
    write_csv(tmp_path / "labels.csv", "path,y", ["a.png,0"])
    with pytest.raises(DatasetError, match=r"no column.*'image_path'.*columns are path, y"):
        ImageClassificationDataset(tmp_path, "labels.csv")
    with pytest.raises(DatasetError, match=r"missing.csv"):
        ImageClassificationDataset(tmp_path, "missing.csv")


def test_csv_one_hot_columns_and_given_classes(tmp_path):
    for name in ("a", "b"):
        save_image(tmp_path / f"{name}.png")
    write_csv(tmp_path / "hot.csv", "image_path,cat,dog", ["a.png,1,0", "b.png,1,1"])
    ds = ImageClassificationDataset(tmp_path, "hot.csv", target_column=["cat", "dog"])
    assert ds.classes == ["cat", "dog"] and ds.targets.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    write_csv(tmp_path / "names.csv", "image_path,label", ["a.png,dog", "b.png,cat"])
    ds = ImageClassificationDataset(tmp_path, "names.csv", classes=["dog", "cat", "owl"])
    assert ds.targets.tolist() == [0, 1] and ds.num_classes == 3


# -- registry ----------------------------------------------------------------------------------------
def test_data_sets_build_by_name_with_transforms(tmp_path):
    root = image_folder(tmp_path)
    albumentations = get_registry("transforms")
    resize = albumentations.build("Resize", height=6, width=6)
    ds = get_registry("datasets").build("ImageFolder", root=str(root), transform=[resize], augment=None)
    assert ds[0]["input"].shape == (3, 6, 6)
    assert "HorizontalFlip" in albumentations and "RandomHorizontalFlip" in get_registry("augmentations")
    assert "ImageClassificationDataset" in get_registry("datasets")


def test_albumentations_draws_follow_the_sample_seed_not_the_worker(tmp_path):
    import albumentations as A

    from trainforge.data import ResumableLoader

    ds = ImageFolder(image_folder(tmp_path, per_class=8), augment=[A.HorizontalFlip(), A.RandomBrightnessContrast()])

    def epoch(workers, number):
        loader = ResumableLoader(ds, batch_size=4, shuffle=True, seed=7, num_workers=workers)
        return torch.cat([b["input"] for b in loader.iter_epoch(number)])

    first = epoch(0, 0)
    assert torch.equal(first, epoch(0, 0)) and torch.equal(first, epoch(2, 0))
    assert not torch.equal(first, epoch(0, 1))


def test_fingerprint_follows_files_and_labels_not_location(tmp_path):
    import shutil

    first = ImageFolder(image_folder(tmp_path / "one"))
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    assert ImageFolder(tmp_path / "two").fingerprint() == first.fingerprint()
    (tmp_path / "two" / "circle" / "0.png").rename(tmp_path / "two" / "square" / "9.png")
    assert ImageFolder(tmp_path / "two").fingerprint() != first.fingerprint()


def test_transform_specs_as_yaml_writes_them(tmp_path):
    spec = [{"name": "OneOf", "params": {"transforms": [{"name": "HorizontalFlip", "params": {"p": 1.0}},
                                                         {"name": "VerticalFlip", "params": {"p": 1.0}}], "p": 1.0}},
            {"name": "Resize", "params": {"height": 5, "width": 7}}]
    ds = ImageFolder(image_folder(tmp_path), augment=spec)
    assert ds[0]["input"].shape == (3, 5, 7)
    from trainforge.errors import RegistryError

    with pytest.raises(RegistryError, match="did you mean 'Resize'"):
        _ = ImageFolder(tmp_path, transform=[{"name": "Resise"}]).pipeline
