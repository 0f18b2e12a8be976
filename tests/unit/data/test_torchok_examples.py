"""TorchOk's example data sets (SOP, TRIPLET_SOP, SweetPepper) on fake archives in the real layouts, and
every broken layout a user can hand them: each error names the folder or the file and line, and the fix."""

from __future__ import annotations

import albumentations as A
import pytest
import torch
from torchok_example_data import fake_sop, fake_sweet_pepper

from trainforge.config.build import build_dataset, dataset_params
from trainforge.data import SOP, SweetPepper, TripletSOP
from trainforge.errors import ConfigError, DatasetError
from trainforge.registry import registry


@pytest.fixture(scope="module")
def sop(tmp_path_factory):
    return fake_sop(tmp_path_factory.mktemp("sop"))


def test_sop_train_is_classification_with_contiguous_targets(sop):
    train = SOP(sop, train=True)
    assert len(train) == 16 and train.classes == ["1", "2", "3", "4"]
    sample = train[5]
    assert sorted(sample) == ["input", "target"] and sample["input"].shape == (3, 24, 24)
    assert sample["target"].dtype == torch.int64 and int(sample["target"]) == 1  # class_id 2 - 1
    assert train.targets.tolist() == [i // 4 for i in range(16)]


def test_sop_test_split_is_leave_one_out_retrieval(sop):
    test = SOP(sop, train=False)
    assert len(test) == 12 and test.classes == ["5", "6", "7"]  # ids 5..7 become targets 0..2
    sample = test[11]
    assert sorted(sample) == ["input", "is_gallery", "is_query", "target"]
    assert int(sample["target"]) == 2 and bool(sample["is_query"]) and bool(sample["is_gallery"])
    assert sorted(SOP(sop, train=False, test_mode=True)[0]) == ["input"]


def test_sop_transform_runs_after_augment(sop):
    train = SOP(sop, transform=A.Compose([A.Resize(8, 10)]), augment=A.Compose([A.HorizontalFlip(p=1.0)]))
    assert train[0]["input"].shape == (3, 8, 10)


def test_triplet_sop_yields_three_images_each_augmented_on_its_own(sop):
    triplets = TripletSOP(sop, train=True, augment=A.Compose([A.RandomCrop(10, 10)]))
    assert len(triplets) == 16
    sample = triplets[0]
    assert sorted(sample) == ["input", "negative", "positive"]
    assert all(sample[k].shape == (3, 10, 10) and sample[k].dtype == torch.float32 for k in sample)
    plain = TripletSOP(sop, train=False)
    first = plain.triplets[0]
    assert first[0].parent == first[1].parent and first[0] != first[1]  # anchor and positive: one class
    assert plain.fingerprint() != TripletSOP(sop, train=True).fingerprint()


def test_sweet_pepper_masks_and_classes(tmp_path):
    root = fake_sweet_pepper(tmp_path)
    train, valid = SweetPepper(root, train=True), SweetPepper(root, train=False)
    assert (len(train), len(valid)) == (4, 2) and train.classes == ["background", "fruit", "peduncle"]
    sample = train[0]
    assert sample["input"].shape == (3, 32, 32) and sample["target"].shape == (32, 32)
    assert sample["target"].dtype == torch.int64 and set(sample["target"].unique().tolist()) == {0, 1, 2}
    assert sorted(SweetPepper(root, test_mode=True)[0]) == ["input"]


def test_sweet_pepper_reads_its_own_csv_not_one_in_the_working_directory(tmp_path, monkeypatch):
    root = fake_sweet_pepper(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_text("image_path,mask\nnowhere.jpg,nowhere.png\n")
    assert len(SweetPepper(root, train=True)) == 4


def test_registered_under_torchok_names_with_help():
    datasets = registry("datasets")
    assert datasets.get("SOP") is SOP and datasets.get("TRIPLET_SOP") is TripletSOP
    assert datasets.get("SweetPepper") is SweetPepper
    assert all("TorchOk's" in datasets.help(n) for n in ("SOP", "TRIPLET_SOP", "SweetPepper"))


def test_torchok_params_download_and_input_dtype_are_noted_not_passed(sop):
    notes: list[str] = []
    params = dataset_params(SOP, {"train": True, "download": True, "data_folder": str(sop),
                                  "input_dtype": "float32"}, "data.TRAIN[0].dataset.params", notes)
    assert params == {"train": True, "data_folder": str(sop)}
    assert any("download is ignored" in n for n in notes) and any("input_dtype is ignored" in n for n in notes)


# -- hostile layouts --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, name", [(SOP, "SOP"), (TripletSOP, "TRIPLET_SOP"), (SweetPepper, "SweetPepper")])
def test_missing_data_folder_names_it_the_layout_and_that_nothing_downloads(tmp_path, cls, name):
    with pytest.raises(DatasetError) as error:
        cls(tmp_path / "nowhere", train=True)
    message = str(error.value)
    assert message.startswith(f"{name}: data_folder {str(tmp_path / 'nowhere')!r} does not exist")
    assert "downloads nothing (download: true is ignored)" in message and "Expected layout:" in message
    assert cls.base_folder in message


def test_folder_without_the_split_file_names_the_file(tmp_path):
    (tmp_path / "Stanford_Online_Products").mkdir()
    with pytest.raises(DatasetError, match=r"(?s)Ebay_test\.txt' does not exist.*unpack Stanford_Online_Products"):
        SOP(tmp_path, train=False)
    with pytest.raises(DatasetError, match=r"has no sweet_pepper/ folder"):
        SweetPepper(tmp_path)


def test_sop_row_with_a_missing_image_names_file_and_line(tmp_path):
    root = fake_sop(tmp_path, train_classes=2, test_classes=1, per_class=2)
    (root / "Stanford_Online_Products" / "chair_final" / "100001_1.JPG").unlink()
    with pytest.raises(DatasetError, match=r"Ebay_train\.txt line 3: file .*100001_1\.JPG' does not exist"):
        SOP(root)
    skipped = SOP(root, on_bad_file="skip")
    assert len(skipped) == 3 and skipped.skipped_at_start[0][0].endswith("100001_1.JPG")


@pytest.mark.parametrize("cell", ["abc", "0", "-3", ""])
def test_sop_bad_class_id_names_file_line_and_value(tmp_path, cell):
    root = fake_sop(tmp_path, train_classes=2, test_classes=1, per_class=2)
    listing = root / "Stanford_Online_Products" / "Ebay_train.txt"
    lines = listing.read_text().splitlines()
    parts = lines[2].split(" ")
    lines[2] = " ".join([parts[0], cell or '""', *parts[2:]])
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"Ebay_train\.txt line 3: class_id .* is not a positive integer"):
        SOP(root)


def test_sop_list_with_a_wrong_header_shows_the_expected_one(tmp_path):
    root = fake_sop(tmp_path, train_classes=1, test_classes=1, per_class=1)
    (root / "Stanford_Online_Products" / "Ebay_train.txt").write_text("id,label,file\n1,1,a.JPG\n")
    with pytest.raises(DatasetError, match=r"(?s)no column\(s\) 'class_id', 'path'.*image_id class_id super_class_id"):
        SOP(root)


def test_sop_duplicate_path_names_both_lines(tmp_path):
    root = fake_sop(tmp_path, train_classes=1, test_classes=1, per_class=2)
    listing = root / "Stanford_Online_Products" / "Ebay_train.txt"
    lines = listing.read_text().splitlines()
    listing.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(DatasetError, match=r"line 4: duplicate path .* \(first on line 2\)"):
        SOP(root)


def test_triplet_row_with_a_missing_negative_names_the_column(tmp_path):
    root = fake_sop(tmp_path, train_classes=2, test_classes=1, per_class=2)
    listing = root / "Stanford_Online_Products" / "sop_triplet_train.csv"
    lines = listing.read_text().splitlines()
    lines[1] = ",".join([*lines[1].split(",")[:2], "bicycle_final/gone.JPG"])
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"sop_triplet_train\.csv line 2 \(negative\): file .*gone\.JPG"):
        TripletSOP(root)
    assert len(TripletSOP(root, on_bad_file="skip")) == 3


