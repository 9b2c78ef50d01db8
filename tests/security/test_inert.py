"""The fast audit (inert replay) against the symbolic reader: same verdicts, nothing runs."""

from __future__ import annotations

import collections
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelsafe.errors import FormatError, UntrustedContentError
from modelsafe.security import audit_pickle, summarize_pickle
from modelsafe.security._inert import _replay, summarize_buffer

CORPUS = Path(__file__).parent / "corpus"


def _verdict(summary):
    """What the audit decides from a summary: refused (and why) or the globals it allows."""
    try:
        audit_pickle(summary, allow_persistent=True)
    except (UntrustedContentError, FormatError) as exc:
        return type(exc).__name__, sorted(getattr(exc, "globals", None) or [])
    return "ok", sorted((g.qualname, g.invoked) for g in summary.globals)


def _kinds(summary):
    return sorted((g.qualname, g.invoked) for g in summary.globals)


def _same_findings(data: bytes) -> None:
    """The audit of a buffer is the symbolic reader's; CPython's replay, run only on a stream the
    reader accepted (the reader bounds what the replay would build), finds exactly the same."""
    reader = summarize_pickle(data)
    audited = summarize_buffer(data)
    if not reader.complete:
        assert audited == reader  # refused by the reader: the replay never runs
        return
    replay = _replay(data)
    if replay is None:  # the replay cannot finish (a computed call, an unsupported operation)
        assert audited == reader
        return
    if replay.exhausted:  # an allowlisted constructor asked to allocate too much
        assert not audited.complete and audited.exhausted == replay.exhausted
        return
    assert _kinds(replay) == _kinds(reader), (data, _kinds(replay), _kinds(reader))
    assert replay.persistent_ids == reader.persistent_ids
    assert audited == reader


class Custom:
    def __init__(self, x):
        self.x = x


class WithState:
    def __init__(self):
        self.a = np.arange(3)

    def __getstate__(self):
        return {"a": self.a, "n": 1}

    def __setstate__(self, state):
        self.__dict__.update(state)


def _streams():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), rng.integers(0, 2, 60)
    objects = {
        "forest pipeline": make_pipeline(StandardScaler(), RandomForestClassifier(3, random_state=0)).fit(X, y),
        "function as value": FunctionTransformer(func=np.log1p),
        "containers": {"a": [1, 2.5, "x", b"y", (None, True)], "s": {1, 2}, "f": frozenset({3}),
                       "o": collections.OrderedDict(b=2), "ba": bytearray(b"z")},
        "custom class": Custom(np.float32(2.0)),
        "setstate": WithState(),
        "class as value": [Custom, np.ndarray, len],
    }
    for label, obj in objects.items():
        for protocol in (0, 2, 4, 5):
            yield f"{label} p{protocol}", pickle.dumps(obj, protocol=protocol)
    buffers: list = []
    yield "out-of-band", pickle.dumps(np.arange(10.0), protocol=5, buffer_callback=buffers.append)


@pytest.mark.parametrize("label,data", list(_streams()), ids=lambda v: v if isinstance(v, str) else "")
def test_replay_finds_what_the_reader_finds(label, data):
    replay = _replay(data)
    assert replay is not None, f"{label}: ordinary streams are answered by the replay"
    _same_findings(data)


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize("label,data", list(_streams()), ids=lambda v: v if isinstance(v, str) else "")
def test_saves_one_reading_is_what_every_load_reads(label, data, native, monkeypatch):
    """save records one reading of its own stream (C reader, else the replay): the same globals, called or
    referenced, as the two readers of a load find."""
    from modelsafe.security._inert import summarize_own_stream

    monkeypatch.setenv("MODELSAFE_NATIVE_READER", native)
    own, audited = summarize_own_stream(data), summarize_buffer(data)
    assert audited.complete and _kinds(own) == _kinds(audited), label


def _corpus_streams():
    for path in sorted(CORPUS.iterdir()):
        if path.is_file():
            yield path.name, path.read_bytes()


@pytest.mark.parametrize("name,data", list(_corpus_streams()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_attack_in_the_corpus_gets_the_same_verdict(name, data):
    _same_findings(data)
    assert _verdict(summarize_buffer(data))[0] == _verdict(summarize_pickle(data))[0]


def _hand_made(ops: bytes) -> bytes:
    return b"\x80\x04" + ops + b"."


HAND_MADE = {
    # BUILD applied to a global itself invokes it (its class's __setstate__ would run)
    "build on a global": (_hand_made(b"cbuiltins\nlist\n}b"), [("builtins.list", True)]),
    # a global kept in the memo and called later
    "memoized global called": (_hand_made(b"cbuiltins\nlen\n\x940h\x00)R"), [("builtins.len", True)]),
    "referenced only": (_hand_made(b"cbuiltins\nlen\n"), [("builtins.len", False)]),
    "inst": (b"(ibuiltins\nlist\n.", [("builtins.list", True)]),
    "obj": (_hand_made(b"(cbuiltins\nlist\no"), [("builtins.list", True)]),
    "newobj": (_hand_made(b"cbuiltins\nlist\n)\x81"), [("builtins.list", True)]),
}


@pytest.mark.parametrize("label", sorted(HAND_MADE))
def test_invoked_versus_referenced_on_hand_made_streams(label):
    data, expected = HAND_MADE[label]
    replay = _replay(data)
    assert replay is not None
    assert sorted((g.qualname, g.invoked) for g in replay.globals) == expected
    _same_findings(data)


@pytest.mark.parametrize("data,why", [
    # the result of a call is called again (a getattr gadget chain): only the reader reports it
    (_hand_made(b"cbuiltins\ngetattr\ncbuiltins\nlen\nX\x07\x00\x00\x00__doc__\x86R)R"), "computed call"),
    # STACK_GLOBAL whose name is computed at run time
    (_hand_made(b"X\x08\x00\x00\x00builtinscbuiltins\nstr\n)R\x93"), "computed name"),
    (_hand_made(b"\x82\x01"), "extension code"),
    (b"\x80\x04cbuiltins\nlen\n", "truncated"),
])
def test_unusual_streams_are_left_to_the_symbolic_reader(data, why):
    assert _replay(data) is None, why
    assert summarize_buffer(data) == summarize_pickle(data)
    assert _verdict(summarize_buffer(data))[0] != "ok"


def test_the_replay_runs_nothing(tmp_path):
    canary = tmp_path / "CANARY"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {canary}",)

    data = pickle.dumps(Exploit(), protocol=2)
    summary = summarize_buffer(data)
    assert not canary.exists()
    assert [(g.qualname, g.invoked) for g in summary.globals] == [("posix.system", True)]
    with pytest.raises(UntrustedContentError):
        audit_pickle(data)
    assert not canary.exists()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_get_the_same_verdict(raw):
    for data in (raw, b"\x80\x05" + raw):
        _same_findings(data)


def test_truncations_of_a_real_stream_get_the_same_verdict():
    data = pickle.dumps({"w": np.arange(4.0), "c": Custom(1)}, protocol=4)
    for cut in range(1, len(data), 7):
        _same_findings(data[:cut])
        assert _verdict(summarize_buffer(data[:cut]))[0] == "FormatError"


def test_audit_uses_the_replay_for_buffers(monkeypatch):
    import modelsafe.security._inert as inert

    calls = []
    monkeypatch.setattr(inert, "_replay", lambda data: calls.append(len(data)))  # forces the fallback
    data = pickle.dumps([1, 2], protocol=5)
    assert audit_pickle(data).complete
    assert audit_pickle(io.BytesIO(data)).complete  # a file goes to the symbolic reader directly
    assert calls == [len(data)]
