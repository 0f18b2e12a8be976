"""RELIABILITY B17: corrupt and hostile images in an image folder — strict mode names the exact path
within the first epoch with two workers; skip mode lists every skipped file; the bomb costs no memory."""

from __future__ import annotations

import resource
import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageFile
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "data"))
from imagegen import bomb_png, image_folder, save_image, truncated_jpeg

from trainforge import Trainer
from trainforge.data import ImageFolder, ResumableLoader, read_image
from trainforge.errors import CorruptImageError, DatasetError


def hostile_folder(root: Path) -> dict[str, Path]:
    image_folder(root, ("cat", "dog"), per_class=6, size=(16, 16))
    bad = {
        "truncated": truncated_jpeg(root / "cat" / "truncated.jpg"),
        "empty": root / "dog" / "empty.jpg",
        "text": root / "dog" / "notes.jpg",
        "bomb": bomb_png(root / "cat" / "bomb.png"),
    }
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("this is not an image\n" * 20)
    save_image(root / "dog" / "jpeg_named.png", (16, 16), fmt="JPEG")  # valid, wrong extension
    return bad


@pytest.mark.parametrize("kind, reason", [("truncated", "truncated"), ("empty", "empty file"),
                                          ("text", "not an image"), ("bomb", "decompression bomb")])
def test_each_bad_file_is_named_with_its_reason(tmp_path, kind, reason):
    path = hostile_folder(tmp_path)[kind]
    with pytest.raises(CorruptImageError) as error:
        read_image(path)
    assert str(path) in str(error.value) and reason in str(error.value)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


def test_bomb_is_rejected_without_memory_growth(tmp_path):
    path = bomb_png(tmp_path / "bomb.png")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(3):
        with pytest.raises(CorruptImageError, match="bomb"):
            read_image(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200
    assert Image.MAX_IMAGE_PIXELS is not None


def test_guard_turned_off_elsewhere_is_turned_back_on(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(CorruptImageError, match="bomb"):
        read_image(bomb_png(tmp_path / "bomb.png"))


def test_strict_mode_names_the_path_through_two_workers(tmp_path):
    bad = hostile_folder(tmp_path)
    ds = ImageFolder(tmp_path, image_size=16)
    loader = ResumableLoader(ds, batch_size=4, shuffle=True, seed=0, num_workers=2)
    with pytest.raises(CorruptImageError) as error:
        for _ in loader.iter_epoch(0):
            pass
    assert any(str(path) in str(error.value) for path in bad.values()), str(error.value)


def test_skip_mode_lists_every_bad_file_and_keeps_good_labels(tmp_path):
    bad = hostile_folder(tmp_path)
    ds = ImageFolder(tmp_path, image_size=16, on_bad_file="skip", max_skip_fraction=0.5)
    loader = ResumableLoader(ds, batch_size=4, shuffle=True, seed=0, num_workers=2)
    seen = {}
    for batch in loader.iter_epoch(0):
        assert "skipped" not in batch
        for index, target in zip(batch["index"].tolist(), batch["target"].tolist()):
            seen[index] = target
    assert sorted(path for _, _, path, _ in loader.skipped) == sorted(str(p) for p in bad.values())
    assert loader.skip_counts == {0: 4} and all(reason for *_, reason in loader.skipped)
    good = [i for i, p in enumerate(ds.paths) if p not in bad.values()]
    assert sorted(seen) == good and all(seen[i] == int(ds.targets[i]) for i in good)


def test_skip_mode_stops_past_the_fraction(tmp_path):
    hostile_folder(tmp_path)
    ds = ImageFolder(tmp_path, image_size=16, on_bad_file="skip", max_skip_fraction=0.1)
    with pytest.raises(DatasetError, match=r"more than max_skip_fraction=0.1"):
        for _ in ResumableLoader(ds, batch_size=4).iter_epoch(0):
            pass


def test_trainer_logs_skipped_files_and_writes_the_list(tmp_path):
    hostile_folder(tmp_path / "data")
    ds = ImageFolder(tmp_path / "data", image_size=8, on_bad_file="skip", max_skip_fraction=0.5)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 2))
    config = dict(output_dir=str(tmp_path / "run"), max_epochs=2, batch_size=4, tensorboard=False, report=False,
                  checkpoint=None, print_steps=10_000, num_workers=0)
    Trainer(model, config, train_data=ds).fit()
    import json

    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    counts = [line["metrics"]["data/skipped_files"] for line in lines if "data/skipped_files" in line["metrics"]]
    assert counts == [4.0, 4.0], lines
    listed = json.loads((tmp_path / "run" / "skipped_files.json").read_text())
    assert listed["count"] == 8 and {Path(e["path"]).name for e in listed["skipped"]} == {
        "truncated.jpg", "empty.jpg", "notes.jpg", "bomb.png"}


def test_validate_lists_all_bad_files_in_one_pass(tmp_path):
    from trainforge.data.validate import validate_dataset

    bad = hostile_folder(tmp_path)
    report = validate_dataset(ImageFolder(tmp_path))
    assert sorted(path for path, _ in report.bad_files) == sorted(str(p) for p in bad.values())
    assert not report.ok and "4 unreadable" in report.summary()
    shutil.rmtree(tmp_path / "cat")
    (tmp_path / "cat").mkdir()
    with pytest.raises(DatasetError, match="cat' is empty"):
        ImageFolder(tmp_path)
