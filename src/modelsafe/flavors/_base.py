"""The small interface every flavor implements, and the member I/O it gets.

``LoadOptions`` (what the caller of ``load`` allowed) lives in :mod:`modelsafe._options`, below the
code gate that reads it too; it is re-exported here for the flavors.

A flavor saves one object (a component) into members under its own prefix, audits
those members before anything is deserialized, loads them, and runs the object.
Flavors never open artifact files themselves: they get a :class:`ComponentStore`
when saving and a :class:`ComponentSource` when loading.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Iterator, Mapping

from modelsafe._options import LoadOptions

if TYPE_CHECKING:
    import numpy as np

    from modelsafe.artifact.reader import ArtifactReader
    from modelsafe.artifact.writer import ArtifactWriter
    from modelsafe.flavors.onnx_graph import OnnxGraph


class ComponentStore:
    """Writes the members of one component, all under ``prefix/``."""

    def __init__(self, writer: "ArtifactWriter", prefix: str) -> None:
        self._writer = writer
        self.prefix = prefix
        self.members: list[str] = []

    def member_name(self, relname: str) -> str:
        return f"{self.prefix}/{relname}"

    def write(self, relname: str, data: Any, *, size: int | None = None) -> str:
        """Write bytes, or an iterable of buffers, as member ``prefix/relname``."""
        name = self.member_name(relname)
        self._writer.add(name, data, size=size)
        self.members.append(name)
        return relname

    @contextlib.contextmanager
    def open(self, relname: str, *, size: int | None = None) -> Iterator[Any]:
        """A writable, hashing stream for member ``prefix/relname``."""
        name = self.member_name(relname)
        with self._writer.open_member(name, size=size) as stream:
            yield stream
        self.members.append(name)

    def sub(self, relprefix: str) -> "ComponentStore":
        """A store for a nested component under ``prefix/relprefix``; its members count as ours."""
        child = ComponentStore(self._writer, self.member_name(relprefix))
        child.members = self.members  # one list: the parent component owns every member
        return child

    def write_array(self, relname: str, array: "np.ndarray") -> str:
        """Write a numpy array as ``.npy`` (never pickled)."""
        from modelsafe.checks.data import npy_bytes

        return self.write(relname, npy_bytes(array))


class ComponentSource:
    """Reads the members of one component; a member's integrity is checked before it is read."""

    def __init__(self, reader: "ArtifactReader", prefix: str) -> None:
        self._reader = reader
        self.prefix = prefix
        #: Results a flavor's audit hands to its load (e.g. the pickle audit summary).
        self.cache: dict[str, Any] = {}

    @property
    def path(self) -> str:
        return str(self._reader.path)

    def sub(self, relprefix: str) -> "ComponentSource":
        """The source of a nested component stored under ``prefix/relprefix``."""
        return ComponentSource(self._reader, f"{self.prefix}/{relprefix}")

    def has(self, relname: str) -> bool:
        return self._reader.has(f"{self.prefix}/{relname}")

    def _member(self, relname: str) -> str:
        name = f"{self.prefix}/{relname}"
        if self._reader.gate is not None:
            self._reader.gate(name)  # wait until the member's hash has been checked
        return name

    def view(self, relname: str) -> memoryview:
        """Zero-copy read-only view (memory-mapped where the container allows)."""
        return self._reader.view(self._member(relname))

    def read(self, relname: str) -> bytes:
        return bytes(self.view(relname))

    def digest(self, relname: str) -> str | None:
        """The SHA-256 the member's bytes were verified to have (None when no integrity check ran)."""
        name = self._member(relname)
        return None if self._reader.verified is None else self._reader.verified.get(name)

    def private(self, relname: str) -> Any:
        """A writable copy of the member that nothing else shares (see ArtifactReader.private)."""
        return self._reader.private(self._member(relname))

    def locate(self, relname: str) -> tuple[int, int] | None:
        """``(fd, offset)`` for ``os.pread`` of a plainly stored member (see ArtifactReader.locate)."""
        return self._reader.locate(self._member(relname))

    def read_array(self, relname: str, *, copy: bool = True) -> "np.ndarray":
        from modelsafe.checks.data import npy_load

        return npy_load(self.view(relname), copy=copy)


@dataclass
class SavedComponent:
    """What a flavor's ``save`` returns.

    ``data`` is the flavor's JSON. ``modules`` are the modules whose distributions the
    environment fingerprint records. ``refs`` are the ``(module, qualname)`` globals the
    component needs at load (classes, functions): :mod:`modelsafe.code.bundle` bundles the source
    of those defined in ``__main__``, a notebook or a local module.
    """

    data: dict[str, Any]
    modules: set[str] = field(default_factory=set)
    type_name: str = ""
    refs: set[tuple[str, str]] = field(default_factory=set)


