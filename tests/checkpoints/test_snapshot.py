"""Host-memory snapshots of async checkpoints: the copy the training loop waits for."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from modelsafe.checkpoints import write as _checkpoint_write
from modelsafe.checkpoints.write import HostSnapshot


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming-stores", "numpy-copy"])
@pytest.mark.parametrize("sizes", [[5], [1, 2, 3], [100, 1, 40, 0, 77], [9] * 13, [0, 0, 64], [70, 300]])
def test_copies_split_over_two_threads_land_in_order(monkeypatch, sizes, streaming):
    if not streaming:  # as installed without a C compiler
        monkeypatch.setitem(sys.modules, "modelsafe._native", None)
    assert (_checkpoint_write._large_copy() is np.copyto) is not streaming
    monkeypatch.setattr(_checkpoint_write, "_PARALLEL_COPY", 1)  # share even the smallest copy
    monkeypatch.setattr(_checkpoint_write, "_COPY_CHUNK", 7)  # and cut pieces into chunks
    rng = np.random.default_rng(len(sizes))
    pieces = [rng.integers(0, 255, size=n, dtype=np.uint8).tobytes() for n in sizes]
    total = sum(sizes)
    snapshot = HostSnapshot({})
    snapshot.add("m", pieces, size=max(total, _checkpoint_write._BUFFERED))
    data = snapshot._data["m"]
    assert bytes(np.asarray(data)) == b"".join(pieces) and snapshot.nbytes == total


def test_more_bytes_than_announced_are_kept_too(monkeypatch):
    monkeypatch.setattr(_checkpoint_write, "_BUFFERED", 4)
    snapshot = HostSnapshot({})
    with snapshot.open_member("m", size=4) as out:
        out.write(b"abc")
        out.write_pieces([b"de", b"fgh"])
    assert b"".join(snapshot._data["m"]) == b"abcdefgh" and snapshot.nbytes == 8


def test_snapshot_buffers_are_reused_and_hold_the_state_of_the_call():
    buffers: dict = {}
    live = np.arange(1 << 20, dtype=np.uint8)
    first = HostSnapshot(buffers)
    first.add("w", [memoryview(live)], size=live.nbytes)
    kept = buffers["w"]
    live += 1  # training goes on
    assert np.array_equal(first._data["w"], (np.arange(1 << 20) % 256).astype(np.uint8))
    second = HostSnapshot(buffers)
    second.add("w", [memoryview(live)], size=live.nbytes)
    assert buffers["w"] is kept  # the same memory, copied into again
