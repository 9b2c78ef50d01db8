"""ms.Checkpointer on a real S3 API (moto's server on loopback): conditional index writes (If-Match on
the index's ETag), retention after the new index, restore in fresh processes, two writers at once,
adoption after a crash, and SIGKILL at random moments (the local crash test's child, unchanged)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import modelsafe as ms

torch = pytest.importorskip("torch")


def _objects():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    return model, torch.optim.Adam(model.parameters(), lr=0.1)


def _index(s3, prefix: str) -> dict:
    s3["fs"].invalidate_cache()
    return json.loads(s3["fs"].cat_file(f"{prefix}/checkpoints.json"))


def _objects_under(s3, prefix: str) -> list[str]:
    s3["fs"].invalidate_cache()
    return sorted(p.rsplit("/", 1)[1] for p in s3["fs"].find(prefix))


@pytest.mark.parametrize("async_save", [False, True])
def test_save_retention_and_restore_in_a_fresh_process(s3, fresh, async_save):
    prefix = f"{s3['bucket']}/run"
    url = f"s3://{prefix}"
    model, opt = _objects()
    with ms.Checkpointer(url, monitor="loss", keep_best=1, keep_last=2, async_save=async_save,
                         storage_options=s3["options"]) as ck:
        for step, loss in enumerate([3.0, 1.0, 2.0, 4.0, 5.0]):
            with torch.no_grad():
                model.weight.fill_(step)
            ck.save(step, model=model, optimizer=opt, metrics={"loss": loss}, extra={"step": step})
        assert [c.step for c in ck.list()] == [1, 3, 4] and ck.best.step == 1 and ck.latest.step == 4
        assert str(ck.best.path) == f"{url}/step-0000000001.msafe"
    assert _objects_under(s3, prefix) == ["checkpoints.json", "step-0000000001.msafe", "step-0000000003.msafe",
                                          "step-0000000004.msafe"]
    assert [e["step"] for e in _index(s3, prefix)["checkpoints"]] == [1, 3, 4]
    out = fresh(f"""
        import torch, modelsafe as ms
        ck = ms.Checkpointer({url!r}, storage_options={s3['options']!r})
        model = torch.nn.Linear(4, 4)
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        best = ck.restore(model=model, optimizer=opt, which="best")
        print(best.step, best.extra, float(model.weight[0, 0]), ck.best.metrics["loss"])
        print(type(ms.load(ck.latest.path).model).__name__)
    """)
    assert out.stdout.split() == ["1", "{'step':", "1}", "1.0", "1.0", "Linear"]


def test_retention_deletes_only_once_the_new_index_is_in_place(s3, monkeypatch):
    prefix = f"{s3['bucket']}/retained"
    ck = ms.Checkpointer(f"s3://{prefix}", keep_last=1, storage_options=s3["options"])
    model, _ = _objects()
    ck.save(0, model=model)
    fs = ck._dir.path.fs
    deleted, listed_then = [], []
    real_rm = fs.rm

    def rm(paths, *args, **kwargs):
        deleted.extend(p.rsplit("/", 1)[1] for p in paths)
        listed_then.append([e["file"] for e in _index(s3, prefix)["checkpoints"]])  # what the server holds now
        return real_rm(paths, *args, **kwargs)

    monkeypatch.setattr(fs, "rm", rm)
    ck.save(1, model=model)
    ck.close()
    assert deleted == ["step-0000000000.msafe"] and listed_then == [["step-0000000001.msafe"]]
    assert _objects_under(s3, prefix) == ["checkpoints.json", "step-0000000001.msafe"]


def test_a_stale_index_write_is_refused_and_the_update_applied_again(s3):
    """Writer A reads the index; writer B's update lands; A's write (If-Match: the ETag A read) is refused
    by the server, and A applies its change to B's version: both checkpoints are listed."""
    url = f"s3://{s3['bucket']}/two"
    a = ms.Checkpointer(url, keep_last=10, storage_options=s3["options"])
    b = ms.Checkpointer(url, keep_last=10, storage_options=s3["options"])
    model, _ = _objects()
    a.save(0, model=model)
    real_state, refused = a._dir._state, []

    def state_then_b_writes():
        found = real_state()
        if not refused:
            refused.append(found[2])  # the ETag A will send with If-Match
            b.save(100, model=model)
        return found

    a._dir._state = state_then_b_writes
    a.save(1, model=model)
    assert refused and refused[0] != s3["fs"].info(f"{s3['bucket']}/two/checkpoints.json")["ETag"]
    index = _index(s3, f"{s3['bucket']}/two")
    assert sorted(e["step"] for e in index["checkpoints"]) == [0, 1, 100]
    assert len({e["seq"] for e in index["checkpoints"]}) == 3
    assert [c.step for c in ms.Checkpointer(url, storage_options=s3["options"]).list()] == [0, 100, 1]


