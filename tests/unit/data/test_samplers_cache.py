from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from imagegen import image_folder, save_image, write_csv

from trainforge.data import (
    ClassBalancedSampler,
    ImageClassificationDataset,
    ImageFolder,
    ResumableLoader,
    WeightedSampler,
    build_cache,
)
from trainforge.errors import ConfigError, CorruptImageError


# -- samplers ----------------------------------------------------------------------------------------
def test_class_balanced_order_is_resumable_and_sharded():
    labels = [0] * 90 + [1] * 10
    sampler = ClassBalancedSampler(labels)
    data = torch.utils.data.TensorDataset(torch.arange(100.0))
    loader = ResumableLoader(data, batch_size=10, sampler=sampler, seed=3)
    full = [b["index"].tolist() for b in loader.iter_epoch(2)]
    assert [b["index"].tolist() for b in loader.iter_epoch(2, start=4)] == full[4:]  # mid-epoch resume
    assert full != [b["index"].tolist() for b in loader.iter_epoch(3)]  # a new order each epoch
    drawn = torch.tensor([i for batch in full for i in batch])
    assert 0.3 < float((drawn >= 90).float().mean()) < 0.7  # 10 % of the data, about half the draws
    ranks = [ResumableLoader(data, batch_size=5, sampler=sampler, seed=3, rank=r, world_size=2).indices(2)
             for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted(drawn.tolist()) and ranks[0] != ranks[1]


def test_weighted_by_column(tmp_path):
    for name in ("a", "b", "c"):
        save_image(tmp_path / f"{name}.png")
    write_csv(tmp_path / "w.csv", "image_path,label,weight", ["a.png,0,0", "b.png,1,1", "c.png,0,3"])
    ds = ImageClassificationDataset(tmp_path, "w.csv")
    sampler = WeightedSampler(ds, "weight", num_samples=400)
    drawn = sampler.indices(0, 0)
    assert 0 not in drawn and 250 < drawn.count(2) < 350
    with pytest.raises(ConfigError, match="no column 'wieght'"):
        WeightedSampler(ds, "wieght")
    with pytest.raises(ConfigError, match="finite and >= 0"):
        WeightedSampler(weights=[-1, 1])
    write_csv(tmp_path / "bad.csv", "image_path,label,weight", ["a.png,0,heavy"])
    with pytest.raises(ConfigError, match="'heavy'"):
        WeightedSampler(ImageClassificationDataset(tmp_path, "bad.csv"), "weight")


def test_trainer_draws_from_the_data_sets_sampler(tmp_path):
    from torch import nn

    from trainforge import Trainer

    ds = ImageFolder(image_folder(tmp_path / "data", ("a", "b"), per_class=4, size=(4, 4)))
    ds.sampler = ClassBalancedSampler(ds, num_samples=6)
    seen = []

    class Record:
        def on_batch_end(self, state):
            seen.extend(state.batch["index"].tolist())

    config = dict(output_dir=str(tmp_path / "run"), max_epochs=1, batch_size=3, tensorboard=False, report=False,
                  checkpoint=None, print_steps=10_000, seed=5)
    Trainer(nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), config, train_data=ds, callbacks=[Record()]).fit()
    assert seen == ds.sampler.indices(5, 0)


# -- decode-once cache ---------------------------------------------------------------------------------
def test_cache_matches_uncached_and_is_reused(tmp_path):
    root = image_folder(tmp_path / "data", ("a", "b"), per_class=3, size=(40, 30))
    plain = ImageFolder(root, image_size=16)
    cached = ImageFolder(root, image_size=16, cache=True, cache_dir=tmp_path / "cache")
    for i in range(len(plain)):
        assert torch.equal(plain[i]["input"], cached[i]["input"])
        assert int(plain[i]["target"]) == int(cached[i]["target"])
    folder = cached.decoded_cache.folder
    stamp = os.stat(folder / "images.npy").st_mtime_ns
    again = ImageFolder(root, image_size=16, cache=True, cache_dir=tmp_path / "cache")
    assert again.decoded_cache.folder == folder and os.stat(folder / "images.npy").st_mtime_ns == stamp
    assert np.load(folder / "targets.npy").tolist() == plain.targets.tolist()


