"""The one restricted unpickler every load path uses.

``audit_pickle`` finds what the stream names and calls without importing or calling any
of it (:mod:`._inert` for streams in memory, else :mod:`._opcodes`), and refuses it unless
every global is allowed (see :mod:`._allowlist`). Only then does
``restricted_loads`` hand the stream to :class:`pickle.Unpickler`, whose
``find_class`` enforces the same policy again and substitutes validating stand-ins.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Callable, Collection, Iterable, Mapping

from modelsafe.errors import FormatError, UntrustedContentError
from modelsafe.security._allowlist import is_allowed
from modelsafe.security._cython import substitute
from modelsafe.security._inert import summarize_buffer
from modelsafe.security._opcodes import PickleSummary, summarize_pickle
from modelsafe.security._validators import validating_standin

Resolve = Callable[[str, str], Any]


def _refusal(names: list[str], summary: PickleSummary, trusted: Collection[str],
             environment: Mapping[str, Any] | None) -> UntrustedContentError:
    invoked = {g.qualname for g in summary.globals if g.invoked}
    shown = "\n".join(f"  - {n} ({'called while loading' if n in invoked else 'referenced as a value'})"
                      for n in names)
    changed = _version_changes(names, environment)
    hint = "".join(
        f" The artifact was saved with {dist} {saved} and {dist} {current} is installed here: that version "
        f"difference is the likely cause ({dist} {saved} pickles its objects with names this release does not "
        f"use). Install the saved version (pip install '{dist}=={saved}') to load it, then re-save it with "
        f"ms.save; run `modelsafe env` on the artifact to see every difference." for dist, saved, current in changed)
    return UntrustedContentError(
        f"Refusing to unpickle: the stream needs {len(names)} global(s) that are not on modelsafe's "
        f"allowlist{' or in trusted=' if trusted else ''}:\n{shown}\n"
        "Unpickling can run any of them, so a file from an untrusted source could execute code. Nothing "
        f"was loaded.{hint} If you trust the file's source, pass trusted=[...] with exactly these names "
        "(e.g. trusted=[" + ", ".join(repr(n) for n in names[:3]) + "]).",
        globals=names, versions=[{"package": d, "saved": s, "current": c} for d, s, c in changed],
    )


def _version_changes(names: list[str], environment: Mapping[str, Any] | None) -> list[tuple[str, str, str]]:
    """(distribution, saved, installed) for each package of ``names`` whose recorded version differs."""
    if not environment:
        return []
    from modelsafe.security._versions import installed as distribution_for_module

    recorded = environment.get("packages", {})
    out: list[tuple[str, str, str]] = []
    for name in names:
        found = distribution_for_module(name.rsplit(".", 1)[0])
        if found is None:
            continue
        dist, current = found
        saved = (recorded.get(dist) or {}).get("version")
        if saved and saved != current and (dist, saved, current) not in out:
            out.append((dist, saved, current))
    return out


def _denial_of_service(summary: PickleSummary) -> UntrustedContentError:
    return UntrustedContentError(
        f"Refusing to unpickle: {summary.exhausted}. Unpickling it would stall or exhaust the memory of the "
        "process (a denial-of-service file); a real model file never does this. Nothing was loaded. Do not use "
        "this file; get the model from its source.", globals=[], problems=list(summary.problems))


def audit_pickle(source: bytes | bytearray | memoryview | Any, *, trusted: Collection[str] = (),
                 allowed_modules: Collection[str] = (), recorded: Collection[str] | None = None,
                 allow_persistent: bool = False, standins: Mapping[str, Any] | None = None,
                 environment: Mapping[str, Any] | None = None) -> PickleSummary:
    """Summarize a stream and refuse it unless everything it needs is allowed.

    ``standins`` maps ``module.name`` to the object a reader substitutes for it (a format
    reader's own validating rebuild functions): those names are allowed for that read only.
    ``environment`` (an artifact's recorded environment) lets a refusal name the package whose
    version changed since saving, when one did.

    Raises
    ------
    FormatError
        The stream is truncated or malformed (it was not read completely).
    UntrustedContentError
        It names a global that is not allowed, or one the manifest did not record, it uses
        persistent ids the caller does not resolve, or it would build a structure far beyond
        its size (a denial-of-service stream).
    """
    if isinstance(source, PickleSummary):
        summary = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        summary = summarize_buffer(source)
    else:
        summary = summarize_pickle(source)
    if summary.exhausted:
        raise _denial_of_service(summary)
    if not summary.complete:
        raise FormatError(
            f"The pickle stream could not be read completely ({'; '.join(summary.problems) or 'no STOP'}): "
            "it is truncated or corrupted, so it cannot be checked or loaded. Copy the file again from its "
            "source, or re-export the model.",
            problems=list(summary.problems),
        )
    if summary.persistent_ids and not allow_persistent:
        raise UntrustedContentError(
            f"The pickle stream uses {summary.persistent_ids} persistent id(s), which hand objects to "
            "outside code that modelsafe does not know. Nothing was loaded. Convert the file with the "
            "tool for its framework (`modelsafe convert`).",
            globals=[],
        )
    trusted = tuple(trusted)
    if recorded is not None:
        recorded_set = set(recorded)
        unrecorded = sorted(g.qualname for g in summary.globals if g.qualname not in recorded_set)
        if unrecorded:
            raise UntrustedContentError(
                f"The pickle stream names globals its manifest does not record: {', '.join(unrecorded)}. "
                "The stream was changed after saving (tampering). Nothing was loaded. Re-export the model "
                "from its source.",
                globals=unrecorded,
            )
    refused = sorted(
        g.qualname for g in summary.globals
        if g.qualname not in (standins or {})
        and not is_allowed(g.module, g.name, invoked=g.invoked, trusted=trusted, allowed_modules=allowed_modules)
    )
    if refused:
        raise _refusal(refused, summary, trusted, environment)
    return summary


def resolve_global(module: str, name: str, *, trusted: tuple[str, ...], allowed_modules: tuple[str, ...],
                   resolve: Resolve | None, default: Resolve, standins: Mapping[str, Any] | None = None) -> Any:
    """``find_class`` of every restricted unpickler: the allowlist again, then validating stand-ins."""
    if standins and f"{module}.{name}" in standins:
        return standins[f"{module}.{name}"]
    # Defense in depth: the audit already passed, but never resolve anything else.
    if not is_allowed(module, name, invoked=False, trusted=trusted, allowed_modules=allowed_modules):
        raise UntrustedContentError(
            f"Refusing to resolve {module}.{name} while unpickling: it is not on the allowlist. "
            "Pass trusted=[...] with it if you trust the file's source.",
            globals=[f"{module}.{name}"],
        )
    if resolve is not None and module in allowed_modules:
        return resolve(module, name)
    standin = validating_standin(f"{module}.{name}") or substitute(module, name)
    if standin is not None:
        return standin
    return default(current_numpy_module(module), name)


def current_numpy_module(module: str) -> str:
    """Where a numpy module named by a pickle lives in the installed numpy.

    Pickles written with numpy 1 name ``numpy.core.*``; numpy 2 moved it to ``numpy._core``
    and warns on the old name. The objects are the same, so the new name is used.
    """
    if module != "numpy.core" and not module.startswith("numpy.core."):
        return module
    import numpy

    if int(numpy.__version__.split(".")[0]) < 2:
        return module
    return "numpy._core" + module[len("numpy.core"):]


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, *, buffers: Iterable[Any] | None, trusted: tuple[str, ...],
                 allowed_modules: tuple[str, ...], resolve: Resolve | None,
                 persistent_load: Callable[[Any], Any] | None, standins: Mapping[str, Any] | None = None) -> None:
        super().__init__(file, buffers=buffers)
        self._trusted = trusted
        self._allowed_modules = allowed_modules
        self._resolve = resolve
        self._persistent = persistent_load
        self._standins = standins

    def find_class(self, module: str, name: str) -> Any:
        return resolve_global(module, name, trusted=self._trusted, allowed_modules=self._allowed_modules,
                              resolve=self._resolve, default=super().find_class, standins=self._standins)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise UntrustedContentError("The stream uses a persistent id nobody resolves.", globals=[])
        return self._persistent(pid)


def restricted_loads(data: bytes | bytearray | memoryview, *, buffers: Iterable[Any] | None = None,
                     trusted: Collection[str] = (), allowed_modules: Collection[str] = (),
                     recorded: Collection[str] | None = None, resolve: Resolve | None = None,
                     persistent_load: Callable[[Any], Any] | None = None,
                     audited: PickleSummary | None = None, standins: Mapping[str, Any] | None = None) -> Any:
    """Audit ``data`` (unless ``audited`` is the summary of a passed audit), then unpickle it.

    A stream whose audit fails never reaches an unpickler that resolves a real global. ``standins`` (see
    :func:`audit_pickle`) are allowed, and substituted, for this read only.
    """
    trusted = tuple(trusted)
    allowed_modules = tuple(allowed_modules)
    if audited is None:
        audit_pickle(data, trusted=trusted, allowed_modules=allowed_modules, recorded=recorded,
                     allow_persistent=persistent_load is not None, standins=standins)
    stream = io.BytesIO(data) if not isinstance(data, memoryview) else io.BytesIO(data)
    unpickler = _RestrictedUnpickler(stream, buffers=buffers, trusted=trusted, allowed_modules=allowed_modules,
                                     resolve=resolve, persistent_load=persistent_load, standins=standins)
    try:
        return unpickler.load()
    except (UntrustedContentError, FormatError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise FormatError(
            f"The pickle stream passed the safety audit but could not be rebuilt: {type(exc).__name__}: {exc}. "
            "This usually means the library that defines these objects changed in an incompatible way "
            "since the file was saved. Run `modelsafe env` on the artifact to compare versions, install "
            "the recorded ones, or re-export the model.",
            cause=f"{type(exc).__name__}: {exc}",
        ) from exc