def test_sweet_pepper_mask_with_a_fourth_class_names_the_mask(tmp_path):
    from PIL import Image

    root = fake_sweet_pepper(tmp_path)
    mask = root / "sweet_pepper" / "masks" / "valid_1.png"
    Image.new("L", (32, 32), 3).save(mask)
    with pytest.raises(DatasetError, match=r"valid_1\.png' holds values \[3\] outside 0\.\.2"):
        SweetPepper(root, train=False)[1]


def test_sweet_pepper_row_with_a_missing_mask_names_line(tmp_path):
    root = fake_sweet_pepper(tmp_path)
    (root / "sweet_pepper" / "masks" / "train_2.png").unlink()
    with pytest.raises(DatasetError, match=r"line 4: file .*train_2\.png' does not exist"):
        SweetPepper(root)


def test_config_build_wraps_the_error_with_the_key_path(tmp_path):
    from trainforge.config.schema import DataPair, parse

    pair = parse(DataPair, {"dataset": {"name": "SOP", "params": {"train": True, "download": True,
                                                                   "data_folder": str(tmp_path)}}}, "data.TRAIN[0]")
    with pytest.raises(ConfigError, match=r"data\.TRAIN\[0\]\.dataset: SOP\(.*\) failed: SOP: data_folder .* has no "
                                          r"Stanford_Online_Products/ folder"):
        build_dataset(pair, "data.TRAIN[0]", train=True)
