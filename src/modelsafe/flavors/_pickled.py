"""Object graphs stored as a pickle stream plus out-of-band array buffers.

Used by flavors whose framework has no native format (scikit-learn, plain Python).
Arrays leave the stream as raw, aligned, hashed members (pickle protocol 5
``buffer_callback``), so the stream itself stays small. The stream's referenced
globals are recorded in the manifest at save, and loading goes only through the
restricted unpickler in :mod:`modelsafe.security`, which accepts nothing else.
"""

from __future__ import annotations

import pickle
from typing import Any, Mapping

from modelsafe.errors import UnsavableObjectError
from modelsafe.flavors._base import ComponentSource, ComponentStore, LoadOptions, SavedComponent

STREAM = "graph.pkl"
PROTOCOL = 5
#: Out-of-band buffers are packed into this many members so two cores can hash them.
BUFFER_MEMBERS = 2
_ALIGN = 64


def _pack(buffers: list[pickle.PickleBuffer], parts: int) -> tuple[list[bytearray], list[list[int]]]:
    """Pack buffers, each 64-byte aligned, into ``parts`` members of similar size.

    Returns the members' bytes and, per buffer, ``[part, offset, length]``.
    """
    views = [buf.raw() for buf in buffers]
    total = sum(v.nbytes for v in views)
    target = total / parts if parts else total
    layout: list[list[int]] = []
    sizes = [0]
    for view in views:
        if sizes[-1] >= target and len(sizes) < parts:
            sizes.append(0)
        offset = sizes[-1] + (-sizes[-1] % _ALIGN)
        layout.append([len(sizes) - 1, offset, view.nbytes])
        sizes[-1] = offset + view.nbytes
    packed = [bytearray(size) for size in sizes]
    for view, (part, offset, length) in zip(views, layout):
        packed[part][offset : offset + length] = view
    return packed, layout


def dump_graph(obj: Any, store: ComponentStore) -> SavedComponent:
    """Pickle ``obj`` with out-of-band buffers into ``store``; record its globals."""
    from modelsafe.security import summarize_pickle

    buffers: list[pickle.PickleBuffer] = []
    try:
        stream = pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffers.append)
    except Exception as exc:  # any pickling failure is diagnosed the same way
        raise unsavable(obj, exc) from exc
    packed, layout = _pack(buffers, BUFFER_MEMBERS if buffers else 0)
    names = [store.write(f"buffers-{i}.bin", part) for i, part in enumerate(packed)]
    store.write(STREAM, stream)
    summary = summarize_pickle(stream)
    refs = sorted(summary.globals, key=lambda g: g.qualname)
    data = {
        "stream": STREAM,
        "protocol": PROTOCOL,
        "buffer_members": names,
        "buffers": layout,
        "globals": [g.qualname for g in refs],
        "invoked": [g.qualname for g in refs if g.invoked],
    }
    return SavedComponent(data=data, modules={g.module for g in refs}, type_name=type_name(obj))


def audit_graph(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
    """Audit the stream against the allowlist before anything is constructed."""
    from modelsafe.security import audit_pickle

    summary = audit_pickle(
        source.view(data["stream"]),
        trusted=options.trusted,
        allowed_modules=options.allowed_modules,
        recorded=data.get("globals", ()),
    )
    source.cache["audit"] = summary
    return summary


def load_graph(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
    """Rebuild the object through the restricted unpickler (audited first)."""
    from modelsafe.security import restricted_loads

    # One writable copy per member: estimators may modify their arrays, and the object
    # must not depend on the artifact file staying in place.
    members = [memoryview(bytearray(source.view(name))) for name in data.get("buffer_members", ())]
    buffers = [members[part][offset : offset + length] for part, offset, length in data.get("buffers", ())]
    return restricted_loads(
        source.view(data["stream"]),
        buffers=buffers,
        trusted=options.trusted,
        allowed_modules=options.allowed_modules,
        recorded=data.get("globals", ()),
        resolve=options.resolve,
        audited=source.cache.get("audit"),
    )


def type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def unsavable(obj: Any, exc: BaseException) -> UnsavableObjectError:
    """Turn a pickling failure into an error that lists every offending attribute."""
    from modelsafe._diagnose import find_unsavable, unsavable_error

    problems = find_unsavable(obj)
    if not problems:
        problems = [("<root>", type_name(obj), f"{type(exc).__name__}: {exc}")]
    return unsavable_error(problems)
