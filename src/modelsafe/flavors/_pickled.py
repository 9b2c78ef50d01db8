"""Object graphs stored as a pickle stream plus out-of-band array buffers.

Used by flavors whose framework has no native format (scikit-learn, plain Python).
Arrays leave the stream as raw, aligned, hashed members (pickle protocol 5
``buffer_callback``), so the stream itself stays small. The stream's referenced
globals are recorded in the manifest at save, and loading goes only through the
restricted unpickler in :mod:`modelsafe.security`, which accepts nothing else.

Objects of frameworks with a native format inside the graph (an XGBoost model as a
Pipeline step) are not pickled: their flavor saves them as an *embedded component*
under ``embedded/<i>/``, the stream holds a persistent id in their place, and at load
each is audited and rebuilt by its own flavor.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import pickle
import sys
from typing import Any, Callable, Mapping

from modelsafe.errors import EnvironmentMismatchError, FormatError, UnsavableObjectError
from modelsafe.flavors._embedded import remember, replaying
from modelsafe.flavors._base import (
    ComponentSource,
    ComponentStore,
    Flavor,
    LoadOptions,
    SavedComponent,
)

STREAM = "graph.pkl"
PROTOCOL = 5
#: Out-of-band buffers are laid out in members of these shares of their group, so two
#: threads can hash them (see modelsafe.artifact.integrity.MemberChecks): a worker starts on the
#: first while the loading thread audits the stream, that thread then takes the second,
#: and the small ones at the end go to whichever thread is free, so both finish together.
BUFFER_SHARES = (0.4, 0.4, 0.05, 0.05, 0.05, 0.05)
#: Buffers smaller than this stay in the stream. A loaded array that views a member keeps
#: the whole member in memory: a forest's trees copy their node arrays away, and a
#: 16-byte ``classes_`` per tree would otherwise pin every byte of them.
INBAND_BYTES = 4096
_ALIGN = 64
_ZEROS = bytes(_ALIGN)
#: Persistent-id tag of an embedded component in the stream.
EMBEDDED_TAG = "modelsafe.component"


def _keep_out_of_band(buffers: list[pickle.PickleBuffer]) -> Callable[[pickle.PickleBuffer], bool]:
    """The pickler's ``buffer_callback``: large buffers go to ``buffers``, small ones in-band."""

    def callback(buffer: pickle.PickleBuffer) -> bool:
        if memoryview(buffer).nbytes < INBAND_BYTES:
            return True  # a true value: pickle it inside the stream
        buffers.append(buffer)
        return False

    return callback


#: Classes that copy the arrays of their state into memory of their own when unpickled
#: (scikit-learn's Tree: its node and value arrays). Their buffers are laid out apart.
_COPIED_ON_LOAD = frozenset({"sklearn.tree._tree.Tree"})
#: A group of buffers at least this large is split in two members; at least _TAIL_BYTES,
#: by BUFFER_SHARES.
_SPLIT_BYTES = 1 << 20
_TAIL_BYTES = 8 << 20


def _copied_on_load(view: memoryview) -> bool:
    """Whether the array behind ``view`` belongs to the state of a class in _COPIED_ON_LOAD."""
    owner = type(getattr(view.obj, "base", None))
    return f"{owner.__module__}.{owner.__qualname__}" in _COPIED_ON_LOAD


def _shares(total: int) -> tuple[float, ...]:
    """The members a group of ``total`` bytes is laid out in, as shares of it."""
    if total < _SPLIT_BYTES:
        return (1.0,)
    return BUFFER_SHARES if total >= _TAIL_BYTES else (0.5, 0.5)


