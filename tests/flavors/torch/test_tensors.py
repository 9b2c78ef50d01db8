"""The safetensors writer/reader behind the PyTorch flavor (and checkpoints)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelsafe.artifact.reader import open_artifact
from modelsafe.artifact.writer import ArtifactWriter
from modelsafe.errors import FormatError, SaveError
from modelsafe.flavors._base import ComponentSource, ComponentStore

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
from modelsafe.flavors.torch.tensors import (  # noqa: E402
    ALIASES_KEY,
    host_bytes,
    shard,
    split_aliases,
    write_tensors,
)
from modelsafe.flavors.torch.tensors_read import parse_header, read_header, read_tensors  # noqa: E402

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool, torch.uint16, torch.uint32, torch.uint64, torch.complex64,
          torch.float8_e4m3fn, torch.float8_e5m2]


def _write(path: Path, tensors, **kwargs) -> dict:
    with ArtifactWriter(path) as writer:
        record = write_tensors(ComponentStore(writer, "c"), "t.safetensors", tensors, **kwargs)
        writer.commit(b"{}")
    return record


def _read(path: Path, **kwargs):
    reader = open_artifact(path)
    return reader, read_tensors(ComponentSource(reader, "c"), "t.safetensors", **kwargs)


def _same_bytes(a, b) -> bool:
    """Bit-for-bit equality (float8 has no torch.equal)."""
    return bytes(host_bytes(a)) == bytes(host_bytes(b))


def _sample_tensors():
    gen = torch.Generator().manual_seed(0)
    out = {}
    for i, dtype in enumerate(DTYPES):
        base = torch.randn(3, 5, generator=gen) * 10
        out[f"t{i}.{str(dtype)[6:]}"] = base.to(dtype) if dtype not in (torch.uint16, torch.uint32, torch.uint64) \
            else base.abs().to(torch.int64).to(dtype)
    out["scalar"] = torch.tensor(2.5)
    out["empty"] = torch.zeros(0, 4)
    out["strided"] = torch.arange(24.0).reshape(4, 6)[:, ::2]
    return out


@pytest.mark.parametrize("single_file", [True, False])
def test_every_dtype_round_trips_and_safetensors_reads_the_member(tmp_path, single_file):
    tensors = _sample_tensors()
    path = tmp_path / ("a.msafe" if single_file else "a")
    record = _write(path, tensors)
    assert record["tensors"] == len(tensors) and not record["aliases"]
    reader, back = _read(path)
    try:
        assert set(back) == set(tensors)
        for name, tensor in tensors.items():
            assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
            assert _same_bytes(back[name], tensor), name
        raw = bytes(reader.view("c/t.safetensors"))
    finally:
        reader.close()
    theirs = safetensors_torch.load(raw)
    assert set(theirs) == set(tensors)
    for name in ("t1.float32", "t3.bfloat16", "t9.bool", "scalar", "empty", "strided"):
        assert torch.equal(theirs[name], tensors[name].contiguous()), name
    if not single_file:
        from safetensors import safe_open

        with safe_open(str(path / "c" / "t.safetensors"), framework="pt") as f:
            assert f.metadata()["format"] == "pt"
            assert torch.equal(f.get_tensor("t1.float32"), tensors["t1.float32"])


def test_data_starts_aligned_and_widest_items_first(tmp_path):
    _write(tmp_path / "a.msafe", {"b": torch.ones(3, dtype=torch.int8), "a": torch.ones(5, dtype=torch.float64)})
    reader = open_artifact(tmp_path / "a.msafe")
    try:
        header = read_header(ComponentSource(reader, "c"), "t.safetensors")
        fd, offset = reader.locate("c/t.safetensors")
    finally:
        reader.close()
    assert header.data_start % 64 == 0 and offset % 64 == 0
    assert header.entries["a"].start == 0 and header.entries["b"].start == 40


def test_tied_tensors_are_stored_once_and_come_back_as_one(tmp_path):
    weight = torch.randn(100, 16)
    record = _write(tmp_path / "a.msafe", {"emb.weight": weight, "head.weight": weight, "bias": torch.zeros(3)})
    assert record["aliases"] == {"head.weight": "emb.weight"}
    assert record["bytes"] < 100 * 16 * 4 + 3 * 4 + 1024
    reader, back = _read(tmp_path / "a.msafe")
    reader.close()
    assert back["head.weight"] is back["emb.weight"] and torch.equal(back["emb.weight"], weight)
    # a view with another shape shares storage but is not a tie: it is stored on its own
    unique, aliases = split_aliases({"w": weight, "row": weight[0]})
    assert set(unique) == {"w", "row"} and aliases == {}


def test_contiguous_cpu_tensors_are_written_without_a_copy():
    tensor = torch.randn(64, 64)
    view = host_bytes(tensor)
    assert np.frombuffer(view, dtype=np.uint8).ctypes.data == tensor.data_ptr()
    strided = tensor.t()
    assert np.frombuffer(host_bytes(strided), dtype=np.uint8).ctypes.data != strided.data_ptr()


def test_shards_balance_bytes_and_keep_order():
    tensors = {f"k{i}": torch.zeros(100 * (i + 1)) for i in range(10)}
    groups = shard(tensors, 2)
    assert len(groups) == 2 and [k for g in groups for k in g] == list(tensors)
    sizes = [sum(t.numel() for t in g.values()) for g in groups]
    assert abs(sizes[0] - sizes[1]) <= 1000


def test_unstorable_tensors_name_the_key(tmp_path):
    with pytest.raises(SaveError, match="'s' has layout torch.sparse_coo"):
        _write(tmp_path / "a.msafe", {"s": torch.eye(3).to_sparse()})
    with pytest.raises(SaveError, match="'m' is on the meta device"):
        _write(tmp_path / "b.msafe", {"m": torch.empty(3, device="meta")})
    with pytest.raises(SaveError, match="dtype torch.complex128"):
        _write(tmp_path / "c.msafe", {"c": torch.zeros(2, dtype=torch.complex128)})
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------
# crafted headers: refused before any tensor is read
# ---------------------------------------------------------------------------------------


def _member(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("member, needle", [
    (b"\x01\x02", "shorter than the 8-byte header length"),
    (struct.pack("<Q", 1 << 40) + b"{}", "its header claims"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (struct.pack("<Q", 3) + b"{\xff}", "not JSON"),
    (_member({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
     "cover 8 bytes but the data section holds 4"),
    (_member({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4), "spans 4 bytes"),
    (_member({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
              "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8), "starts at byte 0, expected 4"),
    (_member({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), "starts at byte 4, expected 0"),
    (_member({"a": {"dtype": "X99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "unknown dtype"),
    (_member({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "invalid shape"),
    (_member({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}}, b"\0" * 4), "malformed"),
    (_member({"__metadata__": {ALIASES_KEY: json.dumps({"b": "zzz"})},
              "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "alias table"),
    (_member({"__metadata__": {"k": 1}}), "__metadata__ is not a mapping of strings"),
])
def test_crafted_headers_are_refused(member, needle):
    with pytest.raises(FormatError, match=needle):
        parse_header(memoryview(member), "c/t.safetensors")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_corruption_of_the_header_is_refused_or_consistent(data):
    valid = _member({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                     "b": {"dtype": "I8", "shape": [3], "data_offsets": [16, 19]}}, b"\1" * 19)
    raw = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        header = parse_header(memoryview(bytes(raw)), "x")
    except FormatError:
        return
    end = max((e.end for e in header.entries.values()), default=0)
    assert header.data_start + end == len(raw)  # whatever parses, tiles the data exactly


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([torch.float32, torch.int64, torch.bfloat16, torch.bool, torch.uint8]),
                          st.lists(st.integers(0, 4), max_size=3)), min_size=1, max_size=6))
def test_random_state_dicts_round_trip(tmp_path_factory, specs):
    path = tmp_path_factory.mktemp("prop") / "a.msafe"
    tensors = {f"layer{i}.w": (torch.rand(shape) * 100).to(dtype) for i, (dtype, shape) in enumerate(specs)}
    _write(path, tensors)
    reader, back = _read(path)
    reader.close()
    assert set(back) == set(tensors)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor)


@pytest.mark.parametrize("single_file", [True, False])
def test_mapped_tensors_are_private_and_outlive_the_reader(tmp_path, single_file):
    path = tmp_path / ("a.msafe" if single_file else "a")
    tensors = {"a": torch.arange(10.0), "b": torch.ones(3, dtype=torch.int64), "h": torch.ones(4).half()}
    _write(path, tensors)
    reader, back = _read(path, mmap=True)
    reader.close()  # the map belongs to the tensors now
    assert {k: v.untyped_storage().nbytes() for k, v in back.items()} == {"a": 40, "b": 24, "h": 8}
    back["a"] += 1  # copy-on-write: the artifact is untouched
    reader, again = _read(path, mmap=True)
    reader.close()
    assert torch.equal(again["a"], torch.arange(10.0)) and torch.equal(back["a"], torch.arange(10.0) + 1)
    safetensors_torch.save_file(again, str(tmp_path / "resaved.safetensors"))  # no shared-storage complaint
    assert torch.equal(safetensors_torch.load_file(str(tmp_path / "resaved.safetensors"))["h"], tensors["h"])
