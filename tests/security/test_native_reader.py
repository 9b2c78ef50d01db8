"""The C fast path of the opcode reader (``modelsafe._native.summarize_pickle_fast``) reads like the Python one.

The C reader answers a tuple ``(protocol, n_opcodes, end_offset, globals)`` only for a stream the
Python reader (``_opcodes._summarize`` in default mode) reads as complete without problems, and
then with exactly its fields; otherwise None, and ``summarize_pickle`` runs the Python reader.
Checked on:

* hypothesis streams: the stack-machine programs of ``test_differential`` and an opcode soup
  that reaches every opcode, hostile arguments, underflows, moved marks and broken frames;
* every file of the attack corpus and of ``attacks.py``, and the pickle streams inside them;
* real streams (a fitted scikit-learn forest, numpy arrays, nested containers, protocols 0-5,
  with and without out-of-band buffers, torch state dicts), and byte flips and cuts of them;
* the bounds the C code copies (memo budget, memoized containers, expanded size, memo index),
  at their exact edges.

Both directions are checked: a tuple means the Python reader agrees, and a stream the Python
reader reads completely gets a tuple unless it holds what the C code leaves to Python by design
(legacy string opcodes, persistent ids, text memo keys that are not plain digits, sparse memo
keys). ``NATIVE_READER_EXAMPLES`` sets hypothesis's example count (300 by default).
"""

from __future__ import annotations

import bz2
import collections
import datetime
import decimal
import fractions
import gzip
import io
import lzma
import os
import pickle
import re
import struct
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelsafe.security import _fast_reader, summarize_pickle
from modelsafe.security._bounds import MAX_EXPANDED, MAX_MEMO
from modelsafe.security._opcode_table import A_GET, A_PERSID, A_PUT, FIXED, LEGACY_STRINGS, LINE, LINE2, NAMES, OPS
from modelsafe.security._opcodes import _KEEP_STRING, _MAX_BOXES, _MAX_STACK, _MEMO_BUDGET, _summarize
from modelsafe.security._window import Window