def _lay_out(buffers: list[pickle.PickleBuffer]) -> tuple[list[list[Any]], list[int], list[list[int]]]:
    """Lay buffers out, each 64-byte aligned and in order, in members of about :func:`_shares` of their group.

    Buffers their object copies on load (a tree's nodes) and the others go to separate
    members: once the trees have copied theirs, those members are freed, and an array that
    lives on (a forest's ``oob_decision_function_``) keeps only its own member.

    Returns, per member, the pieces to write in order (the buffers themselves, not copies,
    with zero padding between them) and its size; and, per buffer, ``[part, offset, length]``.
    """
    views = [buf.raw() for buf in buffers]
    copied = [_copied_on_load(view) for view in views]
    layout: list[list[int]] = [[] for _ in views]
    pieces: list[list[Any]] = []
    sizes: list[int] = []
    for kind in (True, False):
        group = [i for i, c in enumerate(copied) if c is kind]
        if not group:
            continue
        total = sum(views[i].nbytes for i in group)
        ends = list(itertools.accumulate(share * total for share in _shares(total)))[:-1]  # where members end
        done, member = 0, 0
        pieces.append([])
        sizes.append(0)
        for i in group:
            if member < len(ends) and done >= ends[member]:
                member += 1
                sizes.append(0)
                pieces.append([])
            done += views[i].nbytes
            pad = -sizes[-1] % _ALIGN
            if pad:
                pieces[-1].append(_ZEROS[:pad])
            layout[i] = [len(sizes) - 1, sizes[-1] + pad, views[i].nbytes]
            pieces[-1].append(views[i])
            sizes[-1] += pad + views[i].nbytes
    return pieces, sizes, layout


class _GraphPickler(pickle.Pickler):
    """Pickles a graph, handing objects of native-format frameworks to their own flavor."""

    def __init__(self, file: io.BytesIO, store: ComponentStore, root: Any, buffers: list[pickle.PickleBuffer],
                 roots: frozenset[str]) -> None:
        super().__init__(file, protocol=PROTOCOL, buffer_callback=_keep_out_of_band(buffers))
        self._store = store
        self._root = root
        self._roots = roots
        self.embedded: list[dict[str, Any]] = []
        self.saved: list[SavedComponent] = []
        #: id(obj) -> index, so an object the graph references twice is saved once (and stays one object).
        self._seen: dict[int, int] = {}
        self._keep: list[Any] = []  # keeps ids unique while pickling
        #: type -> whether a class in its MRO comes from a native framework (a user's nn.Module subclass does).
        self._native_types: dict[type, bool] = {}

    def _native(self, cls: type) -> bool:
        found = self._native_types.get(cls)
        if found is None:
            found = any((getattr(c, "__module__", None) or "").partition(".")[0] in self._roots for c in cls.__mro__)
            self._native_types[cls] = found
        return found

    def persistent_id(self, obj: Any) -> Any:
        if obj is self._root or not self._native(type(obj)):
            return None
        from modelsafe.flavors import detect_flavor, get_flavor

        if id(obj) in self._seen:
            return (EMBEDDED_TAG, self._seen[id(obj)])
        flavor = get_flavor(detect_flavor(obj))
        if not flavor.can_embed(obj):
            return None
        index = len(self.embedded)
        self._seen[id(obj)] = index
        self._keep.append(obj)
        sub = self._store.sub(f"embedded/{index}")
        saved = flavor.save(obj, sub, {})
        self.saved.append(saved)
        self.embedded.append({"flavor": flavor.name, "flavor_version": flavor.version, "type": saved.type_name,
                              "prefix": f"embedded/{index}", "data": saved.data})
        return (EMBEDDED_TAG, index)


def _native_roots() -> frozenset[str]:
    """Top-level packages of native-format frameworks that are imported in this process."""
    from modelsafe.flavors import native_roots

    return frozenset(root for root in native_roots() if root in sys.modules)


def dump_graph(obj: Any, store: ComponentStore) -> SavedComponent:
    """Pickle ``obj`` with out-of-band buffers into ``store``; record its globals."""
    from modelsafe.security._inert import summarize_own_stream

    buffers: list[pickle.PickleBuffer] = []
    out = io.BytesIO()
    roots = _native_roots()
    # Without a native framework imported, no object can need embedding: the plain C
    # pickler then runs without a Python call per object.
    pickler = (_GraphPickler(out, store, obj, buffers, roots) if roots
               else pickle.Pickler(out, protocol=PROTOCOL, buffer_callback=_keep_out_of_band(buffers)))
    try:
        pickler.dump(obj)
    except (UnsavableObjectError, FormatError):
        raise
    except Exception as exc:  # any pickling failure is diagnosed the same way
        raise unsavable(obj, exc) from exc
    stream = out.getbuffer()
    summary = summarize_own_stream(stream)
    pieces, sizes, layout = _lay_out(buffers) if buffers else ([], [], [])
    names = [store.write(f"buffers-{i}.bin", part, size=size) for i, (part, size) in enumerate(zip(pieces, sizes))]
    store.write(STREAM, stream)
    refs = sorted(summary.globals, key=lambda g: g.qualname)
    data: dict[str, Any] = {
        "stream": STREAM,
        "protocol": PROTOCOL,
        "buffer_members": names,
        "buffers": layout,
        "globals": [g.qualname for g in refs],
        "invoked": [g.qualname for g in refs if g.invoked],
    }
    saved = SavedComponent(data=data, modules={g.module for g in refs}, type_name=type_name(obj),
                           refs={(g.module, g.name) for g in refs})
    embedded = list(zip(pickler.embedded, pickler._keep)) if isinstance(pickler, _GraphPickler) else []
    if embedded:
        data["embedded"] = pickler.embedded
        for sub in pickler.saved:
            saved.modules |= sub.modules
            saved.refs |= sub.refs
    remember(obj, ((entry["flavor"], sub) for entry, sub in embedded))  # for the replay (flavors._embedded)
    return saved


