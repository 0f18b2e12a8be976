from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from trainforge.data import CIFAR10, CIFAR100, MNIST, Digits
from trainforge.errors import DatasetError


def _cifar_python(folder, count=4, fine=False):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    key = b"fine_labels" if fine else b"labels"
    files = ["train", "test"] if fine else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in files:
        data = rng.integers(0, 255, (count, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({key: [i % 3 for i in range(count)], b"data": data}, handle, protocol=2)
    meta = {b"fine_label_names" if fine else b"label_names": [b"apple", b"bee", b"car"]}
    with open(folder / ("meta" if fine else "batches.meta"), "wb") as handle:
        pickle.dump(meta, handle)


def test_cifar10_python_format(tmp_path):
    _cifar_python(tmp_path / "cifar-10-batches-py")
    train, test = CIFAR10(tmp_path), CIFAR10(tmp_path, train=False)
    assert len(train) == 20 and len(test) == 4 and train.classes == ["apple", "bee", "car"]
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb"))[b"data"][1]
    sample = train[1]
    assert sample["input"].shape == (3, 32, 32) and int(sample["target"]) == 1
    expected = torch.from_numpy(raw.reshape(3, 32, 32).astype(np.float32) / 255.0)
    assert torch.equal(sample["input"], expected)  # channel-planar rows land as CHW


def test_cifar_python_refuses_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _cifar_python(folder)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    pickle.dump({b"data": Evil(), b"labels": [0]}, open(folder / "data_batch_3", "wb"))
    with pytest.raises(DatasetError, match=r"data_batch_3.*(posix|os)\.system.*nothing was executed"):
        CIFAR10(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_cifar100_binary_format(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    rows = np.zeros((3, 2 + 3072), np.uint8)
    rows[:, 0], rows[:, 1] = 7, [5, 9, 2]  # coarse, fine
    rows[:, 2:] = 200
    rows.tofile(folder / "train.bin")
    (folder / "fine_label_names.txt").write_text("\n".join(f"c{i}" for i in range(10)))
    ds = CIFAR100(tmp_path)
    assert ds.targets.tolist() == [5, 9, 2] and ds.classes[9] == "c9"
    assert float(ds[0]["input"].max()) == pytest.approx(200 / 255)
    (folder / "train.bin").write_bytes(rows.tobytes()[:-5])
    with pytest.raises(DatasetError, match="not a whole number"):
        CIFAR100(tmp_path)


def test_cifar100_python_and_missing_files(tmp_path):
    _cifar_python(tmp_path / "cifar-100-python", fine=True)
    assert CIFAR100(tmp_path, train=False).classes == ["apple", "bee", "car"]
    with pytest.raises(DatasetError, match="trainforge downloads nothing"):
        CIFAR10(tmp_path / "nowhere")


def _idx(path, array, magic):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    _idx(raw / "t10k-images-idx3-ubyte.gz", images, 0x803)
    _idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([3, 8]), 0x801)
    ds = MNIST(tmp_path, train=False)
    assert len(ds) == 2 and ds[1]["input"].shape == (1, 28, 28) and int(ds[1]["target"]) == 8
    assert MNIST(tmp_path, train=False, image_format="rgb")[0]["input"].shape == (3, 28, 28)
    _idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([3, 8]), 0x803)
    with pytest.raises(DatasetError, match="not an MNIST idx file"):
        MNIST(tmp_path, train=False)


def test_digits_as_a_data_set():
    train, valid = Digits("train"), Digits("valid")
    assert len(train) == 1437 and len(valid) == 360 and train[0]["input"].shape == (1, 8, 8)
    assert train.classes[3] == "3"