native = pytest.importorskip("modelsafe._native")
if not hasattr(native, "summarize_pickle_fast"):
    pytest.skip("modelsafe._native was built without the pickle reader", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
import attacks  # noqa: E402
from test_differential import _frames, programs  # noqa: E402  (the differential test's stream generator)

fast = native.summarize_pickle_fast
TABLE, LIMITS = native._pickle_reader_table()
CORPUS = Path(__file__).parent / "corpus"
EXAMPLES = int(os.environ.get("NATIVE_READER_EXAMPLES", "300"))
EXAMPLE_SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------------------
# the property
# ---------------------------------------------------------------------------------------


def python_reader(data: bytes | bytearray | memoryview):
    """The Python reader alone, exactly as ``summarize_pickle`` runs it on a buffer in default mode."""
    summary, _ = _summarize(Window(data), 0, None, 0, False)
    return summary


#: Opcodes the C reader leaves to the Python one by design.
_BAIL_BY_DESIGN = frozenset(b for b in range(256) if OPS[b] is not None and (b in LEGACY_STRINGS or OPS[b][0] == A_PERSID))
_DIGITS = re.compile(rb"[0-9]{1,9}")


def modelled(data: bytes) -> bool:
    """Whether the C reader models the stream up to its STOP: none of the opcodes it leaves to Python,
    no text memo key other than plain digits, no memo key written past the dense table's slack.
    (The walk reads arguments as the Python reader does; where the stream is malformed it stops.)"""
    pos, n = 0, len(data)
    while pos < n:
        code = data[pos]
        spec = OPS[code]
        if spec is None:
            return True
        if code in _BAIL_BY_DESIGN:
            return False
        action, kind, size, _signed = spec[:4]
        pos += 1
        if kind == FIXED:
            if action == A_PUT and int.from_bytes(data[pos : pos + size], "little") > LIMITS["CAP_MEMO_SLACK"]:
                return False
            pos += size
        elif kind in (LINE, LINE2):
            for _ in range(1 if kind == LINE else 2):
                stop = data.find(b"\n", pos)
                if stop < 0:
                    return True
                line, pos = data[pos:stop], stop + 1
                if action in (A_PUT, A_GET):
                    if not _DIGITS.fullmatch(line):
                        return False
                    if action == A_PUT and int(line) > LIMITS["CAP_MEMO_SLACK"]:
                        return False
        elif kind:
            length = int.from_bytes(data[pos : pos + size], "little", signed=_signed)
            pos += size + max(length, 0)
        if NAMES[code] == "STOP":
            return True
    return True


def agree(data: bytes | bytearray | memoryview) -> str:
    """C and Python agree on ``data``; returns how it was settled (for the statistics)."""
    answer = fast(data)
    py = python_reader(data)
    if answer is not None:
        assert py.complete and not py.problems, (bytes(data), py.problems)
        refs = [(g.module, g.name, g.offset, g.invoked) for g in py.globals]
        assert answer == (py.protocol, py.n_opcodes, py.end_offset, refs), (bytes(data), answer, py)
        assert (py.persistent_ids, py.start_offset, py.value, py.exhausted, py.embedded) == (0, 0, None, "", ())
        outcome = "tuple"
    elif py.complete:
        assert not modelled(bytes(data)), f"C left a stream it models to Python: {bytes(data)!r}"
        outcome = "bail"
    else:
        outcome = "refused"
    assert summarize_pickle(data) == py  # the wired path: the same summary, by either reader
    return outcome


# ---------------------------------------------------------------------------------------
# the C table and bounds are the Python reader's
# ---------------------------------------------------------------------------------------


def test_the_c_opcode_table_is_the_python_table():
    assert len(TABLE) == 256
    for byte in range(256):
        entry = TABLE[byte]
        if OPS[byte] is None:
            assert entry is None, hex(byte)
        else:
            assert entry is not None, hex(byte)
            assert tuple(entry[:7]) == tuple(OPS[byte]), (hex(byte), NAMES[byte], entry, OPS[byte])
            assert entry[7] == (byte in LEGACY_STRINGS), hex(byte)


def test_the_c_bounds_are_the_python_bounds_and_its_caps_are_lower():
    assert LIMITS["KEEP_STRING"] == _KEEP_STRING
    assert LIMITS["MEMO_BUDGET"] == _MEMO_BUDGET
    assert LIMITS["MAX_BOXES"] == _MAX_BOXES
    assert LIMITS["MAX_MEMO"] == MAX_MEMO
    assert LIMITS["MAX_EXPANDED"] == MAX_EXPANDED
    assert LIMITS["CAP_STACK"] <= _MAX_STACK
    assert LIMITS["CAP_MEMO"] <= MAX_MEMO


# ---------------------------------------------------------------------------------------
# hypothesis: the differential test's programs, and an opcode soup
# ---------------------------------------------------------------------------------------


@EXAMPLE_SETTINGS
@given(programs())
def test_generated_programs_read_alike(data):
    agree(data)


_NO_ARG = sorted(bytes([b]) for b in range(256) if OPS[b] is not None and OPS[b][1] == 0)
_WORDS = [b"builtins", b"list", b"posix", b"system", b"collections", b"OrderedDict", b"mod.sub", b"Outer.Inner", b"",
          b"\xed\xa0\x80", b"\xff\xfe", "é".encode()]


def _ustr(draw, raw: bytes) -> bytes:
    style = draw(st.integers(0, 3))
    if style == 0:
        return b"\x8c" + bytes([len(raw)]) + raw
    if style == 1:
        return b"X" + struct.pack("<I", len(raw)) + raw
    if style == 2:
        return b"\x8d" + struct.pack("<Q", len(raw)) + raw
    return draw(st.sampled_from([b"U", b"C"])) + bytes([len(raw)]) + raw  # legacy string, or bytes


@st.composite
def _opcode(draw) -> bytes:
    group = draw(st.integers(0, 11))
    if group <= 3:
        return draw(st.sampled_from(_NO_ARG))
    if group == 4:  # memo traffic, including keys at and past the bounds
        key = draw(st.sampled_from([0, 1, 2, 3, 7, 255, 1023, 1024, 1025, 70_000, MAX_MEMO - 1, MAX_MEMO, 1 << 31]))
        return draw(st.sampled_from([
            b"\x94", b"q" + bytes([key & 0xFF]), b"h" + bytes([key & 0xFF]), b"r" + struct.pack("<I", key),
            b"j" + struct.pack("<I", key), b"p%d\n" % key, b"g%d\n" % key, b"p 1\n", b"g-1\n", b"p1_0\n", b"g\n",
            b"p007\n", b"g0000000003\n"]))
    if group == 5:  # strings: names, long payloads at the kept-string edge
        raw = draw(st.sampled_from(_WORDS + [b"x" * _KEEP_STRING, b"y" * (_KEEP_STRING + 1)]))
        if len(raw) > 255:
            return b"X" + struct.pack("<I", len(raw)) + raw
        return _ustr(draw, raw)
    if group == 6:  # GLOBAL / INST lines
        module, name = draw(st.sampled_from(_WORDS)), draw(st.sampled_from(_WORDS))
        return draw(st.sampled_from([b"c", b"i"])) + module + b"\n" + name + b"\n"
    if group == 7:  # numbers and bytes payloads
        return draw(st.sampled_from([
            b"K\x07", b"M\x01\x02", b"J\xff\xff\xff\xff", b"G" + b"\x00" * 8, b"I12\n", b"L5L\n", b"F1.5\n",
            b"\x8a\x02\x01\x02", b"\x8b\x02\x00\x00\x00ab", b"\x8b\xff\xff\xff\xff", b"B\x03\x00\x00\x00abc",
            b"\x8e\x01" + b"\x00" * 7 + b"z", b"\x96\x02" + b"\x00" * 7 + b"zz", b"C\x00",
            b"\x8e" + struct.pack("<Q", 1 << 63), b"X" + struct.pack("<I", 1 << 31)]))
    if group == 8:  # protocol, frames, extension codes, persistent ids, legacy text
        return draw(st.sampled_from([
            b"\x80\x02", b"\x80\x04", b"\x80\x05", b"\x80\xff", b"\x95" + struct.pack("<Q", draw(st.integers(0, 40))),
            b"\x95" + struct.pack("<Q", 1 << 62), b"\x95" + b"\xff" * 8, b"\x82\x01", b"\x83\x01\x00",
            b"\x84\x01\x00\x00\x00", b"Pid\n", b"Q", b"S'ab'\n", b"Vname\n"]))
    if group == 9:  # a global by STACK_GLOBAL, memoized
        module, name = draw(st.sampled_from(_WORDS[:8])), draw(st.sampled_from(_WORDS[:8]))
        return _ustr(draw, module) + b"\x94" + _ustr(draw, name) + b"\x94\x93\x94"
    if group == 10:  # a container built and filled
        return draw(st.sampled_from([b"](K\x01K\x02e", b"}(K\x01K\x02u", b"\x8f(K\x01\x90", b"(K\x01K\x02t",
                                     b"(K\x01l\x94", b"]\x94h\x00a", b")\x94", b"(\x94", b"(2", b"(0"]))
    return draw(st.sampled_from([b"R", b"\x81", b"\x92", b"b", b"o", b"a", b"s", b"u", b"e", b"\x90", b"2", b"0", b"1"]))


@st.composite
def soups(draw) -> bytes:
    """Opcodes in any order with arguments of every kind, framed or not, with or without STOP."""
    ops = [b"\x80" + bytes([draw(st.integers(0, 5))])] if draw(st.booleans()) else []
    ops += [b"(N"] * draw(st.integers(0, 8))  # a cushion: fewer streams end at "MARK missing" or an underflow
    ops += draw(st.lists(_opcode(), max_size=60))
    if draw(st.integers(0, 9)):
        ops.append(draw(st.sampled_from([b".", b"N.", b"(.", b"\x94."])))
    data = _frames(draw, ops) if draw(st.booleans()) else b"".join(ops)
    if draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


@EXAMPLE_SETTINGS
@given(soups())
def test_opcode_soups_read_alike(data):
    agree(data)


def test_the_fast_path_is_taken_on_generated_streams():
    """Not vacuous: among generated programs, C answers for many and refuses others."""
    seen: collections.Counter[str] = collections.Counter()

    @settings(max_examples=400, deadline=None, database=None)
    @given(st.one_of(programs(), soups()))
    def collect(data):
        seen[agree(data)] += 1

    collect()
    assert seen["tuple"] >= 40 and seen["refused"] >= 40 and seen["bail"], seen


# ---------------------------------------------------------------------------------------
# the attack corpus and attacks.py, and the streams inside their files
# ---------------------------------------------------------------------------------------


def _blobs(data: bytes, depth: int = 0) -> list[bytes]:
    """``data`` and what it holds: decompressed, and zip and tar members (a few levels deep)."""
    out = [data]
    if depth >= 3:
        return out
    inner: list[bytes] = []
    for opener in (gzip.decompress, bz2.decompress, lzma.decompress, zlib.decompress):
        try:
            inner.append(opener(data))
        except Exception:  # noqa: BLE001 - not that format
            pass
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                inner += [zf.read(info) for info in zf.infolist() if not info.is_dir() and info.file_size < 1 << 26]
        except Exception:  # noqa: BLE001 - damaged or encrypted
            pass
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            inner += [tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()]  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - not a tar
        pass
    for blob in inner:
        out += _blobs(blob, depth + 1)
    return out


def _streams(data: bytes, limit: int = 40) -> list[bytes]:
    """The stream at the start of each blob, and at each place a protocol 2-5 header starts."""
    found = []
    for blob in _blobs(data):
        found.append(blob)
        starts = [m.start() for m in re.finditer(rb"\x80[\x02-\x05]", blob)][:limit]
        found += [blob[at:] for at in starts if at]
    return found


def _corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "EXPECTED.json")


