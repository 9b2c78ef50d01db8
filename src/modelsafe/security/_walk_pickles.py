"""The scanner's reading of pickle streams: plain, joblib, legacy torch, and pickles hidden in values.

Every stream is read by the symbolic reader (:mod:`._opcodes`); each global it names gets
the verdict of :mod:`._verdict`. A ``bytes`` or text value that starts like a pickle (raw,
base64 or hex: a known way to smuggle a payload past scanners that do not look inside
values) is decoded and read too, and its globals are reported under the location
``<member>!embedded@<offset>``.
"""

from __future__ import annotations

import pickle
from typing import Any, BinaryIO, Callable

from modelsafe.security._bounds import MAX_EMBEDDED, decode_embedded
from modelsafe.security._findings import GlobalRecord, ItemRecord, StreamRecord
from modelsafe.security._joblib import FORMAT_GLOBALS, skip_array_data
from modelsafe.security._opcodes import PickleSummary, summarize_pickle
from modelsafe.security._streams import StreamReader
from modelsafe.security._verdict import judge_global

#: The scan's walker (:class:`._walk.Walker`), which imports this module.
Walker = Any

#: Consecutive pickle streams read from one file, and how deep pickles nest inside values.
MAX_STREAMS = 10_000
MAX_EMBEDDED_DEPTH = 3


def pickle_file(w: Walker, location: str, f: BinaryIO, *, persistent_ok: bool = False, tolerant: bool = False,
                reopen: Callable[[], BinaryIO] | None = None, container: str = "") -> bool:
    """Every consecutive pickle stream in ``f``; False if a tolerant start proves not to be a pickle.

    Streams are read in the fast mode first; a joblib file (its wrapper global appears) is read
    again from the start in value mode, which steps over its raw array data. ``reopen`` gives a
    fresh stream for that second pass (default: seek ``f`` to 0); a stream that can be read only
    once (not seekable, no ``reopen``) is read in value mode from the start.
    """
    seekable = reopen is not None or (callable(getattr(f, "seekable", None)) and f.seekable())
    summaries, limited = streams(f, None if seekable else skip_array_data)
    if seekable and any(g.qualname in FORMAT_GLOBALS for s in summaries for g in s.globals):
        if reopen is None:
            f.seek(0)
        summaries, limited = streams(f if reopen is None else reopen(), skip_array_data)
    if summaries and tolerant and not summaries[0].complete and not summaries[0].globals:
        if seekable and reopen is None:
            f.seek(0)
        return False
    for index, summary in enumerate(summaries):
        record_stream(w, location, summary, persistent_ok, trailing=index > 0, container=container)
    if limited:
        w.add("medium", "archive-limit", location, summaries[-1].end_offset, "streams",
              f"more than {MAX_STREAMS} consecutive pickle streams; the rest was not read")
    return True


def record_stream(w: Walker, location: str, s: PickleSummary, persistent_ok: bool, *, trailing: bool = False,
                  container: str = "", depth: int = 0) -> None:
    """Record one stream, a finding per global that is not safe, and the pickles inside its values."""
    records = []
    for g in sorted(s.globals, key=lambda g: g.offset):
        judged = judge_global(g.module, g.name, g.invoked, container=container, format_globals=FORMAT_GLOBALS)
        records.append(GlobalRecord(judged.qualname, g.invoked, judged.rating, g.offset, judged.module))
        if judged.severity:
            how = "called while loading" if g.invoked else "referenced as a value"
            alias = f", written as {g.qualname}" if judged.qualname != g.qualname else ""
            w.add(judged.severity, judged.kind, location, g.offset, judged.qualname,
                  f"the pickle stream names {judged.qualname} ({how}{alias})")
    if s.exhausted:
        w.add("high", "denial-of-service", location, s.end_offset, "structure", f"the pickle stream {s.exhausted}")
    elif s.problems:
        what = "data after the last pickle stream is not a pickle" if trailing and not s.globals else \
            "the pickle stream could not be read to its end"
        w.add("medium", "incomplete", location, s.end_offset, "stream", f"{what} ({'; '.join(s.problems)})")
    if s.persistent_ids and not persistent_ok:
        w.add("medium", "persistent-id", location, s.start_offset, "persistent id",
              f"the pickle stream uses {s.persistent_ids} persistent id(s)")
    if s.protocol > pickle.HIGHEST_PROTOCOL:
        w.add("medium", "incomplete", location, s.start_offset, f"protocol {s.protocol}",
              f"the stream uses pickle protocol {s.protocol}, newer than this Python's {pickle.HIGHEST_PROTOCOL}")
    w.streams.append(StreamRecord(location, s.start_offset, s.protocol, s.n_opcodes, s.complete,
                                  tuple(records), s.persistent_ids))
    for candidate in s.embedded:
        _embedded(w, location, candidate, depth)


def _embedded(w: Walker, location: str, candidate: Any, depth: int) -> None:
    """A value that starts like a pickle: read it as one; report it only if it is one."""
    data = decode_embedded(candidate.data)
    if data is None:
        return
    inner = summarize_pickle(data, embedded=True)
    if not inner.globals and not inner.complete and not inner.exhausted:
        return  # data that happens to start like a pickle
    where = f"{location}!embedded@{candidate.offset}"
    w.item(where, "embedded-pickle", candidate.length)
    if depth >= MAX_EMBEDDED_DEPTH:
        w.add("medium", "archive-limit", where, None, "embedded pickle", f"pickles nested inside values more than "
              f"{MAX_EMBEDDED_DEPTH} deep; the innermost one was not read")
        return
    record_stream(w, where, inner, persistent_ok=False, depth=depth + 1)
    if candidate.length > MAX_EMBEDDED and not inner.complete:
        w.add("medium", "incomplete", where, None, "embedded pickle", f"a {candidate.length}-byte value holds a "
              f"pickle that was read only for its first {MAX_EMBEDDED} bytes")


def torch_legacy(w: Walker, location: str, f: BinaryIO, size: int) -> None:
    """torch.save's pre-zip format: five pickles (magic, version, sys info, object, keys), then raw storage."""
    reader = StreamReader(f, embedded=True)
    for index in range(5):
        if reader.at_end():
            w.add("medium", "incomplete", location, reader.offset, "legacy torch file",
                  f"the legacy torch file ends after {index} of its 5 pickle streams")
            return
        summary = reader.next_stream()
        record_stream(w, location, summary, persistent_ok=index == 3)
        if not summary.complete:
            return
    w.items[-1] = ItemRecord(location, "torch-legacy", size, {"tensor_data_bytes": size - reader.offset})


def streams(f: BinaryIO, hook: Any) -> tuple[list[PickleSummary], bool]:
    """Consecutive streams of ``f`` (until its end or an incomplete one); True if MAX_STREAMS cut it."""
    reader = StreamReader(f, raw_data=hook, embedded=True)
    out: list[PickleSummary] = []
    while not reader.at_end():
        if len(out) >= MAX_STREAMS:
            return out, True
        out.append(reader.next_stream())
        if not out[-1].complete:
            break
    return out, False