WRITER = '''
import sys, torch, modelsafe as ms
url, first, options = sys.argv[1], int(sys.argv[2]), eval(sys.argv[3])
ck = ms.Checkpointer(url, keep_last=100, storage_options=options)
model = torch.nn.Linear(4, 4)
for step in range(first, first + 6):
    ck.save(step, model=model, metrics={"loss": float(step)})
ck.close()
'''


def test_two_writers_in_two_processes_lose_no_update(s3, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    url = f"s3://{s3['bucket']}/shared"
    procs = [subprocess.Popen([sys.executable, str(script), url, str(first), repr(s3["options"])],
                              stderr=subprocess.PIPE, text=True) for first in (0, 100)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    index = _index(s3, f"{s3['bucket']}/shared")
    steps = sorted(e["step"] for e in index["checkpoints"])
    assert steps == [*range(6), *range(100, 106)]
    assert len({e["seq"] for e in index["checkpoints"]}) == 12
    assert set(_objects_under(s3, f"{s3['bucket']}/shared")) == \
        {"checkpoints.json"} | {e["file"] for e in index["checkpoints"]}


def test_a_complete_checkpoint_the_index_missed_is_adopted(s3):
    prefix = f"{s3['bucket']}/orphan"
    url = f"s3://{prefix}"
    model, _ = _objects()
    with ms.Checkpointer(url, keep_last=5, storage_options=s3["options"]) as ck:
        ck.save(0, model=model, metrics={"loss": 2.0})
        after_first = s3["fs"].cat_file(f"{prefix}/checkpoints.json")
        ck.save(1, model=model, metrics={"loss": 1.0})
    s3["fs"].pipe_file(f"{prefix}/checkpoints.json", after_first)  # a crash between the upload and the index
    ck = ms.Checkpointer(url, monitor="loss", keep_last=5, storage_options=s3["options"])
    assert [(c.step, c.metrics["loss"]) for c in ck.list()] == [(0, 2.0), (1, 1.0)] and ck.best.step == 1
    ck.save(2, model=model, metrics={"loss": 3.0})
    assert [e["step"] for e in _index(s3, prefix)["checkpoints"]] == [0, 1, 2]


# ---------------------------------------------------------------------------------------
# SIGKILL at random moments, with the child of the local crash test
# ---------------------------------------------------------------------------------------


def _crash_test():
    spec = importlib.util.spec_from_file_location(
        "modelsafe_local_crash_test", Path(__file__).parents[2] / "checkpoints" / "test_crash.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_latest_or_the_best(s3, tmp_path):
    crash = _crash_test()
    script = tmp_path / "child.py"
    script.write_text(crash.CHILD)
    prefix = f"{s3['bucket']}/killed"
    url = f"s3://{prefix}"
    # The child passes no storage options: the endpoint comes from the environment, as botocore reads it.
    env = {**os.environ, "AWS_ENDPOINT_URL": s3["options"]["endpoint_url"]}
    rng = random.Random(20260601)
    durable: dict[int, float] = {}
    rounds, inside_a_save = 6, 0
    with crash.Children(script, env) as children:
        for round_ in range(rounds):
            mode = "async" if round_ % 2 else "sync"  # a remote save takes a few tenths of a second: kill later
            durable.update(children.kill_while_saving(url, mode, rng.uniform(0.3, 2.5)))
            try:
                index = _index(s3, prefix)
            except FileNotFoundError:  # killed before its first reservation
                index = {"checkpoints": [], "next_seq": 1}
            listed = {e["seq"] for e in index["checkpoints"]}
            inside_a_save += index["next_seq"] - 1 > max(listed, default=0)  # a sequence number reserved, not listed

            ck = ms.Checkpointer(url, monitor="val", keep_best=crash.KEEP_BEST, keep_last=crash.KEEP_LAST,
                                 storage_options=s3["options"])
            with ck:
                names = _objects_under(s3, prefix)
                assert all(n == "checkpoints.json" or n.endswith(".msafe") for n in names), names  # no partial object
                for name in names:
                    if name.endswith(".msafe"):
                        assert ms.inspect(f"{url}/{name}", storage_options=s3["options"]).metadata  # each one complete
                if not durable:
                    continue
                latest = ck.latest
                assert latest is not None and latest.step >= max(durable)
                model, opt = crash._objects()
                restored = ck.restore(model=model, optimizer=opt, which="latest")
                assert restored.step == latest.step and crash._consistent(model, opt, latest.step)
                assert ck.best is not None and ck.best.metrics["val"] <= min(durable.values())
                model, opt = crash._objects()
                best = ck.restore(model=model, optimizer=opt, which="best")
                assert crash._consistent(model, opt, best.step)
                assert len(ck.list()) <= crash.KEEP_BEST + crash.KEEP_LAST + 2
    print(f"{rounds} kills, {inside_a_save} between a reservation and its index entry, {len(durable)} durable saves")
    assert len(durable) > rounds
    assert inside_a_save >= 1, "no kill landed inside a save"