@pytest.mark.parametrize("path", _corpus_files(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_the_attack_corpus_reads_alike(path):
    for stream in _streams(path.read_bytes()):
        agree(stream)


def test_the_attacks_module_files_read_alike():
    files = attacks.all_files()
    assert files
    for name, (content, _kinds, _subjects) in files.items():
        for stream in _streams(content):
            agree(stream)


@pytest.mark.parametrize("name", ["billion_laughs_list.pkl", "tuple_hash_bomb.pkl", "memo_index_bomb.pkl",
                                  "frame_straddle_string.pkl", "frame_straddle_line.pkl", "frame_stop_inside.pkl",
                                  "frame_claims_2e62_bytes.pkl", "ext_opcode.pkl", "truncated_after_payload.pkl"])
def test_hostile_streams_get_no_answer_from_c(name):
    data = (CORPUS / name).read_bytes()
    assert fast(data) is None
    assert not python_reader(data).complete
    assert not summarize_pickle(data).complete


# ---------------------------------------------------------------------------------------
# real streams
# ---------------------------------------------------------------------------------------


class Point:
    """A plain object (BUILD of its __dict__)."""

    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self) -> None:
        self.a, self.b = 1, [2, 3]


class KeywordNew:
    """Built with NEWOBJ_EX (keyword arguments to __new__) from protocol 4."""

    def __new__(cls, *, size: int = 0):
        obj = super().__new__(cls)
        obj.size = size
        return obj

    def __getnewargs_ex__(self):
        return (), {"size": self.size}


@pytest.fixture(scope="module")
def forest():
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(300, 6)))
    y = (X[:, 0] > 0.7).astype(int)
    return make_pipeline(FunctionTransformer(np.log1p), StandardScaler(),
                         RandomForestClassifier(40, max_depth=6, random_state=0)).fit(X, y)