class Flavor:
    """Base class of flavors. One instance per flavor, kept by the registry."""

    #: Registry name, stored in the manifest.
    name: ClassVar[str] = ""
    #: Bumped when the flavor's stored layout changes; old readers are kept.
    version: ClassVar[int] = 1
    #: Whether a tuple or list of arrays is several inputs (``forward(a, b)``, Keras ``[a, b]``)
    #: rather than rows of one input; the input schema then records each input.
    positional_inputs: ClassVar[bool] = False
    #: Keywords of ``ms.save`` this flavor reads (from ``options``) for the model it saves.
    save_options: ClassVar[frozenset[str]] = frozenset()
    #: Keywords of ``ms.load`` this flavor reads (from ``LoadOptions.extra``).
    load_options: ClassVar[frozenset[str]] = frozenset()

    def save(self, obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
        raise NotImplementedError  # abstract

    def audit(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
        """Refuse unsafe content before anything is deserialized. Default: nothing to check."""

    def load(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
        raise NotImplementedError  # abstract

    def load_keywords(self, data: Mapping[str, Any]) -> frozenset[str]:
        """Keywords of ``ms.load`` that loading this component reads: ``load_options``, and those
        of the components nested in it. Default: ``load_options``."""
        return self.load_options

    def copied_members(self, data: Mapping[str, Any]) -> Iterable[str]:
        """Members ``load`` reads in full into private memory (with :meth:`ComponentSource.private`).

        The integrity check reads these into private buffers as it hashes them, so the bytes
        that are used are exactly the bytes that were checked, and are read only once.
        Default: none (members are read through zero-copy views).
        """
        return ()

    def can_embed(self, obj: Any) -> bool:
        """Whether ``obj``, found inside a pickled graph (a Pipeline step), is saved by this flavor.

        Native-format flavors (XGBoost, LightGBM, PyTorch, Keras) return True for the model
        types they save, so those never go through the pickle stream.
        """
        return False

    # -- running the object -------------------------------------------------------------
    def predict(self, obj: Any, x: Any) -> Any:
        """The model's main output for input ``x``."""
        if hasattr(obj, "predict"):
            return obj.predict(x)
        if hasattr(obj, "transform"):
            return obj.transform(x)
        return obj(x)

    def has_method(self, obj: Any, method: str) -> bool:
        """Whether ``obj`` offers ``method`` (``predict_proba``, ``decision_function``, ``transform``)."""
        return method == "predict" or callable(getattr(obj, method, None))

    def call(self, obj: Any, method: str, x: Any) -> Any:
        """Run ``obj``'s ``method`` on input ``x`` (``predict`` is :meth:`predict`)."""
        if method == "predict":
            return self.predict(obj, x)
        return getattr(obj, method)(x)

    def transform(self, obj: Any, x: Any) -> Any:
        """Apply ``obj`` as a preprocessing step."""
        if hasattr(obj, "transform"):
            return obj.transform(x)
        return obj(x)

    def outputs(self, obj: Any, x: Any) -> dict[str, Any]:
        """Reference outputs recorded for verification. Default: ``{"predict": predict(x)}``."""
        return {"predict": self.predict(obj, x)}

    def replay_context(self, obj: Any) -> contextlib.AbstractContextManager[None]:
        """Where the verification sample is replayed (a few rows, at save and at load): without the
        worker pools ``obj`` would start for them (their start-up costs more than the prediction).

        Never changes ``obj``'s own settings: a flavor sets a per-call or scoped option only.
        Default: nothing to set.
        """
        return contextlib.nullcontext()

    def embedded_replay_context(self, obj: Any) -> contextlib.AbstractContextManager[None]:
        """:meth:`replay_context` for ``obj`` embedded in a pickled graph (a Pipeline step): the graph calls
        ``obj`` itself, so only settings that reach calls made by others apply, not per-call options of
        this flavor's own calls. Default: :meth:`replay_context`."""
        return self.replay_context(obj)

    def device_info(self, obj: Any) -> dict[str, Any]:
        """Device facts for the environment fingerprint (e.g. CUDA versions)."""
        return {}

    def to_onnx(self, obj: Any, schema: Mapping[str, Any] | None, sample: Any) -> "OnnxGraph":
        """For ``save(portable="onnx")``: ``obj`` as an ONNX graph fed from the input recorded as ``schema``
        (see :mod:`modelsafe.flavors.onnx_graph`); ``sample`` is the verification sample's inputs.

        Each framework's converter lives in its own folder. Default: there is none.
        """
        from modelsafe.errors import UnsupportedModelError

        kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
        raise UnsupportedModelError(
            f"The {self.name} flavor has no ONNX converter, so {kind} cannot get a portable member. ONNX converters "
            "exist for scikit-learn, XGBoost, LightGBM, PyTorch and Keras models. Save it without portable=.",
            type_name=kind, flavor=self.name)

    def diagnose_file(self, path: str, report: Any) -> Any:
        """For ``ms.doctor``: why a non-modelsafe file of this framework won't load here.

        Called when the file's pickle streams name globals from this framework (the flavor is
        found through ``flavors._DETECT``). ``report`` is the file's
        :class:`modelsafe.ScanReport` (every stream with its globals, items and facts); the
        file has not been loaded, and must not be. Return a list of
        :class:`modelsafe._reports.Problem` (what, why, fix, severity, subject), or an object
        with ``problem()`` and ``fix()`` methods, or None. Default: nothing to add.
        """
        return None
