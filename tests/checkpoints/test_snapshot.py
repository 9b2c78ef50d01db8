"""Host-memory snapshots of async checkpoints: the copy the training loop waits for."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.checkpoints import snapshot as _snapshot
from modelsafe.checkpoints.snapshot import HostSnapshot


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming-stores", "numpy-copy"])
@pytest.mark.parametrize("sizes", [[5], [1, 2, 3], [100, 1, 40, 0, 77], [9] * 13, [0, 0, 64], [70, 300]])
def test_copies_split_over_two_threads_land_in_order(monkeypatch, sizes, streaming):
    if not streaming:  # as installed without a C compiler
        monkeypatch.setitem(sys.modules, "modelsafe._native", None)
    assert (_snapshot._large_copy() is np.copyto) is not streaming
    monkeypatch.setattr(_snapshot, "_PARALLEL_COPY", 1)  # share even the smallest copy
    monkeypatch.setattr(_snapshot, "_COPY_CHUNK", 7)  # and cut pieces into chunks
    rng = np.random.default_rng(len(sizes))
    pieces = [rng.integers(0, 255, size=n, dtype=np.uint8).tobytes() for n in sizes]
    total = sum(sizes)
    snapshot = HostSnapshot({})
    snapshot.add("m", pieces, size=max(total, _snapshot._BUFFERED))
    data = snapshot._data["m"]
    assert bytes(np.asarray(data)) == b"".join(pieces) and snapshot.nbytes == total


def test_more_bytes_than_announced_are_kept_too(monkeypatch):
    monkeypatch.setattr(_snapshot, "_BUFFERED", 4)
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


def test_a_resumed_run_makes_its_buffers_before_the_first_snapshot(tmp_path, fresh):
    fresh("""
        import torch, modelsafe as ms
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 512))
        opt = torch.optim.Adam(model.parameters())
        model(torch.randn(4, 1024)).sum().backward(); opt.step()
        with ms.Checkpointer("ck", async_save=True) as ck:
            ck.save(1, model=model, optimizer=opt)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, "state.pt")
    """)
    large = {name: m.size for name, m in ms.inspect(next((tmp_path / "ck").glob("*.msafe"))).members.items()
             if m.size >= 1 << 20}
    assert large  # weights and Adam moments
    out = fresh("""
        import json, torch, modelsafe as ms
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 512))
        opt = torch.optim.Adam(model.parameters())
        saved = torch.load("state.pt")
        model.load_state_dict(saved["model"]); opt.load_state_dict(saved["optimizer"])
        ck = ms.Checkpointer("ck", async_save=True, keep_last=2)  # a resumed run
        ck._join_prefetch()                                       # save() waits for them too
        made = {name: (len(b), id(b)) for name, b in ck._buffers.items()}
        expected = {k: v.clone() for k, v in model.state_dict().items()}
        ck.save(2, model=model, optimizer=opt)
        with torch.no_grad():
            model[0].weight.add_(1)                               # training goes on at once
        ck.wait()
        reused = all(id(ck._buffers[name]) == ident for name, (_, ident) in made.items())
        fresh = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 512))
        ck.restore(model=fresh, which=2)
        exact = all(torch.equal(v, expected[k]) for k, v in fresh.state_dict().items())
        print(json.dumps({"made": {n: s for n, (s, _) in made.items()}, "reused": reused, "exact": exact}))
        ck.close()
    """).stdout.strip().splitlines()[-1]
    result = json.loads(out)
    assert result == {"made": large, "reused": True, "exact": True}
