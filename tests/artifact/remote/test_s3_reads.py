"""How a load reads from S3 (moto's server on loopback): a large PyTorch model is held once in memory,
not downloaded into one buffer and then copied into tensors; small members come in a few range
requests, not one (plus one for its header) each; a buffer handed to a flavor is the verified one."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.artifact.integrity import check_members
from modelsafe.artifact.manifest import MemberRecord
from modelsafe.artifact.reader import open_artifact
from modelsafe.artifact.writer import ArtifactWriter


def test_a_large_torch_model_is_held_once_when_loaded_from_s3(s3, fresh):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(4096, 8192)  # 128 MiB of float32 weights
    url = f"s3://{s3['bucket']}/large.msafe"
    ms.save(model, url, sample=np.zeros((1, 4096), "float32"), storage_options=s3["options"])
    out = fresh(f"""
        import modelsafe as ms, torch

        def status(key):
            return next(int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith(key))

        options = {s3['options']!r}
        ms.inspect({url!r}, storage_options=options)  # the S3 client is made before the measure starts
        open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
        before = status("VmRSS:")
        bundle = ms.load({url!r}, storage_options=options)
        size = sum(p.numel() * p.element_size() for p in bundle.model.parameters())
        print(size, status("VmHWM:") - before, bundle.verify().ok)
    """)
    size, growth, verified = out.stdout.split()
    assert int(size) == (4096 * 8192 + 8192) * 4 and verified == "True"
    assert int(growth) < 1.25 * int(size), f"peak grew by {int(growth) / int(size):.2f}x the model"


def _write_many(s3, url: str, count: int, size: int) -> dict[str, MemberRecord]:
    rng = np.random.default_rng(3)
    with ArtifactWriter(url, storage_options=s3["options"]) as writer:
        for i in range(count):
            writer.add(f"model/part-{i:03d}.bin", rng.integers(0, 255, size + i, dtype=np.uint8))
        records = {name: MemberRecord(m.size, m.sha256) for name, m in writer.members.items()}
        writer.commit(b"{}")
    return records


def test_small_members_come_in_a_few_range_requests(s3, caplog):
    url = f"s3://{s3['bucket']}/many-small.msafe"
    records = _write_many(s3, url, 150, 20 << 10)  # 3 MiB in all: beyond the tail read at open
    caplog.set_level(logging.INFO, logger="werkzeug")  # the server's access log
    with open_artifact(url, s3["options"]) as reader:
        caplog.clear()
        check_members(reader, records)
        gets = [r for r in caplog.records if "GET /" in r.getMessage() and "many-small.msafe" in r.getMessage()]
        assert 1 <= len(gets) <= 2, [r.getMessage() for r in gets]
        name = "model/part-042.bin"
        assert reader.view(name).nbytes == records[name].size


def test_a_flipped_byte_in_a_small_member_fetched_ahead_is_caught(s3):
    url = f"s3://{s3['bucket']}/flipped-small.msafe"
    records = _write_many(s3, url, 40, 20 << 10)
    key = url[len("s3://"):]
    blob = bytearray(s3["fs"].cat_file(key))
    with open_artifact(url, s3["options"]) as reader:
        at = reader._data_start("model/part-017.bin") + 5
    blob[at] ^= 0x01
    s3["fs"].pipe_file(key, bytes(blob))
    with open_artifact(url, s3["options"]) as reader, pytest.raises(ms.IntegrityError) as err:
        check_members(reader, records)
    assert err.value.member == "model/part-017.bin"


def test_the_buffer_a_flavor_takes_is_the_one_downloaded_and_checked(s3):
    url = f"s3://{s3['bucket']}/taken.msafe"
    records = _write_many(s3, url, 1, 40 << 20)  # one large member: parallel ranges into one buffer
    with open_artifact(url, s3["options"]) as reader:
        check_members(reader, records)
        name = next(iter(records))
        held = reader._held[name]
        taken = reader.private(name)
        assert taken is held and taken.flags.writeable and taken.nbytes == records[name].size
        import hashlib

        assert hashlib.sha256(taken).hexdigest() == records[name].sha256


def test_an_object_written_elsewhere_after_a_cached_listing_is_found(s3, tmp_path):
    """A long-lived filesystem instance caches listings (fsspec's dircache); an artifact written since by another
    client, unseen by that listing, must still load, and a replaced one load at its new size."""
    import s3fs

    from modelsafe.artifact.location import resolve

    prefix = f"{s3['bucket']}/listed-early"
    fs = resolve(f"s3://{prefix}", s3["options"]).fs  # fsspec's cached instance: the one ms.load reads through
    fs.pipe(f"{prefix}/other.txt", b"x")
    assert fs.ls(prefix)  # the listing of the prefix is now in the instance's cache
    local = tmp_path / "weights.msafe"
    ms.save({"w": np.arange(10)}, local)
    elsewhere = s3fs.S3FileSystem(skip_instance_cache=True, **s3["options"])  # another process's client
    elsewhere.put(str(local), f"{prefix}/weights.msafe")
    url = f"s3://{prefix}/weights.msafe"
    assert ms.load(url, storage_options=s3["options"]).model["w"].tolist() == list(range(10))
    ms.save({"w": np.arange(1000)}, local, overwrite=True)
    elsewhere.put(str(local), f"{prefix}/weights.msafe")
    assert ms.load(url, storage_options=s3["options"]).model["w"].size == 1000


class _Calls:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_scan_streams_a_large_remote_pickle_in_bounded_memory(s3, fresh):
    """A 96 MiB pickle whose dangerous call comes after its payload: the scan reads to the end, in a few
    read-ahead blocks of memory, and reports the call."""
    import pickle

    size = 96 << 20
    data = pickle.dumps([b"\0" * size, _Calls()], protocol=4)
    url = f"s3://{s3['bucket']}/large.pkl"
    s3["fs"].pipe(f"{s3['bucket']}/large.pkl", data)
    s3["fs"].pipe(f"{s3['bucket']}/small.pkl", pickle.dumps([1, 2, 3]))
    del data
    out = fresh(f"""
        import modelsafe as ms

        def status(key):
            return next(int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith(key))

        options = {s3['options']!r}
        assert ms.scan({f"s3://{s3['bucket']}/small.pkl"!r}, storage_options=options).ok  # the client, made first
        open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
        before = status("VmRSS:")
        report = ms.scan({url!r}, storage_options=options)
        print(status("VmHWM:") - before, report.ok, "os.system" in str(report))
    """)
    growth, ok, named = out.stdout.split()
    assert ok == "False" and named == "True"
    assert int(growth) < 48 << 20, f"the scan's peak grew by {int(growth) >> 20} MiB for a {size >> 20} MiB file"
