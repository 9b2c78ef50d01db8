"""The single-file container writer: valid zip files, for zipfile and for modelsafe's reader.

Its output is checked with :mod:`zipfile` (CRC-32 of every member via ``testzip``), and the
ZIP64 forms are reached by lowering the limit, so no test needs gigabytes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from modelsafe.artifact import writer as _writer
from modelsafe.artifact import zipwrite as _zipwrite
from modelsafe.artifact.reader import ALIGNMENT, open_artifact
from modelsafe.artifact.writer import ArtifactWriter


def _members() -> dict[str, list[bytes]]:
    """Member name -> the pieces it is written from (empty, small, many small, large, non-ASCII)."""
    return {
        "empty.bin": [],
        "one.txt": [b"x"],
        "pieces/forest.bin": [os.urandom(n) for n in (8, 160, 70_000, 3, 130_000, 0, 17)],
        "big.bin": [os.urandom(3 << 20)],
        "données/é.npy": [b"caf\xc3\xa9" * 100],
    }


def _save(path: Path, members: dict[str, list[bytes]], streamed: bool = False) -> None:
    with ArtifactWriter(path) as writer:
        for name, pieces in members.items():
            if streamed:  # size unknown up front: the ZIP64 local header, sizes patched afterwards
                with writer.open_member(name) as out:
                    out.write_pieces(pieces)
            else:
                writer.add(name, pieces)
        writer.commit(b'{"manifest": true}')


def _check(path: Path, members: dict[str, list[bytes]]) -> None:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # every CRC-32 matches
        assert zf.namelist() == [*members, "modelsafe.json"]
        for name, pieces in members.items():
            info = zf.getinfo(name)
            assert info.compress_type == zipfile.ZIP_STORED
            assert zf.read(name) == b"".join(pieces)
            assert info.external_attr >> 16 == 0o100644
    if shutil.which("unzip"):  # Info-ZIP too, where installed: not only Python's reader
        result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
        assert result.returncode == 0 and "No errors detected" in result.stdout, result.stdout + result.stderr
    with open_artifact(path) as reader:
        for name, pieces in members.items():
            data = b"".join(pieces)
            assert bytes(reader.view(name)) == data
            if data:
                assert reader._data_offset(reader._infos[name]) % ALIGNMENT == 0


@pytest.mark.parametrize("streamed", [False, True], ids=["add", "open_member"])
def test_members_read_back_with_zipfile_and_modelsafe(tmp_path, streamed):
    members = _members()
    _save(tmp_path / "a.msafe", members, streamed)
    _check(tmp_path / "a.msafe", members)


def test_digest_of_many_small_buffers_matches_their_concatenation(tmp_path, monkeypatch):
    monkeypatch.setattr(_writer, "_BLOCK", 4096)  # pieces are gathered into several blocks
    pieces = [os.urandom(n) for n in (1, 1500, 4095, 4096, 4097, 20_000, 7, 0, 900)]
    with ArtifactWriter(tmp_path / "a.msafe") as writer:
        writer.add("m", pieces)
        record = writer.members["m"]
        writer.commit(b"{}")
    assert record.sha256 == hashlib.sha256(b"".join(pieces)).hexdigest()
    _check(tmp_path / "a.msafe", {"m": pieces})


def test_zip64_records_when_sizes_offsets_and_directory_pass_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(_zipwrite, "ZIP64_LIMIT", 1000)
    members = _members()
    _save(tmp_path / "a.msafe", members)
    data = (tmp_path / "a.msafe").read_bytes()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # ZIP64 end record and its locator
    _check(tmp_path / "a.msafe", members)
    with zipfile.ZipFile(tmp_path / "a.msafe") as zf:
        info = zf.getinfo("big.bin")
        assert info.file_size == 3 << 20 and info.header_offset > 1000


def test_member_count_past_the_16_bit_field(tmp_path, monkeypatch):
    monkeypatch.setattr(_zipwrite, "ZIP64_COUNT", 5)
    members = {f"m{i}": [bytes([i])] for i in range(7)}
    _save(tmp_path / "a.msafe", members)
    _check(tmp_path / "a.msafe", members)


def test_short_writes_resume_where_they_stopped(tmp_path, monkeypatch):
    real = os.writev

    def at_most_5_bytes(fd, buffers):
        first = next((memoryview(b) for b in buffers if len(memoryview(b))), memoryview(b""))
        return real(fd, [first[:5]])

    monkeypatch.setattr(_zipwrite.os, "writev", at_most_5_bytes)
    members = {"a": [b"hello ", b"", b"world", os.urandom(1000)], "b": [b"x" * 12]}
    _save(tmp_path / "a.msafe", members)
    _check(tmp_path / "a.msafe", members)


def test_a_failing_write_fails_the_save_and_leaves_nothing(tmp_path, monkeypatch):
    def disk_full(fd, buffers):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_zipwrite.os, "writev", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _save(tmp_path / "a.msafe", {"m": [b"data"]})
    assert list(tmp_path.iterdir()) == []


def test_buffers_that_are_not_bytes_are_written_as_their_bytes(tmp_path):
    import numpy as np

    grid = np.arange(12, dtype=np.float64).reshape(3, 4)
    _save(tmp_path / "a.msafe", {"grid": [grid, memoryview(b"tail")]})
    with zipfile.ZipFile(tmp_path / "a.msafe") as zf:
        assert zf.read("grid") == grid.tobytes() + b"tail"
