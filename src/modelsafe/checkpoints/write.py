"""Writing one checkpoint artifact, straight away or from a host-memory snapshot.

A checkpoint is an ordinary modelsafe artifact (``ms.inspect`` reads it; ``ms.load`` gives
the model back):

* ``model/``: the model, saved by its flavor (for PyTorch: safetensors weights plus the
  architecture, so ``ms.load`` rebuilds the module; weights only when the constructor
  arguments cannot be recorded);
* ``checkpoint/``: the training state (:mod:`modelsafe.checkpoints.state`);
* ``code/``: source of custom classes from ``__main__`` or local modules;
* the manifest, whose ``metadata["modelsafe.checkpoint"]`` records step, metrics and time.

Synchronous saves write members with :class:`~modelsafe.artifact.writer.ArtifactWriter` directly
from the live tensors (no copy). Asynchronous saves run the very same code against a
:class:`HostSnapshot`, which copies every member's bytes into reusable host buffers as
they are produced; a background thread later replays them into an ``ArtifactWriter``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from modelsafe.artifact.manifest import (
    FORMAT_VERSION,
    Component,
    Manifest,
    MemberRecord,
)
from modelsafe.artifact.reader import check_member_name
from modelsafe.artifact.writer import ArtifactWriter, byte_views
from modelsafe.errors import SaveError, UnsavableObjectError, UnsupportedModelError
from modelsafe.flavors._base import ComponentStore, SavedComponent

if TYPE_CHECKING:
    import numpy as np

    from modelsafe.artifact.writer import WrittenMember

#: Members at least this large are copied into a reusable buffer; smaller ones into bytes.
_BUFFERED = 1 << 20
#: Copies of at least this many bytes are shared by two threads, in chunks of _COPY_CHUNK bytes.
_PARALLEL_COPY = 32 << 20
_COPY_CHUNK = 16 << 20
SUPPORTED_FLAVORS = ("torch", "keras")


class CheckpointWarning(UserWarning):
    """A checkpoint was written, but with less than usual (e.g. weights only, no bundled code)."""


# ---------------------------------------------------------------------------------------
# the host-memory snapshot
# ---------------------------------------------------------------------------------------


class _CopyStream:
    """Receives a member's bytes and copies them at once (into a buffer when the size is known)."""

    def __init__(self, buffer: "np.ndarray | None") -> None:
        self._buffer = buffer
        self._pieces: list[bytes] = []
        self.size = 0

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
                self._pieces.append(bytes(self._buffer[: self.size]))
            self._pieces.extend(bytes(view) for view in views)
            self.size += n
            return
        copies = []
        for view in views:
            copies.append((self._buffer[self.size : self.size + len(view)], np.frombuffer(view, dtype=np.uint8)))
            self.size += len(view)
        _copy_in_two(copies, n)

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


def _copy_in_two(copies: list[tuple["np.ndarray", "np.ndarray"]], total: int) -> None:
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
    steady-state snapshots only copy memory, never allocate it.
    """

    def __init__(self, buffers: dict[str, "np.ndarray"]) -> None:
        self._buffers = buffers
        self._data: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}

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
        stream = _CopyStream(self._buffer(name, size) if size is not None and size >= _BUFFERED else None)
        yield stream
        self._data[name] = stream.data()
        self._sizes[name] = stream.size

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
        for name, data in self._data.items():
            if isinstance(data, list):
                writer.add(name, data, size=self._sizes[name])
            else:
                writer.add(name, memoryview(data))


# ---------------------------------------------------------------------------------------
# capturing the members (the same code for both targets)
# ---------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """Everything of the manifest except the member hashes, known once the members are captured."""

    components: dict[str, Component]
    code: list[dict[str, Any]]
    environment: dict[str, Any]
    metadata: dict[str, Any]


@dataclass
class SaveContext:
    """Per-Checkpointer memory: cached environment fingerprints and warnings already given."""

    environments: dict[frozenset[str], dict[str, Any]] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, CheckpointWarning, stacklevel=7)  # the caller of Checkpointer.save


def prepare(target: Any, model: Any, write_training: Callable[[ComponentStore], dict[str, Any]],
            facts: Mapping[str, Any], context: SaveContext) -> Prepared:
    """Write the model, the training state and the code into ``target``; return the manifest's parts."""
    from modelsafe.flavors import detect_flavor, get_flavor

    flavor_name = detect_flavor(model)
    if flavor_name not in SUPPORTED_FLAVORS:
        raise UnsupportedModelError(
            f"Checkpointer saves PyTorch modules and Keras models; got a {type(model).__module__}."
            f"{type(model).__qualname__} (flavor {flavor_name!r}). For other models use ms.save(model, path) "
            "at the end of training.", type_name=f"{type(model).__module__}.{type(model).__qualname__}")
    flavor = get_flavor(flavor_name)
    saved, component = _save_model(target, flavor, model, context)
    training = write_training(ComponentStore(target, "checkpoint"))
    code = _bundle(target, saved, context)
    metadata = {"modelsafe.checkpoint": {**facts, "training": training, "model_kind": component.data.get("kind")}}
    return Prepared(components={"model": component}, code=code, environment=_environment(context, saved, flavor, model),
                    metadata=metadata)


