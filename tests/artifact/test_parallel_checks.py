"""Large members are hashed by a worker thread and by the loading thread itself.

A save lays a forest's tree buffers out in two large members and four small ones
(``BUFFER_SHARES``); at load a worker hashes the first, the loading thread reads the second
ahead and hashes it after its audit, and the small ones go to whichever thread is free.
Every member must still be checked before anything is deserialized, whichever thread
checks it, and a member queued behind a busy worker must not wait for it.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.artifact import integrity as _integrity
from modelsafe.artifact import threads as _threads
from modelsafe.errors import IntegrityError
from modelsafe.flavors import _pickled


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    """A forest whose tree buffers (about 16 MB, 0.2 MB a tree) are above _TAIL_BYTES, saved in both forms."""
    from sklearn.ensemble import ExtraTreesClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2_000, 5))
    y = rng.integers(0, 2, size=len(X))  # random labels: fully grown trees
    model = ExtraTreesClassifier(n_estimators=80, random_state=0).fit(X, y)
    folder = tmp_path_factory.mktemp("forest")
    paths = {form: folder / name for form, name in (("file", "m.msafe"), ("folder", "m"))}
    for path in paths.values():
        ms.save(model, path, sample=X[:16])
    return model, X, paths


def _largest_buffer(path: Path) -> int:
    return max(length for _, _, length in ms.inspect(path).components["model"].data["buffers"])


def _buffer_members(path: Path) -> dict[str, int]:
    return {name: record.size for name, record in ms.inspect(path).members.items() if "/buffers-" in name}


@pytest.mark.parametrize("form", ["file", "folder"])
def test_tree_buffers_are_laid_out_in_two_large_members_and_four_small_ones(forest, form, fresh):
    model, X, paths = forest
    sizes = list(_buffer_members(paths[form]).values())
    total = sum(sizes)
    assert total >= _pickled._TAIL_BYTES and len(sizes) == len(_pickled.BUFFER_SHARES)
    for size, share in zip(sizes, _pickled.BUFFER_SHARES):  # up to a buffer more or less, plus alignment
        assert abs(size - share * total) <= 2 * (_largest_buffer(paths[form]) + 64), (sizes, _pickled.BUFFER_SHARES)
    assert all(size >= _integrity._PARALLEL_THRESHOLD for size in sizes)  # each one queued for the threads
    np.save(paths[form].parent / "X.npy", X)
    np.save(paths[form].parent / "expected.npy", model.predict_proba(X))
    fresh(f"""
        import numpy as np, modelsafe as ms
        bundle = ms.load({str(paths[form])!r})
        assert np.array_equal(bundle.model.predict_proba(np.load("X.npy")), np.load("expected.npy"))
    """, cwd=paths[form].parent)


@pytest.mark.parametrize("form", ["file", "folder"])
def test_a_flipped_byte_in_any_large_member_is_caught(forest, form, tmp_path, flip_byte):
    _, _, paths = forest
    for member in _buffer_members(paths[form]):  # the worker's, the one read ahead, and the small ones
        copy = tmp_path / f"{member.replace('/', '_')}{paths[form].suffix}"
        (shutil.copytree if paths[form].is_dir() else shutil.copy)(paths[form], copy)
        flip_byte(copy, member)
        with pytest.raises(IntegrityError) as err:
            ms.load(copy)
        assert err.value.member == member and err.value.expected != err.value.actual


def test_a_truncated_member_read_ahead_is_caught_by_size(forest, tmp_path):
    _, _, paths = forest
    copy = tmp_path / "m"
    shutil.copytree(paths["folder"], copy)
    ahead = list(_buffer_members(copy))[_integrity._WORKERS]  # the member the loading thread reads ahead
    target = copy / ahead
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match="truncated") as err:
        ms.load(copy)
    assert err.value.member == ahead


@pytest.fixture
def busy_worker():
    """The worker thread of the integrity checks, kept busy until the test ends."""
    release = threading.Event()
    blocker = _threads.pool("verify", _integrity._WORKERS).submit(release.wait, 60)
    yield
    release.set()
    blocker.result()


def test_members_queued_behind_a_busy_worker_are_checked_by_the_loading_thread(forest, busy_worker, tmp_path,
                                                                                    flip_byte):
    model, X, paths = forest
    bundle = ms.load(paths["file"])  # returns although the worker never starts a check
    assert np.array_equal(bundle.model.predict_proba(X[:100]), model.predict_proba(X[:100]))
    bundle.close()
    copy = tmp_path / "m.msafe"
    shutil.copy(paths["file"], copy)
    last = list(_buffer_members(copy))[-1]
    flip_byte(copy, last)
    with pytest.raises(IntegrityError) as err:
        ms.load(copy)
    assert err.value.member == last


def test_every_member_is_checked_before_deserializing(forest, monkeypatch):
    """Whichever thread hashes a member, the loader deserializes only after every check ended."""
    _, _, paths = forest
    monkeypatch.setenv("MODELSAFE_HASH_CACHE", "0")  # an earlier test's load may have recorded the file
    finished: list[str] = []
    original = _integrity._check_digest

    def recording(name, record, actual):
        original(name, record, actual)
        finished.append(name)

    monkeypatch.setattr(_integrity, "_check_digest", recording)
    original_load = _pickled.load_graph

    def checking_load(source, data, options):
        assert set(finished) == set(ms.inspect(paths["file"]).members), "deserializing before every check ended"
        return original_load(source, data, options)

    monkeypatch.setattr(_pickled, "load_graph", checking_load)
    ms.load(paths["file"]).close()
    assert len(finished) == len(ms.inspect(paths["file"]).members)


@pytest.mark.parametrize("keep", [True, False])
def test_the_worker_signals_its_read_before_it_hashes(tmp_path, monkeypatch, keep):
    """The loading thread waits for that signal before its audit: every kind of check must give it
    (a member read in pieces, as a large unkept tensor is, gives it at once)."""
    from sklearn.preprocessing import StandardScaler

    from modelsafe.artifact.reader import open_artifact, read_manifest

    X = np.random.default_rng(0).normal(size=(2, 1_100_000))  # 8.8 MB arrays: above the pread CHUNK
    path = tmp_path / "m.msafe"
    ms.save(StandardScaler().fit(X), path)
    events: list[str] = []
    for name in ("sha256_of", "_sha256_pread"):
        original = getattr(_integrity, name)
        monkeypatch.setattr(_integrity, name, lambda *a, _o=original, **k: events.append("hash") or _o(*a, **k))
    reader = open_artifact(path)
    try:
        members = read_manifest(reader).members
        large = [name for name, record in members.items() if record.size >= _integrity.CHUNK]
        assert large
        for name in large:
            events.clear()
            _integrity.check_member(reader, name, members[name], keep=keep, on_read=lambda: events.append("read"))
            assert events == ["read", "hash"]
    finally:
        reader.close()


def test_waiting_for_a_member_the_worker_checks_the_caller_checks_the_queued_ones(forest, monkeypatch):
    """A flavor reading its first member while the worker still hashes it must not leave the
    others queued for that one worker (a 1.5 GiB state dict loaded at half speed)."""
    from modelsafe.artifact.reader import open_artifact, read_manifest

    _, _, paths = forest
    hashed_on: dict[int, str] = {}
    original = _integrity.sha256_of

    def slow_on_the_worker(view, progress=None):
        if threading.current_thread() is not threading.main_thread():
            threading.Event().wait(0.3)  # the worker is still busy with its member when the caller waits
        hashed_on[len(view)] = threading.current_thread().name
        return original(view, progress)

    monkeypatch.setattr(_integrity, "sha256_of", slow_on_the_worker)
    reader = open_artifact(paths["file"])
    try:
        members = read_manifest(reader).members
        checks = _integrity.MemberChecks(reader, members, keep=(), cache=False)
        large = [name for name, record in members.items() if record.size >= _integrity._PARALLEL_THRESHOLD]
        assert checks._read[0].wait(10), "the worker never read its first member"
        checks.wait(large[0])  # the worker is hashing it: this thread checks the others meanwhile
        checks.wait_all()
    finally:
        reader.close()
    assert [members[name].size for name in large].count(members[large[0]].size) == 1  # sizes tell members apart
    assert hashed_on[members[large[0]].size] != threading.main_thread().name
    assert {hashed_on[members[name].size] for name in large[1:]} == {threading.main_thread().name}


def test_a_corrupt_small_member_stops_the_checks_of_the_large_ones(forest, monkeypatch, tmp_path, flip_byte):
    _, _, paths = forest
    copy = tmp_path / "m.msafe"
    shutil.copy(paths["file"], copy)
    flip_byte(copy, "model/graph.pkl")  # small: checked by the loading thread while the worker starts
    large = set(_buffer_members(copy))
    started: list[str] = []
    worker_began = threading.Event()
    original = _integrity.check_member

    def slow(reader, name, *args, **kwargs):
        if name in large:
            started.append(name)
            worker_began.set()
            threading.Event().wait(0.1)
        elif name == "model/graph.pkl":  # fail only once the worker is inside its first check
            assert worker_began.wait(10), "the worker never started a check"
        return original(reader, name, *args, **kwargs)

    monkeypatch.setattr(_integrity, "check_member", slow)
    with pytest.raises(IntegrityError) as err:
        ms.load(copy)
    assert err.value.member == "model/graph.pkl"
    _threads.pool("verify", _integrity._WORKERS).submit(lambda: None).result()  # the worker is idle again
    assert len(started) == 1, started  # the one it had begun; the queued ones were cancelled


def test_closing_the_checks_returns_with_a_member_read_ahead(forest):
    """A load that fails after the integrity step (an audit refusal) closes the checks: the
    member read ahead for the loading thread must not be waited for as if a worker had it."""
    from modelsafe.artifact.reader import open_artifact, read_manifest

    _, _, paths = forest
    reader = open_artifact(paths["file"])
    try:
        members = read_manifest(reader).members
        large = [name for name, record in members.items() if record.size >= _integrity._PARALLEL_THRESHOLD]
        checks = _integrity.MemberChecks(reader, members, keep=large, cache=False)
        assert checks._here, "no member was read ahead"
        closing = threading.Thread(target=checks.close, daemon=True)
        closing.start()
        closing.join(10)
        assert not closing.is_alive(), "close() waits for a check nobody will run"
    finally:
        reader.close()
