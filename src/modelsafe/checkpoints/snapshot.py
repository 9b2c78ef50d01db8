"""The host-memory snapshot of an asynchronous checkpoint: every member's bytes, copied at the call.

:class:`HostSnapshot` stands in for an :class:`~modelsafe.artifact.writer.ArtifactWriter` while
the flavor writes the checkpoint's members, and copies their bytes into reusable host buffers
(large copies on two threads, with streaming stores where the C module was built); a
background thread later replays them into a real writer. Pieces a ``defer`` predicate
covers (an optimizer's state, see :mod:`.deferred`) get their place in the buffer at once
and are copied later, by :meth:`HostSnapshot.copy_deferred`. :func:`preallocate` makes and
touches the buffers ahead of a first snapshot whose member sizes are known (a resumed run:
those of the directory's latest checkpoint), so that copy does not pay for fresh memory.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from modelsafe.artifact.reader import check_member_name
from modelsafe.artifact.writer import ArtifactWriter, byte_views
from modelsafe.errors import SaveError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["HostSnapshot", "preallocate", "preallocate_like", "warm_in_background"]
#: Bytes between two writes that fault in every page of a new buffer (the smallest page size).
_PAGE = 4096

#: Members at least this large are copied into a reusable buffer; smaller ones into bytes.
_BUFFERED = 1 << 20
#: Copies of at least this many bytes are shared by two threads, in chunks of _COPY_CHUNK bytes.
_PARALLEL_COPY = 32 << 20
_COPY_CHUNK = 16 << 20


#: Whether a piece (a uint8 array over the caller's memory) may be copied after the capture.
Defer = Callable[["np.ndarray"], bool]
#: (destination, source) pairs of uint8 arrays.
Copies = list[tuple["np.ndarray", "np.ndarray"]]


class _CopyStream:
    """Receives a member's bytes and copies them at once (into a buffer when the size is known).

    Into a buffer, pieces ``defer`` covers are only placed: ``deferred`` lists their copies.
    """

    def __init__(self, buffer: "np.ndarray | None", defer: Defer | None = None) -> None:
        self._buffer = buffer
        self._defer = defer
        self._pieces: list[bytes] = []
        self.size = 0
        self.deferred: Copies = []

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        self.write_pieces([view])
        return len(view)

    def write_pieces(self, pieces: list[bytes | bytearray | memoryview]) -> None:
        """Copy buffers in order (the writer's stream interface; see _MemberStream.write_pieces).

        Into the member's buffer, the copies are shared by two threads: one thread does not
        reach the memory bandwidth, and this copy is what the training loop waits for.
        """
        import numpy as np

        views = byte_views(pieces)
        n = sum(len(view) for view in views)
        if self._buffer is None or self._pieces or self.size + n > len(self._buffer):
            if self._buffer is not None and not self._pieces:  # more than announced: keep what we have
                self.deferred, later = [], self.deferred
                _copy_in_two(later, _nbytes(later))
                self._pieces.append(bytes(self._buffer[: self.size]))
            self._pieces.extend(bytes(view) for view in views)
            self.size += n
            return
        copies: Copies = []
        for view in views:
            source = np.frombuffer(view, dtype=np.uint8)
            pair = (self._buffer[self.size : self.size + len(view)], source)
            (self.deferred if self._defer is not None and self._defer(source) else copies).append(pair)
            self.size += len(view)
        _copy_in_two(copies, _nbytes(copies))

    def data(self) -> "np.ndarray | list[bytes]":
        if self._buffer is not None and not self._pieces:
            return self._buffer[: self.size]
        return self._pieces


def _large_copy() -> Callable[["np.ndarray", "np.ndarray"], None]:
    """The copy for snapshot chunks: streaming stores when the C module was built.

    The destination is read again only by the background writer, so there is no point in
    the CPU reading each destination line before overwriting it, as ordinary stores do
    (see _native.c). Without the module (installed without a C compiler), numpy.
    """
    try:
        from modelsafe._native import stream_copy
    except ImportError:
        import numpy as np

        return np.copyto
    return stream_copy


def _nbytes(copies: Copies) -> int:
    return sum(len(source) for _, source in copies)


def _copy_in_two(copies: Copies, total: int) -> None:
    """Copy ``src`` into ``dst`` for every pair; a large copy on two threads, chunk by chunk.

    Each thread takes the next chunk as soon as it is done with one, so both finish
    together. (Halves finished up to 20 ms apart: the source pages of one half were slower
    to read, and the training loop waited for the slower one.)
    """
    import numpy as np

    from modelsafe.artifact.threads import pool

    if total < _PARALLEL_COPY:
        for dst, src in copies:
            np.copyto(dst, src)
        return
    copy = _large_copy()
    chunks = iter([(dst[at:at + _COPY_CHUNK], src[at:at + _COPY_CHUNK])
                   for dst, src in copies for at in range(0, len(dst), _COPY_CHUNK)])
    lock = threading.Lock()

    def copy_chunks() -> None:
        while True:
            with lock:
                pair = next(chunks, None)
            if pair is None:
                return
            copy(*pair)

    helper = pool("copy", 1).submit(copy_chunks)
    try:
        copy_chunks()
    finally:
        helper.result()


class HostSnapshot:
    """Stands in for an ArtifactWriter while the state is captured; :meth:`replay` writes it later.

    ``buffers`` (member name -> uint8 array) is reused from one snapshot to the next, so
    steady-state snapshots only copy memory, never allocate it. Pieces ``defer`` covers are
    copied by :meth:`copy_deferred` (called by :meth:`replay` at the latest).
    """

    def __init__(self, buffers: dict[str, "np.ndarray"], defer: Defer | None = None) -> None:
        self._buffers = buffers
        self._defer = defer
        self._data: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        self._deferred: Copies = []

    @property
    def deferred_nbytes(self) -> int:
        """Bytes placed but not copied yet (see :meth:`copy_deferred`)."""
        return _nbytes(self._deferred)

    @property
    def nbytes(self) -> int:
        return sum(self._sizes.values())

    def add(self, name: str, buffers: Any, *, size: int | None = None) -> None:
        """Capture one member (the ArtifactWriter interface ComponentStore writes through)."""
        if isinstance(buffers, (bytes, bytearray, memoryview)):
            size = memoryview(buffers).nbytes
            buffers = (buffers,)
        with self.open_member(name, size=size) as out:
            out.write_pieces(list(buffers))

    @contextlib.contextmanager
    def open_member(self, name: str, *, size: int | None = None) -> Iterator[_CopyStream]:
        check_member_name(name)
        if name in self._data:
            raise SaveError(f"Member {name!r} was written twice; this is a bug in the flavor that wrote it.",
                            member=name)
        stream = _CopyStream(self._buffer(name, size) if size is not None and size >= _BUFFERED else None,
                             self._defer)
        yield stream
        self._data[name] = stream.data()
        self._sizes[name] = stream.size
        self._deferred.extend(stream.deferred)

    def copy_deferred(self) -> None:
        """Copy the pieces left for later; the snapshot is then complete (their sources are let go)."""
        copies, self._deferred = self._deferred, []
        _copy_in_two(copies, _nbytes(copies))

    def _buffer(self, name: str, size: int) -> "np.ndarray":
        import numpy as np

        buffer = self._buffers.get(name)
        if buffer is None or len(buffer) < size or len(buffer) > 2 * size:
            buffer = self._buffers[name] = np.empty(size, dtype=np.uint8)
        return buffer

    def release_unused(self) -> None:
        """Drop buffers of members this snapshot did not write (the model changed)."""
        for name in [n for n in self._buffers if n not in self._data]:
            del self._buffers[name]

    def replay(self, writer: ArtifactWriter) -> None:
        """Write every captured member, in capture order, into ``writer`` (hashed while written)."""
        self.copy_deferred()
        for name, data in self._data.items():
            if isinstance(data, list):
                writer.add(name, data, size=self._sizes[name])
            else:
                writer.add(name, memoryview(data))


def preallocate(buffers: dict[str, "np.ndarray"], sizes: Mapping[str, int]) -> None:
    """Make ``buffers[name]`` for every member of 1 MiB or more in ``sizes``, with every page touched.

    Run off the training thread (``Checkpointer(async_save=True)`` on a directory holding a
    checkpoint): the first touch of fresh memory costs several times the copy into it, and
    the first snapshot otherwise pays it while the loop waits. Buffers already there stay.
    """
    import numpy as np

    for name, size in sizes.items():
        if size >= _BUFFERED and name not in buffers:
            buffer = np.empty(size, dtype=np.uint8)
            buffer[::_PAGE] = 0  # one write per page: the kernel backs each page now, not during the copy
            buffers[name] = buffer


def preallocate_like(buffers: dict[str, "np.ndarray"], checkpoint: Path) -> threading.Thread:
    """Start :func:`preallocate` in a daemon thread, with the member sizes of the artifact ``checkpoint``
    (the latest of a directory: the next snapshot is likely that size); join it before the next snapshot."""

    def run() -> None:
        from modelsafe.artifact.reader import manifest_of
        from modelsafe.errors import ModelsafeError

        try:
            members = manifest_of(checkpoint).members
        except (ModelsafeError, OSError):
            return  # nothing to learn the sizes from: the first snapshot allocates as usual
        preallocate(buffers, {name: m.size for name, m in members.items()})

    thread = threading.Thread(target=run, name="modelsafe-checkpoint-buffers", daemon=True)
    thread.start()
    return thread


#: The modules an async snapshot runs through, imported by :func:`warm_in_background`.
_SNAPSHOT_MODULES = ("modelsafe.checkpoints.write", "modelsafe.checkpoints.state", "modelsafe.checkpoints.background",
                     "modelsafe.checkpoints.deferred", "modelsafe.code.bundle")


def warm_in_background() -> threading.Thread:
    """Start a daemon thread that makes ready what any first snapshot reads, while the loop trains: the
    installed distributions (the environment record: about a second), the modules of the snapshot path, and
    the torch flavor when torch is already imported (never importing a framework that is not)."""

    def run() -> None:
        import importlib
        import sys

        from modelsafe.checks.environment import read_distributions

        read_distributions()
        for name in _SNAPSHOT_MODULES:
            importlib.import_module(name)
        if "torch" in sys.modules:
            from modelsafe.flavors import get_flavor

            get_flavor("torch")

    thread = threading.Thread(target=run, name="modelsafe-checkpoint-warm", daemon=True)
    thread.start()
    return thread
