"""The audit cache: a verified stream's reading is reused, the policy never is."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.errors import UntrustedContentError
from modelsafe.security import _audit_cache, audit_pickle
from modelsafe.security._audit_cache import MIN_BYTES, summarize_verified
from modelsafe.security._inert import summarize_buffer


class Unlisted:
    """A class no allowlist names."""


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MODELSAFE_CACHE_DIR", str(folder))
    monkeypatch.setenv("MODELSAFE_HASH_CACHE", "1")
    return folder


@pytest.fixture
def readings(monkeypatch):
    """How many times the readers ran."""
    calls = []

    def counted(data):
        calls.append(len(data))
        return summarize_buffer(data)

    monkeypatch.setattr(_audit_cache, "summarize_buffer", counted)
    return calls


def _stream(payload: object) -> tuple[bytes, str]:
    data = pickle.dumps(payload, protocol=5)
    assert len(data) >= MIN_BYTES
    return data, hashlib.sha256(data).hexdigest()


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "audits").rglob("*") if p.is_file()) if (folder / "audits").exists() else []


def test_a_second_audit_of_the_same_bytes_reuses_the_reading(cache_dir, readings):
    data, digest = _stream({"rows": [np.float64(i) for i in range(2000)]})
    first = summarize_verified(data, digest)
    second = summarize_verified(data, digest)
    assert readings == [len(data)]
    assert second.complete and second.globals == first.globals
    assert (second.protocol, second.n_opcodes, second.end_offset) == (first.protocol, first.n_opcodes, first.end_offset)
    assert len(_entries(cache_dir)) == 1


def test_the_policy_is_checked_again_on_a_cached_reading(cache_dir, readings):
    """A reading naming a global off the allowlist is refused on every load, cached or not,
    and allowed only with trusted= naming it."""
    data, digest = _stream([Unlisted()] * 3 + [b"x" * MIN_BYTES])
    for _ in range(2):
        with pytest.raises(UntrustedContentError, match="Unlisted"):
            audit_pickle(summarize_verified(data, digest))
    summary = summarize_verified(data, digest)
    audit_pickle(summary, trusted=[g.qualname for g in summary.globals])
    assert len(readings) == 1


@pytest.mark.parametrize("reason", ["no digest", "malformed digest", "small stream", "switched off"])
def test_no_cache_when_it_cannot_apply(cache_dir, readings, monkeypatch, reason):
    data, digest = _stream(list(range(5000)))
    kwargs = {}
    if reason == "no digest":
        digest = None
    elif reason == "malformed digest":
        digest = "../" + digest[3:]
    elif reason == "small stream":
        data = pickle.dumps([1, 2, 3])
        digest = hashlib.sha256(data).hexdigest()
    else:
        kwargs["cache"] = False
    for _ in range(2):
        assert summarize_verified(data, digest, **kwargs).complete
    assert len(readings) == 2
    assert _entries(cache_dir) == []


def test_the_environment_switch_turns_it_off(cache_dir, readings, monkeypatch):
    monkeypatch.setenv("MODELSAFE_HASH_CACHE", "0")
    data, digest = _stream(list(range(5000)))
    summarize_verified(data, digest)
    summarize_verified(data, digest)
    assert len(readings) == 2


def test_a_refused_or_truncated_stream_is_never_recorded(cache_dir, readings):
    data, digest = _stream(list(range(5000)))
    cut = data[:-10]
    for _ in range(2):
        assert not summarize_verified(cut, hashlib.sha256(cut).hexdigest()).complete
    assert len(readings) == 2
    assert _entries(cache_dir) == []


def test_a_damaged_entry_is_read_again(cache_dir, readings):
    data, digest = _stream(list(range(5000)))
    summarize_verified(data, digest)
    (entry,) = _entries(cache_dir)
    for damage in ("{not json", '{"globals": [["a"]]}', ""):
        entry.write_text(damage, encoding="utf-8")
        assert summarize_verified(data, digest).complete
    assert len(readings) == 4


def test_other_readers_never_share_a_reading(cache_dir, readings, monkeypatch):
    """The key holds the readers' source, modelsafe's and CPython's versions: a changed reader reads again."""
    data, digest = _stream(list(range(5000)))
    summarize_verified(data, digest)
    monkeypatch.setattr(_audit_cache, "_readers_digest", lambda: "another reader")
    summarize_verified(data, digest)
    assert len(readings) == 2
    assert len(_entries(cache_dir)) == 2


def test_load_reuses_the_reading_in_a_fresh_process_and_verify_never_does(tmp_path, cache_dir):
    """Save here, then load twice in fresh processes: the second load's audit reads no opcode;
    ms.verify re-reads (it re-checks everything)."""
    from sklearn.ensemble import RandomForestClassifier

    X = np.random.default_rng(0).normal(size=(200, 4))
    model = RandomForestClassifier(40, random_state=0).fit(X, X[:, 0] > 0)
    path = tmp_path / "m.msafe"
    ms.save(model, path, sample=X[:8])
    script = textwrap.dedent(f"""
        import sys
        import modelsafe as ms
        from modelsafe.security import _audit_cache
        calls = []
        original = _audit_cache.summarize_buffer
        _audit_cache.summarize_buffer = lambda data: calls.append(1) or original(data)
        if sys.argv[1] == "verify":
            ms.verify({str(path)!r})
        else:
            ms.load({str(path)!r}).close()
        print(len(calls))
    """)
    runs = [subprocess.run([sys.executable, "-c", script, verb], capture_output=True, text=True, check=True)
            for verb in ("load", "load", "verify")]
    assert [r.stdout.strip() for r in runs] == ["1", "0", "1"], [r.stderr for r in runs]
    assert len(_entries(cache_dir)) == 1


def test_a_changed_stream_is_read_again_by_load(tmp_path, cache_dir):
    """The key is the digest the bytes were verified against: an artifact whose stream differs is read anew."""
    X = np.random.default_rng(1).normal(size=(50, 3))
    from sklearn.ensemble import RandomForestRegressor

    for seed in (0, 1):
        model = RandomForestRegressor(30, random_state=seed).fit(X, X[:, 0])
        ms.save(model, tmp_path / f"m{seed}.msafe", sample=X[:4], overwrite=True)
        ms.load(tmp_path / f"m{seed}.msafe").close()
    assert len(_entries(cache_dir)) == 2