def _embedded(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    embedded = data.get("embedded", [])
    if not isinstance(embedded, list) or not all(isinstance(e, dict) and "flavor" in e for e in embedded):
        raise FormatError("The manifest's list of embedded components is malformed; the artifact is damaged. "
                          "Re-export the model from its source.")
    return embedded


def audit_graph(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
    """Audit the stream (and every embedded component) before anything is constructed."""
    from modelsafe.flavors import get_flavor
    from modelsafe.security import audit_pickle, summarize_verified

    embedded = _embedded(data)
    stream = data["stream"]
    summary = audit_pickle(
        summarize_verified(source.view(stream), source.digest(stream), cache=options.extra.get("hash_cache", True)),
        trusted=options.trusted,
        allowed_modules=options.allowed_modules,
        recorded=data.get("globals", ()),
        allow_persistent=bool(embedded),
        environment=options.environment,
    )
    for entry in embedded:
        get_flavor(entry["flavor"]).audit(source.sub(entry["prefix"]), entry.get("data", {}), options)
    source.cache["audit"] = summary
    return summary


def check_resolvable(names: list[tuple[str, str]], options: LoadOptions) -> None:
    """Refuse, before anything is built, a stream whose globals the installed packages lack.

    Every name passed the allowlist already; here each is looked up in the installed
    package (the modules are imported, nothing is called). A module or attribute that is
    gone means the package changed since saving: an error naming both versions now beats
    a ModuleNotFoundError, or an AttributeError at predict, later.
    """
    for module, name in names:
        if module in options.allowed_modules:
            continue  # bundled or local code, resolved by modelsafe.code.bundle
        problem = _missing(module, name)
        if problem is not None:
            raise _version_refusal(module, name, problem, options)


def _missing(module: str, name: str) -> str | None:
    from modelsafe.security._cython import substitute
    from modelsafe.security._unpickler import current_numpy_module

    if substitute(module, name) is not None:
        return None  # an older release's Cython reconstructor, rebuilt by the installed type

    try:
        target: Any = importlib.import_module(current_numpy_module(module))
    except ImportError:
        return f"has no module {module}"
    for part in name.split("."):
        if not hasattr(target, part):
            return f"has no {module}.{name}"
        target = getattr(target, part)
    return None


def _version_refusal(module: str, name: str, problem: str, options: LoadOptions) -> EnvironmentMismatchError:
    from modelsafe.checks.environment import distribution_for_module

    found = distribution_for_module(module)
    dist, current = found if found is not None else (module.split(".")[0], "not installed")
    saved = options.environment.get("packages", {}).get(dist, {}).get("version") or "unknown"
    needed = f"{module}.{name}"
    if module.startswith("numpy._core") and current.split(".")[0] == "1":
        message = (f"The artifact needs {needed}: it was saved with numpy {saved}, whose internals live in "
                   f"numpy._core, and this environment has numpy {current}, which has no numpy._core. Nothing was "
                   f"loaded. Install numpy>=2 here (pip install 'numpy>={saved}'), or load the model where it was "
                   "saved and re-save it in an environment with numpy 1.x.")
    else:
        message = (f"The artifact needs {needed}, but {dist} {current} installed here {problem}; the model was "
                   f"saved with {dist} {saved}. Nothing was loaded. Install the saved version (pip install "
                   f"'{dist}=={saved}'), or load the model where it was saved and re-save it with {dist} {current}.")
    return EnvironmentMismatchError(message, packages=[dist], modules=[module], missing=[needed],
                                    saved=saved, current=current)


def load_graph(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
    """Rebuild the object through the restricted unpickler (audited first)."""
    from modelsafe.security import restricted_loads

    # One private, writable copy per member (usually the very buffer the integrity check
    # read and hashed): estimators may modify their arrays, and the object must not depend
    # on the artifact file staying in place.
    # Small buffers get their own copy, so a small array that lives on (a tree's classes_)
    # does not keep a whole member in memory (artifacts written before INBAND_BYTES).
    members = [memoryview(source.private(name)) for name in data.get("buffer_members", ())]
    buffers = [members[part][offset : offset + length] if length >= INBAND_BYTES
               else bytearray(members[part][offset : offset + length])
               for part, offset, length in data.get("buffers", ())]
    embedded = _embedded(data)
    audited = source.cache.get("audit") or audit_graph(source, data, options)
    # Here rather than in the audit: after the environment check, so env="strict" names every package first.
    check_resolvable([(g.module, g.name) for g in audited.globals], options)
    loaded: dict[int, Any] = {}
    root = restricted_loads(
        source.view(data["stream"]),
        buffers=buffers,
        trusted=options.trusted,
        allowed_modules=options.allowed_modules,
        recorded=data.get("globals", ()),
        resolve=options.resolve,
        persistent_load=_embedded_loader(source, embedded, options, loaded) if embedded else None,
        audited=audited,
    )
    remember(root, ((embedded[i]["flavor"], obj) for i, obj in sorted(loaded.items())))
    return root


def _embedded_loader(source: ComponentSource, embedded: list[Mapping[str, Any]], options: LoadOptions,
                     loaded: dict[int, Any]) -> Callable[[Any], Any]:
    """The unpickler's ``persistent_load``: each component rebuilt by its flavor, once, into ``loaded``."""
    from modelsafe.flavors import get_flavor

    def load(pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 2 and pid[0] == EMBEDDED_TAG
                and isinstance(pid[1], int) and 0 <= pid[1] < len(embedded)):
            raise FormatError(f"The pickle stream refers to an unknown embedded component {pid!r}; the artifact "
                              "is damaged or was tampered with. Re-export the model from its source.")
        if pid[1] not in loaded:  # one object per component, however often the graph refers to it
            entry = embedded[pid[1]]
            loaded[pid[1]] = get_flavor(entry["flavor"]).load(source.sub(entry["prefix"]), entry.get("data", {}),
                                                              options)
        return loaded[pid[1]]

    return load


class GraphFlavor(Flavor):
    """A flavor whose objects are stored as a pickled graph (scikit-learn, plain Python)."""

    def save(self, obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
        return dump_graph(obj, store)

    def audit(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
        audit_graph(source, data, options)

    def load(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
        return load_graph(source, data, options)

    def copied_members(self, data: Mapping[str, Any]) -> list[str]:
        return list(data.get("buffer_members", ()))

    def replay_context(self, obj: Any) -> contextlib.AbstractContextManager[None]:
        """:meth:`graph_replay_context`, and inside it that of every component embedded in the graph
        (a Pipeline's LightGBM step), as saved or loaded here (see :mod:`modelsafe.flavors._embedded`)."""
        return replaying(self.graph_replay_context(obj), obj)

    def graph_replay_context(self, obj: Any) -> contextlib.AbstractContextManager[None]:
        """The replay context of the graph's own objects (see :meth:`Flavor.replay_context`). Default: none."""
        return contextlib.nullcontext()

    def load_keywords(self, data: Mapping[str, Any]) -> frozenset[str]:
        """This flavor's load options and those of every embedded component (a torch model in a Pipeline)."""
        from modelsafe.flavors import get_flavor

        names = set(self.load_options)
        for entry in _embedded(data):
            names |= get_flavor(entry["flavor"]).load_keywords(entry.get("data", {}))
        return frozenset(names)


def type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def unsavable(obj: Any, exc: BaseException) -> UnsavableObjectError:
    """Turn a pickling failure into an error that lists every offending attribute."""
    from modelsafe.code.diagnose import find_unsavable, unsavable_error

    problems = find_unsavable(obj)
    if not problems:
        problems = [("<root>", type_name(obj), f"{type(exc).__name__}: {exc}")]
    return unsavable_error(problems)
