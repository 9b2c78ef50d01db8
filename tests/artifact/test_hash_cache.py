"""The verified-hash cache, and the private copies the integrity check hands to the loader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.artifact import hash_cache as _hash_cache
from modelsafe.artifact import integrity as _integrity
from modelsafe.errors import IntegrityError


@pytest.fixture
def scaler():
    from sklearn.preprocessing import StandardScaler

    X = np.random.default_rng(0).normal(size=(4, 200_000))  # three 1.6 MB arrays: above CACHE_MIN_BYTES
    return StandardScaler().fit(X), X


@pytest.fixture
def hashed(monkeypatch, tmp_path):
    """Counts the members hashed, in a cache folder of this test."""
    monkeypatch.setenv("MODELSAFE_CACHE_DIR", str(tmp_path / "cache"))
    seen: list[int] = []
    for name in ("sha256_of", "_sha256_pread"):
        original = getattr(_integrity, name)

        def counting(*args, _original=original, **kwargs):
            seen.append(1)
            return _original(*args, **kwargs)

        monkeypatch.setattr(_integrity, name, counting)
    return seen


def _load_counting(path: Path, hashed: list[int], **kwargs) -> tuple[int, object]:
    hashed.clear()
    bundle = ms.load(path, **kwargs)
    return len(hashed), bundle


@pytest.mark.parametrize("form", ["m.msafe", "m"])
def test_an_unchanged_file_is_hashed_once(monkeypatch, tmp_path, scaler, hashed, form):
    monkeypatch.setattr(_hash_cache, "RACY_NS", 0)  # the file was written just now
    est, X = scaler
    path = tmp_path / form
    ms.save(est, path, sample=X[:2])
    first, bundle = _load_counting(path, hashed)
    second, again = _load_counting(path, hashed)
    assert first > 0 and second == 0
    np.testing.assert_array_equal(again.model.transform(X), est.transform(X))


def test_a_file_changed_in_place_is_checked_again(monkeypatch, tmp_path, scaler, hashed):
    monkeypatch.setattr(_hash_cache, "RACY_NS", 0)
    est, X = scaler
    path = tmp_path / "m.msafe"
    ms.save(est, path, sample=X[:2])
    ms.load(path).close()  # verified and recorded
    stat = path.stat()
    with open(path, "r+b") as f:  # same size, same inode, mtime put back: only ctime tells
        f.seek(stat.st_size // 2)
        byte = f.read(1)
        f.seek(stat.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(IntegrityError, match="changed after saving"):
        ms.load(path)


def test_a_file_changed_just_before_its_check_is_not_recorded(tmp_path, scaler, hashed):
    est, X = scaler
    path = tmp_path / "m.msafe"
    ms.save(est, path, sample=X[:2])
    first, _ = _load_counting(path, hashed)
    second, _ = _load_counting(path, hashed)  # saved < RACY_NS ago: its timestamps could hide a write
    assert first > 0 and second == first


def test_verify_always_hashes_every_member(monkeypatch, tmp_path, scaler, hashed):
    monkeypatch.setattr(_hash_cache, "RACY_NS", 0)
    est, X = scaler
    path = tmp_path / "m.msafe"
    ms.save(est, path, sample=X[:2])
    ms.load(path).close()
    hashed.clear()
    assert ms.verify(path).ok
    assert len(hashed) > 0


def test_the_cache_can_be_turned_off(monkeypatch, tmp_path, scaler, hashed):
    monkeypatch.setattr(_hash_cache, "RACY_NS", 0)
    monkeypatch.setenv("MODELSAFE_HASH_CACHE", "0")
    est, X = scaler
    path = tmp_path / "m.msafe"
    ms.save(est, path, sample=X[:2])
    counts = [_load_counting(path, hashed)[0] for _ in range(2)]
    assert counts[0] > 0 and counts[1] == counts[0]


def test_a_second_process_uses_what_the_first_verified(tmp_path, scaler, fresh):
    est, X = scaler
    path = tmp_path / "m.msafe"
    ms.save(est, path, sample=X[:2])
    code = f"""
        import modelsafe as ms
        from modelsafe.artifact import hash_cache as _hash_cache
        from modelsafe.artifact import integrity as _integrity
        _hash_cache.RACY_NS = 0
        hashed = []
        original = _integrity._sha256_pread
        _integrity._sha256_pread = lambda *a, **k: hashed.append(1) or original(*a, **k)
        original_view = _integrity.sha256_of
        _integrity.sha256_of = lambda *a, **k: hashed.append(1) or original_view(*a, **k)
        ms.load({str(path)!r}).close()
        print(len(hashed))
    """
    env = {"MODELSAFE_CACHE_DIR": str(tmp_path / "shared-cache")}
    assert int(fresh(code, env=env).stdout) > 0
    assert int(fresh(code, env=env).stdout) == 0


@pytest.mark.parametrize("cached", [False, True])
def test_loaded_arrays_are_private_copies(monkeypatch, tmp_path, scaler, hashed, cached):
    monkeypatch.setattr(_hash_cache, "RACY_NS", 0)
    est, X = scaler
    path = tmp_path / "m.msafe"
    ms.save(est, path, sample=X[:2])
    if cached:
        ms.load(path).close()
    bundle = ms.load(path)
    expected = est.transform(X[:2])
    assert bundle.model.mean_.flags.writeable
    bundle.model.mean_[0] += 0.0  # estimators may write to their arrays
    with open(path, "r+b") as f:  # overwrite the file in place: the loaded model must not change
        f.write(b"\0" * path.stat().st_size)
    np.testing.assert_array_equal(bundle.model.transform(X[:2]), expected)
    assert not bundle._reader.copies  # every verified copy was handed over, none is left behind
    bundle.close()