def _objects(forest):
    import numpy as np

    shared = [1, 2, 3]
    recursive: list = [0]
    recursive.append(recursive)
    return {
        "forest": forest,
        "float array": np.arange(50_000, dtype=np.float64),
        "int matrix": np.arange(120, dtype=np.int32).reshape(10, 12).T,
        "object array": np.array([1, "two", (3,), None], dtype=object),
        "structured": np.zeros(4, dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
        "scalar": np.float32(1.5),
        "nested": {"a": [1, 2.5, (3, "x" * 2000), {4, 5}, frozenset({6})], "b": {"c": {"d": [shared, shared]}},
                   "e": (), "f": b"\x00\x01" * 700, "g": bytearray(b"xyz"), "h": "\ud800é", "i": True, "j": None,
                   "k": 1 << 100, "l": -5, "m": 1.25, "n": recursive},
        "builtins": [collections.OrderedDict(a=1), collections.Counter("abca"), datetime.datetime(2024, 1, 2, 3, 4),
                     decimal.Decimal("1.10"), fractions.Fraction(1, 3), complex(1, 2), range(3), slice(1, 5, 2),
                     collections.deque([1, 2])],
        "classes": [Point(1.0, 2.0), Slotted(), Point, len, int.from_bytes],
        # Below protocol 4 this is REDUCE of functools.partial(...): a call of a computed object, refused.
        "keyword new": KeywordNew(size=3),
    }


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_real_streams_are_read_in_c_exactly_as_in_python(forest, protocol):
    for label, obj in _objects(forest).items():
        data = pickle.dumps(obj, protocol=protocol)
        assert agree(data) == ("refused" if label == "keyword new" and protocol < 4 else "tuple"), label
        assert fast(bytearray(data)) == fast(memoryview(data)) == fast(data)


def test_out_of_band_streams_are_read_in_c(forest):
    out_of_band = 0
    for label, obj in _objects(forest).items():
        buffers: list = []
        data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        assert agree(data) == "tuple", label
        out_of_band += len(buffers)
    assert out_of_band > 10  # NEXT_BUFFER opcodes were read


@pytest.mark.parametrize("protocol", [0, 1])
def test_old_protocols_agree(forest, protocol):
    """Protocol 0 writes str with UNICODE (left to Python); protocol 1 is read in C."""
    for label, obj in _objects(forest).items():
        try:
            data = pickle.dumps(obj, protocol=protocol)
        except TypeError:  # __slots__ without __getstate__: not picklable below protocol 2
            continue
        outcome = agree(data)
        if protocol == 1 and label != "keyword new":
            assert outcome == "tuple", label


def test_the_benchmark_stream_is_read_in_c(forest):
    """A forest's stream: C's answer is the Python reader's summary, through summarize_pickle."""
    buffers: list = []
    data = pickle.dumps(forest, protocol=5, buffer_callback=buffers.append)
    py = python_reader(data)
    assert py.complete and len(py.globals) >= 5 and py.n_opcodes > 1000
    assert summarize_pickle(data) == py
    assert any(g.qualname.startswith("sklearn.") and g.invoked for g in py.globals)


def test_torch_state_dicts_are_left_to_python():
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf)
    for stream in _streams(buf.getvalue()):
        agree(stream)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    assert python_reader(data).persistent_ids and fast(data) is None  # persistent ids: Python's


