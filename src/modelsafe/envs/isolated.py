"""``load(path, isolate=True)``: a Bundle whose model runs in a worker process inside the recreated environment.

The steps in the calling process: the manifest -> the signature beside the artifact -> every
member's hash -> the environment (``isolate=True``: recreated from the recorded requirements, or
reused from the cache; a path: that environment) -> the worker started, which loads the artifact
with every check of ``ms.load`` there (integrity, trust gate, audit, environment, deserialize) ->
verification: the worker replays the stored sample, and this process compares the outputs with
the recorded ones it read itself -> the environment warning under ``env="warn"``.

``predict`` and the model's other methods run the input guard here, then send the guarded input
to the worker (``.npy`` over a pipe, see :mod:`modelsafe.envs.protocol`), which preprocesses and
predicts. ``bundle.model`` is a proxy that reads data attributes of the model in the worker
(``bundle.model.classes_``). Neither this process nor the worker ever unpickles what the other sent.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelsafe._bundle import Bundle, Route
from modelsafe.artifact.location import is_url
from modelsafe.artifact.manifest import Manifest
from modelsafe.artifact.reader import ArtifactReader, open_artifact, read_manifest
from modelsafe.envs.client import Worker
from modelsafe.envs.protocol import Blob, pack, unpack
from modelsafe.errors import EnvironmentBuildError, IsolatedWorkerError
from modelsafe.flavors._base import ComponentSource

__all__ = ["IsolatedBundle", "environment_python", "load_isolated"]

#: load's keywords used in this process; the others go to the worker's load (flavor options among them).
_HERE = ("progress", "hash_cache", "signature", "trusted_keys")


def load_isolated(path: Any, isolate: Any, *, verify: bool = True, env: str = "warn", device: str | None = None,
                  trust_code: bool = False, trusted: Any = (), code: str = "auto", strict: bool = True,
                  storage_options: Mapping[str, Any] | None = None, **extra: Any) -> IsolatedBundle:
    """``ms.load(path, isolate=...)``: see the module's docstring. ``isolate`` is True or an environment's path."""
    local = _local_path(path, storage_options)
    reader = open_artifact(local)
    try:
        manifest = read_manifest(reader)
        _check_here(local, reader, manifest, extra)
        python = _python_for(isolate, manifest, str(local))
        options = {"trust_code": trust_code, "trusted": list(trusted), "code": code, "strict": strict,
                   "device": device, "env": "strict" if env == "strict" else "ignore", "signature": "ignore",
                   **{k: v for k, v in extra.items() if k not in _HERE}}
        bundle = IsolatedBundle(local, manifest, reader, python, options)
    except BaseException:
        reader.close()
        raise
    try:
        if verify:
            bundle.verify().raise_if_failed()
        if env == "warn" and bundle.env_report is not None:
            from modelsafe.checks.environment import warn_environment

            warn_environment(bundle.env_report, stacklevel=4)
    except BaseException:
        bundle.close()
        raise
    return bundle


def _local_path(path: Any, storage_options: Mapping[str, Any] | None) -> Path:
    text = os.fspath(path)
    if is_url(text) and not text.startswith("file://"):
        raise IsolatedWorkerError(
            f"isolate= needs the artifact on this machine, and {text!r} is a URL: the worker runs in the recreated "
            "environment, which holds the model's packages and modelsafe but no storage client. Copy it here first "
            "(fsspec: fsspec.filesystem(protocol).get(url, local_path)) and load the local copy.",
            path=text, operation="load")
    return Path(text.removeprefix("file://")).absolute()


def _check_here(path: Path, reader: ArtifactReader, manifest: Manifest, extra: Mapping[str, Any]) -> None:
    """The keywords, the signature and every member's hash, before the worker starts (it checks the hashes
    again)."""
    from modelsafe._load import refuse_unknown_keywords
    from modelsafe.artifact.integrity import MemberChecks
    from modelsafe.signing.gate import check_before_load

    refuse_unknown_keywords(extra, manifest)  # those the worker's load would not read, before it starts
    check_before_load(path, reader, manifest, extra)
    MemberChecks(reader, manifest.members, progress=extra.get("progress"), cache=extra.get("hash_cache", True)).wait_all()


def _python_for(isolate: Any, manifest: Manifest, where: str) -> Path:
    if isolate is True:
        from modelsafe.envs.build import ensure_env

        return ensure_env(manifest.environment, where).python
    if isinstance(isolate, (str, os.PathLike)):
        return environment_python(isolate)
    raise ValueError(f"Invalid `isolate`: expected True or the path of a Python environment. Received: isolate={isolate!r}")


def environment_python(location: str | os.PathLike[str]) -> Path:
    """The Python of the environment at ``location`` (a virtual environment's folder, or a Python executable)."""
    from modelsafe.envs.cache import EnvFolder

    path = Path(location).expanduser().absolute()
    if EnvFolder(path).interrupted():
        raise EnvironmentBuildError(
            f"isolate={str(location)!r} is an environment whose build was interrupted: it may lack packages, so it is "
            "never used. Build it again: ms.recreate_env(path, that folder), or pass isolate=True.",
            reason="destination", destination=str(path))
    if path.is_dir():
        for candidate in (path / "bin" / "python", path / "Scripts" / "python.exe"):
            if candidate.exists():
                return candidate
    elif path.is_file() and os.access(path, os.X_OK):
        return path
    raise EnvironmentBuildError(
        f"isolate={str(location)!r} is neither a Python environment (no bin/python in it) nor a Python executable, "
        "so the model has nowhere to run. Pass isolate=True to recreate the artifact's environment, or the folder "
        "of one (ms.recreate_env returns where it built it).", reason="destination", destination=str(path))


class _RemoteMethods:
    """Stands for the model's flavor where the Bundle asks whether the model has a method."""

    def __init__(self, methods: tuple[str, ...]) -> None:
        self.methods = methods

    def has_method(self, model: Any, name: str) -> bool:
        return name == "predict" or name in self.methods


class RemoteObject:
    """A component in the worker: its data attributes are read from there (``bundle.model.classes_``)."""

    def __init__(self, worker: Worker, component: str, type_name: str) -> None:
        self._worker, self._component, self._type_name = worker, component, type_name

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_worker", "_component", "_type_name"):
            raise AttributeError(name)
        reply, blobs = self._worker.request("attribute", {"component": self._component, "name": name})
        return reply["json"] if "json" in reply else unpack(reply["data"], blobs, tensors=_has_torch())

    def __repr__(self) -> str:
        return f"<{self._type_name} in the isolated worker ({self._worker.python})>"


class _IsolatedRoute(Route):
    """The Route of an isolated bundle: the guard here, preprocess and model in the worker."""

    def __init__(self, worker: Worker, model: RemoteObject, methods: tuple[str, ...], schema: Any) -> None:
        super().__init__(model, _RemoteMethods(methods), None, None, schema)  # type: ignore[arg-type]
        self.worker = worker

    def call(self, method: str, x: Any, check: bool = True) -> Any:
        blobs: list[Blob] = []
        spec = pack(self.inputs(x, check), blobs)
        reply, out = self.worker.request("call", {"method": method, "data": spec}, blobs)
        return unpack(reply["data"], out, tensors=_has_torch())

    def outputs(self, x: Any, check: bool = True) -> dict[str, Any]:
        blobs: list[Blob] = []
        spec = pack(self.inputs(x, check), blobs)
        reply, out = self.worker.request("outputs", {"data": spec}, blobs)
        return unpack(reply["data"], out, tensors=_has_torch())

    def replay(self, x: Any) -> dict[str, Any]:
        """The verification sample's outputs, from the worker (``x`` is not needed: it reads the sample itself)."""
        reply, out = self.worker.request("outputs", {})
        return unpack(reply["data"], out, tensors=False)


class IsolatedBundle(Bundle):
    """A Bundle whose model runs in a worker process inside another environment (``ms.load(path, isolate=...)``).

    Examples
    --------
    >>> import modelsafe as ms
    >>> bundle = ms.load("/tmp/doc-model.msafe", isolate=True)       # doctest: +SKIP
    >>> bundle.predict(bundle.sample_inputs()).shape                 # doctest: +SKIP
    (5,)
    >>> bundle.close()                                               # doctest: +SKIP
    """

    def __init__(self, path: Path, manifest: Manifest, reader: ArtifactReader, python: Path,
                 options: Mapping[str, Any]) -> None:  # Bundle.__init__ would need the flavors here: not called
        self.path, self.manifest, self._reader = path, manifest, reader
        self.code_changes: tuple[str, ...] = ()
        self.env_report = None
        self.runtime = "native"  # the model's framework runs it, in the worker
        self._tolerances = None  # the recorded ones (as Bundle sets them for the native runtime)
        #: The Python of the environment the model runs in.
        self.python = python
        self._options = dict(options)
        self._worker = Worker(python, setup=self._setup)
        model = RemoteObject(self._worker, "model", manifest.components["model"].type_name or "model")
        self._route = _IsolatedRoute(self._worker, model, (), manifest.schema)
        self._worker.request("hello")  # starts it: the load runs now, and its errors are load's

    def _setup(self, worker: Worker) -> None:
        """Load the artifact in a (re)started worker, and compare its environment with the recorded one."""
        from modelsafe.checks.environment import compare_environments

        reply, _ = worker.request("load", {"path": str(self.path), "options": self._options})
        self._route.model_flavor = _RemoteMethods(tuple(reply["methods"]))
        self.env_report = compare_environments(dict(self.manifest.environment or {}), reply["environment"])

    @property
    def model(self) -> Any:
        """A proxy of the model in the worker: data attributes only (methods run through the bundle)."""
        return self._route.model

    @model.setter
    def model(self, value: Any) -> None:
        raise IsolatedWorkerError("The model of an isolated bundle lives in its worker process and cannot be replaced "
                                  "from here. Load the artifact without isolate= to swap models.", operation="model")

    @property
    def preprocess(self) -> Any:
        """A proxy of the preprocessing in the worker, or None."""
        if "preprocess" not in self.manifest.components:
            return None
        return RemoteObject(self._worker, "preprocess", self.manifest.components["preprocess"].type_name or "preprocess")

    @preprocess.setter
    def preprocess(self, value: Any) -> None:
        raise IsolatedWorkerError("The preprocessing of an isolated bundle lives in its worker process and cannot be "
                                  "replaced from here.", operation="preprocess")

    def __repr__(self) -> str:
        return f"<modelsafe.Bundle {str(self.path)!r} flavor={self.manifest.flavor!r} isolated in {str(self.python)!r}>"

    def verify(self) -> Any:
        """Replay the stored sample in the worker; compare here with the outputs recorded at save (never raises)."""
        from modelsafe.checks.verify import Sample, VerifyReport, replay

        spec = self.manifest.verification
        if not spec:
            return VerifyReport(path=str(self.path), skipped="no sample")
        source = ComponentSource(self._reader, "sample")
        sample = Sample(inputs=None, outputs={name: source.read_array(o["member"]) for name, o in spec["outputs"].items()},
                        tolerances={name: o.get("tolerance") for name, o in spec["outputs"].items()},
                        rows=int(spec.get("rows", 0)))
        environment = self.env_report.summary() if self.env_report is not None else ""
        return replay(str(self.path), sample, self._route.replay, self.code_changes, environment)

    @property
    def worker_pid(self) -> int | None:
        """The worker's process id (None before the first start or after close)."""
        return self._worker.pid if self._worker.alive else None

    def close(self) -> None:
        """Stop the worker and release the artifact file."""
        self._worker.stop()
        self._reader.close()

    def __del__(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.stop()
        super().__del__()


@functools.lru_cache(maxsize=1)
def _has_torch() -> bool:
    """Whether tensors can come back as torch tensors here (looked up once: a lookup walks sys.path)."""
    return importlib.util.find_spec("torch") is not None
