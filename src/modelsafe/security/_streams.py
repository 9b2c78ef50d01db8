"""Consecutive pickle streams in one file, and the raw bytes between them.

torch's legacy formats and joblib files hold several streams, or raw data after a
stream; :class:`StreamReader` reads them through one bounded window (no seeking back,
so it also works on decompressing streams).
"""

from __future__ import annotations

from typing import BinaryIO

from modelsafe.security._opcodes import PickleSummary, RawDataHook, _summarize
from modelsafe.security._values import TrackedObject
from modelsafe.security._window import Cursor, Window


def summarize_pickles(fileobj: BinaryIO, *, raw_data: RawDataHook | None = None,
                      limit: int | None = None) -> list[PickleSummary]:
    """Summaries of consecutive pickles in a file, until its end, an incomplete stream,
    or ``limit`` streams (the file is then left positioned after the last one read)."""
    reader = StreamReader(fileobj, raw_data=raw_data)
    out: list[PickleSummary] = []
    while (limit is None or len(out) < limit) and not reader.at_end():
        summary = reader.next_stream()
        out.append(summary)
        if not summary.complete:
            break
    reader.give_back()
    return out


class StreamReader:
    """Reads consecutive pickle streams, and raw bytes between them, from one window."""

    def __init__(self, source: bytes | bytearray | memoryview | BinaryIO, *,
                 raw_data: RawDataHook | None = None, embedded: bool = False) -> None:
        self.window = Window(source)
        self.pos = 0
        self.raw_data = raw_data
        #: Collect values that look like pickles (see :func:`._opcodes.summarize_pickle`).
        self.embedded = embedded

    @property
    def offset(self) -> int:
        return self.window.base + self.pos

    def at_end(self) -> bool:
        self.pos = self.window.settle(self.pos)
        return self.pos >= len(self.window.buf)

    def next_stream(self, *, values: bool = False) -> PickleSummary:
        """Summarize the stream at the current position (``values``: track its result value)."""
        hook = self.raw_data if self.raw_data is not None or not values else _no_raw_data
        summary, self.pos = _summarize(self.window, self.pos, hook, 0, self.embedded)
        return summary

    def cursor(self) -> Cursor:
        """A cursor at the current position; assign ``reader.pos = cursor.pos`` after using it."""
        return Cursor(self.window, self.pos, None)

    def give_back(self) -> None:
        self.window.give_back(self.pos)


def _no_raw_data(obj: TrackedObject, cursor: Cursor) -> None:
    return None