def test_frames_at_and_across_their_end():
    body = b"\x8c\x03abc\x94."
    framed = b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body
    assert agree(framed) == "tuple"
    # Back-to-back frames, and a frame that fits inside another (changes nothing).
    two = (b"\x80\x04\x95" + struct.pack("<Q", 2) + b"]\x94" + b"\x95" + struct.pack("<Q", 1) + b".")
    assert agree(two) == "tuple"
    inside = b"\x80\x04\x95" + struct.pack("<Q", 11) + b"\x95" + struct.pack("<Q", 1) + b"N" + b"."
    assert agree(inside) == "tuple"
    # A string whose payload starts exactly at the frame's end (allowed), and one that straddles (not).
    at_end = b"\x80\x04\x95" + struct.pack("<Q", 2) + b"\x8c\x03" + b"abc."
    assert agree(at_end) == "tuple"
    across = b"\x80\x04\x95" + struct.pack("<Q", 3) + b"\x8c\x03a" + b"bc."
    assert agree(across) == "refused"
    # STOP inside a frame that goes on; a frame claiming more than the buffer; a frame opening past another.
    assert agree(b"\x80\x04\x95" + struct.pack("<Q", 4) + b"N.N.") == "refused"
    assert agree(b"\x80\x04\x95" + struct.pack("<Q", 3) + b"N.") == "refused"
    assert agree(b"\x80\x04\x95" + struct.pack("<Q", 12) + b"\x95" + struct.pack("<Q", 4) + b"NN.") == "refused"


