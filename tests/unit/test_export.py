"""safetensors export: bitwise round trips, tied weights, JSON metadata, atomic overwrite of an mmap-ed
file (B24), and adversarial files that must only raise ModelLoadError (B18)."""

from __future__ import annotations

import errno
import json
import mmap
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from trainforge.errors import ModelLoadError
from trainforge.export import MAX_HEADER_BYTES, export_safetensors, load_safetensors
from trainforge.export import weights as export  # the module that writes and reads safetensors


class TiedNet(torch.nn.Module):
    """An embedding tied to the output layer, plus buffers (BatchNorm) of several dtypes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.norm = torch.nn.BatchNorm1d(4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, x):
        return self.head(self.norm(self.embed(x)))


def assert_bitwise(expected: dict, actual: dict) -> None:
    assert sorted(expected) == sorted(actual)
    for name, tensor in expected.items():
        got = actual[name]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape, name
        assert torch.equal(got, tensor.detach().cpu()), name


def test_round_trip_is_bitwise_for_many_dtypes_and_layouts(tmp_path):
    torch.manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 5),
        "f16": torch.randn(4).half(),
        "bf16": torch.randn(4).bfloat16(),
        "f64": torch.randn(2, dtype=torch.float64),
        "i64": torch.arange(7),
        "u8": torch.randint(0, 255, (6,), dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "transposed": torch.randn(3, 4).t(),  # non-contiguous
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.randn(2)),
    }
    loaded, metadata = load_safetensors(export_safetensors(tensors, tmp_path / "w.safetensors"))
    assert_bitwise(tensors, loaded)
    assert metadata == {}
    assert all(t.is_contiguous() and not t.requires_grad for t in loaded.values())


def test_module_export_restores_tied_weights(tmp_path):
    model = TiedNet()
    model(torch.tensor([1, 2, 3]))  # moves the BatchNorm running statistics
    path = export_safetensors(model, tmp_path / "tied.safetensors")
    with safe_open(path, "pt") as f:  # stored once, under the first name
        assert sorted(f.keys()) == sorted(k for k in model.state_dict() if k != "head.weight")
    tensors, _ = load_safetensors(path)
    assert tensors["head.weight"] is tensors["embed.weight"]
    assert_bitwise(model.state_dict(), tensors)
    fresh = TiedNet().eval()
    fresh.load_state_dict(tensors)
    assert fresh.head.weight is fresh.embed.weight
    assert torch.equal(fresh(torch.tensor([4, 5])), model.eval()(torch.tensor([4, 5])))


def test_partly_overlapping_views_are_stored_as_copies(tmp_path):
    base = torch.arange(6.0)
    tensors, _ = load_safetensors(export_safetensors({"all": base, "tail": base[2:]}, tmp_path / "v.safetensors"))
    assert tensors["all"].tolist() == base.tolist() and tensors["tail"].tolist() == [2.0, 3.0, 4.0, 5.0]


def test_metadata_round_trips_as_json(tmp_path):
    metadata = {
        "class_names": ["cat", "dog", "ünïcode"],
        "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "image_size": [224, 224]},
        "num_classes": 3,
        "note": "plain string",
        "missing": None,
    }
    path = export_safetensors({"w": torch.ones(1)}, tmp_path / "m.safetensors", metadata)
    assert load_safetensors(path)[1] == metadata
    with safe_open(path, "pt") as f:  # other tools see a standard file
        assert f.metadata()["format"] == "pt"
        assert json.loads(f.metadata()["class_names"]) == metadata["class_names"]


def test_bad_metadata_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="'format'"):
        export_safetensors({"w": torch.ones(1)}, tmp_path / "a.safetensors", {"format": "tf"})
    with pytest.raises(TypeError, match="metadata\\['mean'\\]"):
        export_safetensors({"w": torch.ones(1)}, tmp_path / "a.safetensors", {"mean": torch.ones(3)})
    with pytest.raises(TypeError, match="'extra'"):
        export_safetensors({"w": torch.ones(1), "extra": 3}, tmp_path / "a.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_files_from_other_tools_load_with_raw_metadata(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, path, metadata={"format": "pt", "author": "someone"})
    tensors, metadata = load_safetensors(path)
    assert metadata == {"format": "pt", "author": "someone"} and tensors["w"].tolist() == [1.0, 1.0]


def test_failed_export_keeps_the_old_file(tmp_path, monkeypatch):
    path = export_safetensors({"w": torch.zeros(3)}, tmp_path / "w.safetensors")
    before = path.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export.os, "fsync", full_disk)  # the same os module checkpoint.py uses
    with pytest.raises(OSError, match="No space left"):
        export_safetensors({"w": torch.ones(3)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


# -- overwrite while mmap-ed (B24) -----------------------------------------------------------------
def test_exporting_over_an_mmap_loaded_file_leaves_its_readers_intact(tmp_path):
    path = export_safetensors({"w": torch.arange(4096.0)}, tmp_path / "w.safetensors")
    original = path.read_bytes()
    with safe_open(path, "pt") as reader, open(path, "rb") as raw:
        mapped_tensor = reader.get_tensor("w")  # safetensors' default loader maps the file
        mapped = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
        export_safetensors({"w": -torch.arange(4096.0)}, path)
        assert mapped[:] == original
        assert torch.equal(mapped_tensor, torch.arange(4096.0))
        assert torch.equal(reader.get_tensor("w"), torch.arange(4096.0))
        mapped.close()
    assert torch.equal(load_safetensors(path)[0]["w"], -torch.arange(4096.0))


def test_control_an_in_place_rewrite_does_corrupt_mmap_readers(tmp_path):
    """Shows the test above can fail: writing into the same inode changes what readers see."""
    path = export_safetensors({"w": torch.arange(4096.0)}, tmp_path / "w.safetensors")
    with open(path, "rb") as raw:
        mapped = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
        original = mapped[:]
        with open(path, "r+b") as writer:
            writer.write(b"\0" * 64)
        assert mapped[:] != original
        mapped.close()


def test_loaded_tensors_do_not_follow_later_writes(tmp_path):
    path = export_safetensors({"w": torch.arange(4096.0)}, tmp_path / "w.safetensors")
    tensors, _ = load_safetensors(path)
    size = path.stat().st_size
    with open(path, "r+b") as writer:
        writer.seek(size - 4096)
        writer.write(b"\xff" * 4096)
    assert torch.equal(tensors["w"], torch.arange(4096.0))


# -- adversarial files (B18) -----------------------------------------------------------------------
def safetensors_bytes(header: dict | list | bytes, payload: bytes = b"", declared: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if declared is None else declared) + raw + payload


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


ADVERSARIAL = {
    "empty": b"",
    "two_bytes": b"\x01\x02",
    "header_longer_than_file": safetensors_bytes({"w": entry()}, bytes(8), declared=10_000),
    "header_over_limit": safetensors_bytes(b"{}", declared=MAX_HEADER_BYTES + 1),
    "bad_json": safetensors_bytes(b"{not json", bytes(8)),
    "not_an_object": safetensors_bytes([1, 2, 3]),
    "duplicate_keys": safetensors_bytes(
        b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
        b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
        bytes(8),
    ),
    "offsets_out_of_range": safetensors_bytes({"w": entry(offsets=(0, 8000))}, bytes(8)),
    "overlapping_offsets": safetensors_bytes({"a": entry(offsets=(0, 8)), "b": entry(offsets=(4, 12))}, bytes(12)),
    "hole_in_data": safetensors_bytes({"a": entry(offsets=(0, 8)), "b": entry(offsets=(16, 24))}, bytes(24)),
    "shape_mismatch": safetensors_bytes({"w": entry(shape=(3,))}, bytes(8)),
    "huge_declared_shape": safetensors_bytes({"w": entry(shape=(1 << 40, 1 << 40))}, bytes(8)),
    "unknown_dtype": safetensors_bytes({"w": entry(dtype="X99")}, bytes(8)),
    "non_string_metadata": safetensors_bytes({"__metadata__": {"a": 1}, "w": entry()}, bytes(8)),
    "bad_alias_map": safetensors_bytes(
        {"__metadata__": {"trainforge.aliases": '{"b": "missing"}'}, "w": entry()}, bytes(8)
    ),
    "bad_json_metadata_value": safetensors_bytes(
        {"__metadata__": {"trainforge.encoding": "json", "x": "{"}, "w": entry()}, bytes(8)
    ),
}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_adversarial_file_raises_model_load_error_naming_it(tmp_path, case):
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(ADVERSARIAL[case])
    with pytest.raises(ModelLoadError, match=case):
        load_safetensors(path)


def test_huge_header_length_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:  # a sparse 150 MB file: the length fits, the limit does not
        f.write(struct.pack("<Q", 150 << 20))
        f.truncate(8 + (150 << 20))
    reads = []

    class RecordingFile:
        def __init__(self, *args, **kwargs):
            self.handle = open(*args, **kwargs)

        def read(self, n=-1):
            reads.append(n)
            return self.handle.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(export, "open", RecordingFile, raising=False)  # shadows the builtin in export/weights.py
    with pytest.raises(ModelLoadError, match="limit"):
        load_safetensors(path)
    assert reads == [8]  # only the length prefix was read
    with pytest.raises(ModelLoadError, match="absent"):
        load_safetensors(tmp_path / "absent.safetensors")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.floats(0, 1)))  # fmt: skip
def test_fuzzed_files_only_raise_model_load_error(tmp_path, edits, cut):
    model = TiedNet()
    data = bytearray(
        (export_safetensors(model, tmp_path / "seed.safetensors", {"class_names": ["a", "b"]})).read_bytes()
    )
    for position, value in edits:
        data[int(position * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(data))
    try:
        load_safetensors(path)
    except ModelLoadError as exc:
        assert "fuzz.safetensors" in str(exc)