@pytest.mark.parametrize("change", ["touch", "resize", "new_file", "format"])
def test_cache_is_rebuilt_when_inputs_change(tmp_path, change):
    root = image_folder(tmp_path / "data", ("a", "b"), per_class=2, size=(20, 20))
    first = ImageFolder(root, image_size=8, cache=True, cache_dir=tmp_path / "cache").decoded_cache
    fingerprint = first.meta["fingerprint"]
    size, image_format = 8, "rgb"
    if change == "touch":
        time.sleep(0.01)
        save_image(root / "a" / "0.png", (20, 20), color=(1, 2, 3))  # new content, same name
    elif change == "resize":
        size = 12
    elif change == "new_file":
        save_image(root / "b" / "9.png", (20, 20))
    else:
        image_format = "gray"
    second = ImageFolder(root, image_size=size, image_format=image_format, cache=True, cache_dir=tmp_path / "cache")
    assert second.decoded_cache.meta["fingerprint"] != fingerprint
    assert second.decoded_cache.images.shape[1] == size and len(second.decoded_cache) == len(second)
    if change == "touch":
        assert second[0]["input"][:, 0, 0].mul(255).round().tolist() == [1.0, 2.0, 3.0]


def test_cache_needs_a_size_and_records_bad_files(tmp_path):
    root = image_folder(tmp_path / "data", ("a",), per_class=2)
    with pytest.raises(ConfigError, match="image_size"):
        ImageFolder(root, cache=True, cache_dir=tmp_path / "cache")
    (root / "a" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(CorruptImageError, match=r"broken\.png"):
        ImageFolder(root, image_size=8, cache=True, cache_dir=tmp_path / "cache")
    ds = ImageFolder(root, image_size=8, cache=True, cache_dir=tmp_path / "cache", on_bad_file="skip",
                     max_skip_fraction=0.5)
    meta = json.loads((ds.decoded_cache.folder / "meta.json").read_text())
    assert list(meta["bad"]) == ["2"] and "broken.png" in meta["bad"]["2"]
    loader = ResumableLoader(ds, batch_size=3, num_workers=0)
    batches = list(loader)
    assert batches[0]["index"].tolist() == [0, 1] and [p for _, _, p, _ in loader.skipped] == [str(ds.paths[2])]


def test_cached_workers_and_device_tensors(tmp_path):
    root = image_folder(tmp_path / "data", ("a", "b"), per_class=4, size=(20, 20))
    ds = ImageFolder(root, image_size=8, cache=True, cache_dir=tmp_path / "cache")
    through_workers = list(ResumableLoader(ds, batch_size=4, shuffle=True, seed=1, num_workers=2).iter_epoch(0))
    direct = list(ResumableLoader(ds, batch_size=4, shuffle=True, seed=1).iter_epoch(0))
    assert all(torch.equal(a["input"], b["input"]) for a, b in zip(through_workers, direct))
    on_device = ds.on_device("cpu")
    images, targets = on_device.tensors
    assert images.shape == (8, 3, 8, 8) and images.dtype == torch.float32 and targets.tolist() == ds.targets.tolist()
    assert torch.equal(images[5], ds[5]["input"])
    with pytest.raises(ConfigError, match="cache=True"):
        ImageFolder(root, image_size=8).on_device("cpu")


def test_one_process_builds_while_the_other_waits(tmp_path):
    import multiprocessing

    root = image_folder(tmp_path / "data", ("a", "b"), per_class=6, size=(64, 64))
    with multiprocessing.get_context("fork").Pool(2) as pool:
        built = pool.starmap(_build_in_child, [(str(root), str(tmp_path / "cache"))] * 2)
    assert built[0] == built[1]  # the same folder and the same file: the second process found it built
    ds = ImageFolder(root, image_size=8)
    cached = np.load(os.path.join(built[0][0], "images.npy"))
    assert cached.shape == (12, 8, 8, 3) and np.array_equal(cached[3], ds.read(ds.paths[3]))


def _build_in_child(root: str, cache_dir: str) -> tuple[str, int]:
    folder = build_cache(ImageFolder(root, image_size=8), cache_dir).folder
    return str(folder), os.stat(folder / "images.npy").st_ino


def test_device_resident_tensors_are_sliced_in_process_even_with_workers():
    resident = torch.utils.data.TensorDataset(torch.empty(10, 3, device="meta"), torch.empty(10, device="meta"))
    loader = ResumableLoader(resident, batch_size=4, num_workers=2, pin_memory=True)
    batches = list(loader.iter_epoch(0))
    assert [b["input"].device.type for b in batches] == ["meta"] * 3 and batches[2]["index"].tolist() == [8, 9]