def test_moved_marks_and_underflows():
    assert agree(b"(\x94h\x00K\x01t.") == "tuple"  # a MARK memoized, fetched back, then used
    assert agree(b"(2K\x01t0.") == "refused"  # DUP of a MARK, TUPLE, then nothing but the first MARK left: POP it
    assert agree(b"(2K\x01tN.") == "tuple"
    assert agree(b"0") == "refused"
    assert agree(b"t.") == "refused"
    assert agree(b"N\x93.") == "refused"
    assert agree(b"\x8c\x01a\x8c\x01b\x93.") == "tuple"
    assert agree(b"N\x8c\x01b\x93.") == "refused"  # STACK_GLOBAL of a module computed at run time
    assert agree(b"cos\nsystem\n\x8c\x02ls\x85R.") == "tuple"
    assert agree(b"](cos\nsystem\nK\x01o.") == "tuple"  # OBJ calls the class after the MARK
    assert agree(b"(o.") == "refused"
    assert agree(b"(ios\nsystem\n.") == "tuple"
    assert agree(b"cos\nsystem\n}b.") == "tuple"  # BUILD on a global: invoked
    assert agree(b"cos\nsystem\n(K\x01K\x02u.") == "tuple"  # SETITEMS on a global: invoked
    assert agree(b"cos\nsystem\n)}\x92.") == "tuple"
    assert agree(b")}\x92.") == "refused"


def _mark_memos(n: int) -> bytes:
    return b"\x80\x04(" + b"\x94" * n


def test_the_memo_budget_is_where_c_hands_over():
    """A MARK costs 200 of _MEMO_BUDGET, a string len + 90: memoizing one more string when the room is
    exactly 0 makes Python forget the key (C hands over); with 200 left Python keeps it (C answers)."""
    string = b"\x8c\xff" + b"s" * 255  # one string of 255 bytes: 345
    room = _MEMO_BUDGET - 345
    marks, rest = divmod(room, 200)
    assert rest == 103 and marks > 0
    # After the string and `marks` MARK memos, 103 bytes of room are left: one more memo is kept.
    kept = b"\x80\x04" + string + b"\x940(" + b"\x94" * marks + b"0" + string + b"\x94."
    assert python_reader(kept).complete
    assert agree(kept) == "tuple"
    # One more MARK memo leaves -97: the next string is forgotten, which C does not model.
    forgotten = b"\x80\x04" + string + b"\x940(" + b"\x94" * (marks + 1) + b"0" + string + b"\x94."
    assert python_reader(forgotten).complete
    assert fast(forgotten) is None and summarize_pickle(forgotten) == python_reader(forgotten)
    # Globals are memoized whatever the room: C keeps answering.
    globals_past = b"\x80\x04" + string + b"\x940(" + b"\x94" * (marks + 1) + b"0cos\nsystem\n\x940h" + bytes([0]) + b"."
    assert agree(globals_past) == "tuple"


def test_memoized_containers_are_bounded_exactly():
    assert agree(b"]" + b"\x94" * _MAX_BOXES + b".") == "tuple"
    assert agree(b"]" + b"\x94" * (_MAX_BOXES + 1) + b".") == "refused"


def test_the_expanded_size_is_bounded_exactly():
    """w(k+1) = 1 + 2 w(k) from an empty list: 2**27 - 1 after 26 doublings; APPEND adds one."""
    laughs = bytearray(b"\x80\x04]\x94")
    for level in range(1, 27):
        laughs += b"(h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"l\x94"
    assert agree(bytes(laughs) + b"N" + b"a.") == "tuple"  # 2**27: the bound itself
    assert agree(bytes(laughs) + b"NaNa.") == "refused"  # 2**27 + 1
    assert python_reader(bytes(laughs) + b"NaNa.").exhausted


def test_memo_indices_at_the_bound():
    assert agree(b"N" + b"r" + struct.pack("<I", MAX_MEMO) + b".") == "refused"
    assert agree(b"\x8c\x01ar" + struct.pack("<I", MAX_MEMO - 1) + b".") == "bail"  # a sparse key: Python's
    assert agree(b"Nr" + struct.pack("<I", MAX_MEMO - 1) + b".") == "tuple"  # ANY is not stored: nothing to grow
    # A string memoized at key 1000 (the dense table grows), fetched back to name a global.
    far = b"\x8c\x01ar" + struct.pack("<I", 1000) + b"0\x8c\x01bj" + struct.pack("<I", 1000) + b"\x93."
    assert agree(far) == "tuple" and fast(far)[3] == [("b", "a", 17, False)]
    assert agree(b"\x8c\x01ap12\n0\x8c\x01bg12\n\x93.") == "tuple"
    assert agree(b"\x8c\x01ap 12\n0\x8c\x01bg12\n\x93.") == "bail"  # int(b" 12"): not the pickler's spelling