def _environment(context: SaveContext, saved: SavedComponent, flavor: Any, model: Any) -> dict[str, Any]:
    """The environment fingerprint (captured once per set of modules: it does not change during a run)."""
    modules = frozenset(saved.modules)
    if modules not in context.environments:
        from modelsafe.checks.environment import capture_environment

        context.environments[modules] = capture_environment(sorted(modules))
    environment = dict(context.environments[modules])
    devices = flavor.device_info(model)
    if devices:
        environment["devices"] = {**environment.get("devices", {}), **devices}
    return environment


def _save_model(target: Any, flavor: Any, model: Any, context: SaveContext) -> tuple[SavedComponent, Component]:
    store = ComponentStore(target, "model")
    try:
        saved = flavor.save(model, store, {})
    except SaveError as exc:
        if flavor.name != "torch" or store.members:  # only a failed architecture capture writes nothing
            raise
        from modelsafe.flavors.torch.args import unwrap

        inner = unwrap(model)[0]
        context.warn_once("weights-only", (
            f"Checkpoints of {type(inner).__qualname__} store its weights only: its constructor arguments could not "
            f"be recorded ({exc.message.split('. ')[0]}). Checkpointer.restore works as usual, but "
            "ms.load(checkpoint) gives the state dict instead of the module. Store the arguments as attributes of "
            "the same names (self.hidden = hidden) to get the module back."))
        store = ComponentStore(target, "model")
        saved = flavor.save(inner.state_dict(), store, {})
    component = Component(flavor=flavor.name, flavor_version=flavor.version, members=tuple(store.members),
                          data=saved.data, type_name=saved.type_name)
    return saved, component


def _bundle(target: Any, saved: SavedComponent, context: SaveContext) -> list[dict[str, Any]]:
    from modelsafe.code.bundle import bundle_code
    from modelsafe.code.modules import CODE_PREFIX
    try:
        return bundle_code(saved.refs, (), ComponentStore(target, CODE_PREFIX))
    except UnsavableObjectError as exc:
        what = "; ".join(f"{path} ({reason})" for path, _, reason in exc.problems[:3])
        context.warn_once("code", (
            f"The source of the model's custom code could not be bundled with the checkpoints: {what}. "
            "Checkpointer.restore is not affected, but ms.load(checkpoint) in another process needs that code "
            "importable there. Define the classes in a module file or a script to have them bundled."))
        return []


def build_manifest(prepared: Prepared, members: Mapping[str, "WrittenMember"]) -> Manifest:
    from modelsafe._version import __version__

    return Manifest(
        format_version=FORMAT_VERSION,
        modelsafe_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        components=prepared.components,
        members={name: MemberRecord(m.size, m.sha256) for name, m in members.items()},
        environment=prepared.environment,
        code=tuple(prepared.code),
        metadata=prepared.metadata,
    )


# ---------------------------------------------------------------------------------------
# writing the artifact
# ---------------------------------------------------------------------------------------


def write_now(path: Path, capture: Callable[[Any], Prepared]) -> Manifest:
    """Write a checkpoint from the live objects: members straight to a temporary file, then rename.

    No early write-back (``writeback=False``): on the machines measured, dropping each 64 MiB
    from the page cache as it was written made a synchronous save 1.3–2 × slower than
    writing everything and fsyncing once.
    """
    with ArtifactWriter(path) as writer:
        prepared = capture(writer)
        manifest = build_manifest(prepared, writer.members)
        writer.commit(manifest.to_json())
    return manifest


def snapshot(buffers: dict[str, "np.ndarray"], capture: Callable[[Any], Prepared]) -> tuple[HostSnapshot, Prepared]:
    """Copy everything a checkpoint holds into host memory (the only part a training loop waits for)."""
    snap = HostSnapshot(buffers)
    prepared = capture(snap)
    snap.release_unused()
    return snap, prepared


def write_snapshot(path: Path, snap: HostSnapshot, prepared: Prepared) -> Manifest:
    """Write a captured snapshot as the checkpoint artifact at ``path`` (atomically)."""
    with ArtifactWriter(path, writeback=True) as writer:
        snap.replay(writer)
        manifest = build_manifest(prepared, writer.members)
        writer.commit(manifest.to_json())
    return manifest
