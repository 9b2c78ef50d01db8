"""The container: alignment, atomic writes, and refusal of hostile archives."""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from modelsafe.artifact.reader import ALIGNMENT, open_artifact
from modelsafe.artifact.writer import ArtifactWriter
from modelsafe.checks.data import npy_bytes, npy_load
from modelsafe.errors import FormatError, SaveError, UnsafeArchiveError


def _write(path: Path, members: dict[str, bytes], **kw) -> None:
    with ArtifactWriter(path, **kw) as w:
        for name, data in members.items():
            w.write(name, data)
        w.commit(b"{}")


@pytest.mark.parametrize("name", ["a.msafe", "folder"])
def test_round_trip_and_hash_while_writing(tmp_path, name):
    import hashlib

    data = os.urandom(3 << 20)
    with ArtifactWriter(tmp_path / name) as w:
        record = w.write("x/data.bin", data)
        w.commit(b"{}")
    assert record.sha256 == hashlib.sha256(data).hexdigest() and record.size == len(data)
    with open_artifact(tmp_path / name) as r:
        assert bytes(r.view("x/data.bin")) == data
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporaries left


def test_zip_members_are_stored_and_aligned(tmp_path):
    arrays = {f"w/{i}.npy": np.arange(i + 3, dtype=np.float32) for i in range(7)}
    _write(tmp_path / "a.msafe", {k: bytes(npy_bytes(v)) for k, v in arrays.items()})
    with zipfile.ZipFile(tmp_path / "a.msafe") as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    with open_artifact(tmp_path / "a.msafe") as r:
        for name, expected in arrays.items():
            info = r._infos[name]
            assert r._data_offset(info) % ALIGNMENT == 0
            arr = npy_load(r.view(name), copy=False)
            assert not arr.flags.writeable and np.array_equal(arr, expected)


def test_overwrite_false_refuses_and_keeps_original(tmp_path):
    target = tmp_path / "a.msafe"
    _write(target, {"m": b"first"})
    before = target.read_bytes()
    with pytest.raises(SaveError, match="already exists and overwrite=False"):
        _write(target, {"m": b"second"})
    assert target.read_bytes() == before
    _write(target, {"m": b"second"}, overwrite=True)
    with open_artifact(target) as r:
        assert r.read("m") == b"second"


def test_failed_save_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with ArtifactWriter(tmp_path / "a.msafe") as w:
            w.write("m", b"partial")
            raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError):
        with ArtifactWriter(tmp_path / "dir") as w:
            w.write("m", b"partial")
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_overwrite_of_folder_artifact_is_atomic(tmp_path):
    target = tmp_path / "art"
    _write(target, {"m": b"one"})
    _write(target, {"m": b"two"}, overwrite=True)
    assert (target / "m").read_bytes() == b"two"
    assert sorted(os.listdir(tmp_path)) == ["art"]


def test_overwrite_never_deletes_a_foreign_folder(tmp_path):
    target = tmp_path / "mydata"
    target.mkdir()
    (target / "precious.csv").write_text("1,2,3")
    with pytest.raises(SaveError, match="not a modelsafe artifact"):
        _write(target, {"m": b"x"}, overwrite=True)
    assert (target / "precious.csv").exists()


def _hostile_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]], compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compress) as zf:
        zf.writestr("modelsafe.json", b"{}")
        for info, data in entries:
            zf.writestr(info, data)


@pytest.mark.parametrize("bad", ["../evil.txt", "/etc/passwd", "a/../../evil", "C:/evil", "a\\..\\evil",
                                 "model/./graph.pkl", "model//graph.pkl", "./graph.pkl", "graph.pkl/"])
def test_path_traversal_refused(tmp_path, bad):
    _hostile_zip(tmp_path / "h.msafe", [(bad, b"x")])
    with pytest.raises(UnsafeArchiveError) as err:
        open_artifact(tmp_path / "h.msafe")
    assert err.value.member == bad


def test_symlink_member_refused(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    _hostile_zip(tmp_path / "h.msafe", [(info, b"/etc/passwd")])
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        open_artifact(tmp_path / "h.msafe")


def test_symlink_in_folder_refused(tmp_path):
    art = tmp_path / "art"
    _write(art, {"m": b"x"})
    (art / "leak").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        open_artifact(art)


def test_duplicate_member_refused(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate we write on purpose
        _hostile_zip(tmp_path / "h.msafe", [("m", b"one"), ("m", b"two")])
    with pytest.raises(UnsafeArchiveError, match="appears twice"):
        open_artifact(tmp_path / "h.msafe")


def test_zip_bomb_refused(tmp_path):
    _hostile_zip(tmp_path / "h.msafe", [("bomb", b"\0" * (50 << 20))], compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(UnsafeArchiveError, match="decompression bomb"):
        open_artifact(tmp_path / "h.msafe")


def test_local_header_name_mismatch_refused(tmp_path):
    path = tmp_path / "h.msafe"
    _hostile_zip(path, [("good", b"payload")])
    raw = bytearray(path.read_bytes())
    local = raw.find(b"good")  # the local header comes first; the central directory keeps "good"
    raw[local : local + 4] = b"evil"
    path.write_bytes(bytes(raw))
    with pytest.raises(UnsafeArchiveError, match="local header"):
        with open_artifact(path) as r:
            r.view("good")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"])
def test_non_artifact_files(tmp_path, content):
    path = tmp_path / "x.msafe"
    path.write_bytes(content)
    with pytest.raises(FormatError, match="not a modelsafe artifact"):
        open_artifact(path)


def test_missing_path_and_folder_without_manifest(tmp_path):
    with pytest.raises(FormatError, match="does not exist"):
        open_artifact(tmp_path / "nope.msafe")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="no modelsafe.json"):
        open_artifact(tmp_path / "empty")


def test_alignment_padding_is_valid_extra_field(tmp_path):
    _write(tmp_path / "a.msafe", {"a": b"1", "bb": b"22", "ccc": b"333"})
    with zipfile.ZipFile(tmp_path / "a.msafe") as zf:
        assert zf.testzip() is None
        for info in zf.infolist():
            extra = info.extra
            while extra:
                hid, size = struct.unpack("<HH", extra[:4])
                extra = extra[4 + size :]


def test_a_failed_early_fsync_fails_the_save_and_leaves_nothing(tmp_path, monkeypatch):
    """Linux may report a write-back error to one fsync only: the background one must not be swallowed."""
    import errno

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import modelsafe as ms
    from modelsafe.artifact import writer as _writer
    X = np.random.default_rng(0).normal(size=(30, 3))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    calls = []
    real_fsync = _writer.os.fsync

    def failing_once(fd):
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(_writer.os, "fsync", failing_once)
    with pytest.raises(OSError, match="Input/output error"):
        ms.save(model, tmp_path / "m.msafe", sample=X[:4])
    assert calls and list(tmp_path.iterdir()) == []