# ---------------------------------------------------------------------------------------
# fuzz: byte flips and cuts of a real stream
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_stream():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    import numpy as np

    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    model = make_pipeline(StandardScaler(), RandomForestClassifier(3, max_depth=3, random_state=0)).fit(X, X[:, 0] > 0)
    return {p: pickle.dumps(model, protocol=p) for p in (2, 4, 5)}


@st.composite
def _mutations(draw, size: int):
    edits = draw(st.lists(st.tuples(st.integers(0, max(size - 1, 0)), st.integers(0, 255),
                                    st.sampled_from(["flip", "insert", "delete"])), max_size=6))
    cut = draw(st.one_of(st.none(), st.integers(0, size)))
    return edits, cut


def _mutate(data: bytes, edits, cut) -> bytes:
    out = bytearray(data)
    for at, value, how in edits:
        at = min(at, len(out))
        if how == "flip" and at < len(out):
            out[at] = value
        elif how == "insert":
            out[at:at] = bytes([value])
        elif at < len(out):
            del out[at]
    return bytes(out if cut is None else out[:cut])


@EXAMPLE_SETTINGS
@given(st.sampled_from([2, 4, 5]), st.data())
def test_mutated_real_streams_read_alike(real_stream, protocol, data):
    stream = real_stream[protocol]
    edits, cut = data.draw(_mutations(len(stream)))
    agree(_mutate(stream, edits, cut))


# ---------------------------------------------------------------------------------------
# the wiring: fallbacks and the switch
# ---------------------------------------------------------------------------------------


def test_without_the_c_module_summarize_pickle_reads_in_python(monkeypatch):
    monkeypatch.setitem(sys.modules, "modelsafe._native", None)  # the import now fails
    monkeypatch.setattr(_fast_reader, "_native", _fast_reader._UNSET)
    data = pickle.dumps({"a": collections.OrderedDict(b=1)}, protocol=4)
    summary = summarize_pickle(data)
    assert _fast_reader._native is None
    assert summary == python_reader(data) and summary.complete
    assert summary.names(invoked=True) == ["collections.OrderedDict"]


def test_the_environment_variable_turns_the_c_reader_off(monkeypatch):
    calls: list = []
    monkeypatch.setattr(_fast_reader, "_native", lambda data: calls.append(data))
    data = pickle.dumps([1, 2], protocol=4)
    assert summarize_pickle(data) == python_reader(data) and calls == [data]
    monkeypatch.setenv("MODELSAFE_NATIVE_READER", "0")
    assert summarize_pickle(data) == python_reader(data) and calls == [data]
    monkeypatch.setenv("MODELSAFE_NATIVE_READER", "1")
    summarize_pickle(data)
    assert len(calls) == 2


def test_only_whole_buffers_in_default_mode_go_to_c(monkeypatch):
    calls: list = []
    monkeypatch.setattr(_fast_reader, "_native", lambda data: calls.append(type(data)))
    data = pickle.dumps({"k": [1]}, protocol=4)
    summarize_pickle(io.BytesIO(data))
    summarize_pickle(data, embedded=True)
    summarize_pickle(data, raw_data=lambda obj, cursor: None)
    strided = memoryview(data + data)[::2]
    assert summarize_pickle(strided) == python_reader(bytes(strided))
    assert calls == []
    summarize_pickle(memoryview(data))
    summarize_pickle(bytearray(data))
    assert calls == [memoryview, bytearray]


def test_the_summary_is_built_from_the_c_answer(monkeypatch):
    monkeypatch.setattr(_fast_reader, "_native", lambda data: (4, 3, 9, [("m", "n", 2, True), ("o", "p", 5, False)]))
    summary = summarize_pickle(b"anything")
    assert summary.complete and summary.problems == () and summary.protocol == 4
    assert (summary.n_opcodes, summary.end_offset, summary.start_offset) == (3, 9, 0)
    assert [(g.qualname, g.offset, g.invoked) for g in summary.globals] == [("m.n", 2, True), ("o.p", 5, False)]


def test_the_c_function_takes_any_contiguous_buffer_and_refuses_others():
    import array

    data = pickle.dumps([1, "a"], protocol=4)
    assert fast(array.array("b", data)) == fast(data) is not None
    with pytest.raises(TypeError):
        fast("not a buffer")
    with pytest.raises(BufferError):
        fast(memoryview(data + data)[::2])
    assert fast(b"") is None
