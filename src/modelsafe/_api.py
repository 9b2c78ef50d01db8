"""The verbs: save, load, inspect, verify, check_env. Each reads as a pipeline of named steps.

``load`` runs, in the order the spec gives: manifest -> format version -> integrity ->
security audit (nothing from the artifact is imported before this) -> environment
check -> deserialize -> verification.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from modelsafe._archive import MANIFEST_NAME, ArtifactReader, ArtifactWriter, open_artifact
from modelsafe._manifest import FORMAT_VERSION, Component, Manifest, MemberRecord
from modelsafe.errors import FormatError, ModelsafeError, SaveError
from modelsafe.flavors import detect_flavor, get_flavor
from modelsafe.flavors._base import ComponentSource, ComponentStore, LoadOptions, SavedComponent

if TYPE_CHECKING:
    from modelsafe._environment import EnvReport
    from modelsafe._verify import Sample, VerifyReport

PathLike = str | os.PathLike[str]
#: At most this many sample rows are stored for verification (the schema uses them all).
MAX_SAMPLE_ROWS = 100
_ENV_MODES = ("strict", "warn", "ignore")
_CODE_MODES = ("auto", "bundled", "current")


# ---------------------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------------------


@dataclass
class _SaveState:
    obj: Any
    path: Path
    sample: Any
    preprocess: Any
    code: tuple[Any, ...]
    metadata: Mapping[str, Any]
    options: Mapping[str, Any]
    components: dict[str, Component] = field(default_factory=dict)
    saved: dict[str, SavedComponent] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    schema: dict[str, Any] | None = None
    code_records: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)


def save(obj: Any, path: PathLike, *, sample: Any = None, preprocess: Any = None, code: Iterable[Any] = (),
         metadata: Mapping[str, Any] | None = None, overwrite: bool = False, **options: Any) -> Manifest:
    """Save ``obj`` (and its preprocessing) as a self-describing, verifiable artifact.

    Parameters
    ----------
    obj
        A fitted model: scikit-learn estimator or Pipeline, PyTorch module, Keras model,
        XGBoost model, or a plain callable / object with ``predict``.
    path
        ``*.msafe`` for a single file; any other path gives a folder with the same members.
    sample
        A few input rows (numpy, pandas, tensor, list of texts). Their outputs are recorded
        and re-checked after every load; the input schema is recorded from them.
    preprocess
        Anything applied to raw input before the model (transformer, tokenizer, function).
    code
        Extra modules (objects or paths) whose source is bundled.
    metadata
        JSON-able user metadata.
    overwrite
        Replace an existing artifact at ``path``.
    **options
        ``training_data=X`` records the input ranges from ``X`` instead of the sample, so
        the input guard knows what the model saw in training. Other options go to the
        model's flavor (e.g. ``init_args=`` for PyTorch).

    Returns
    -------
    Manifest
        What was written.

    Examples
    --------
    >>> import modelsafe as ms, numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
    >>> manifest = ms.save(LogisticRegression().fit(X, y), "/tmp/doc-model.msafe", sample=X[:5], overwrite=True)
    >>> manifest.flavor
    'sklearn'
    """
    training_data = options.pop("training_data", None)
    state = _SaveState(obj=obj, path=Path(path), sample=sample, preprocess=preprocess, code=tuple(code),
                       metadata=dict(metadata or {}), options=options)
    _check_metadata(state.metadata)
    state.schema = _capture_schema(sample, training_data)
    with ArtifactWriter(state.path, overwrite=overwrite, progress=options.pop("progress", None)) as writer:
        _save_components(state, writer)
        _save_sample(state, writer)
        _save_code(state, writer)
        _capture_environment(state)
        manifest = _build_manifest(state, writer)
        writer.commit(manifest.to_json())
    return manifest


def _check_metadata(metadata: Mapping[str, Any]) -> None:
    import json

    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SaveError(
            f"metadata must be JSON-able ({exc}): it is stored as JSON in the manifest. "
            "Convert values to str, int, float, bool, lists or dicts.",
        ) from exc


def _save_components(state: _SaveState, writer: ArtifactWriter) -> None:
    parts = {"model": state.obj}
    if state.preprocess is not None:
        parts["preprocess"] = state.preprocess
    for key, obj in parts.items():
        flavor = get_flavor(detect_flavor(obj))
        store = ComponentStore(writer, key)
        # The model's flavor also gets its input sample (e.g. to export a program from it, or to
        # check at save that the recorded architecture rebuilds a model that predicts the same).
        model_sample = state.sample if state.preprocess is None else None
        options = {**state.options, "sample": model_sample} if key == "model" else {}
        saved = flavor.save(obj, store, options)
        state.saved[key] = saved
        state.components[key] = Component(flavor=flavor.name, flavor_version=flavor.version,
                                          members=tuple(store.members), data=saved.data,
                                          type_name=saved.type_name)


def _save_sample(state: _SaveState, writer: ArtifactWriter) -> None:
    if state.sample is None:
        return
    from modelsafe._data import as_arrays, encode
    from modelsafe._verify import default_tolerance

    inputs = _head(state.sample, MAX_SAMPLE_ROWS)
    try:
        outputs = _run_outputs(state.obj, state.preprocess, inputs, state.components)
    except (ModelsafeError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise SaveError(
            f"The model failed on the verification sample at save: {type(exc).__name__}: {exc}. "
            "A sample must be input the model accepts (with preprocess applied by modelsafe, if given). "
            "Pass a few rows of real input, or sample=None to skip verification.",
        ) from exc
    store = ComponentStore(writer, "sample")

    def write(name: str, array: Any) -> str:
        return store.write_array(name, array)

    spec_inputs = encode(inputs, write, "inputs")
    recorded: dict[str, Any] = {}
    for name, value in outputs.items():
        arr = as_arrays(value)
        recorded[name] = {"member": store.write_array(f"outputs/{name}.npy", arr),
                          "dtype": str(arr.dtype), "shape": list(arr.shape),
                          "tolerance": default_tolerance(arr.dtype)}
    state.verification = {"inputs": spec_inputs, "outputs": recorded, "rows": _rows(inputs),
                          "members": list(store.members)}


def _capture_schema(sample: Any, training_data: Any) -> dict[str, Any] | None:
    """The input schema, from the sample (ranges from ``training_data`` when given)."""
    if sample is None and training_data is None:
        return None
    from modelsafe._schema import capture_schema

    return capture_schema(_head(training_data, MAX_SAMPLE_ROWS) if sample is None else sample, training_data)


def _save_code(state: _SaveState, writer: ArtifactWriter) -> None:
    """Bundle the source of custom code the components reference (see modelsafe._code)."""
    from modelsafe import _code

    refs: set[tuple[str, str]] = set()
    for saved in state.saved.values():
        refs |= saved.refs
    state.code_records = _code.bundle_code(refs, state.code, ComponentStore(writer, _code.CODE_PREFIX))


def _capture_environment(state: _SaveState) -> None:
    from modelsafe._environment import capture_environment

    modules: set[str] = set()
    devices: dict[str, Any] = {}
    for key, saved in state.saved.items():
        modules |= saved.modules
        devices.update(get_flavor(state.components[key].flavor).device_info(
            state.obj if key == "model" else state.preprocess))
    env = capture_environment(sorted(modules))
    if devices:
        env = {**env, "devices": {**env.get("devices", {}), **devices}}
    state.environment = env


def _build_manifest(state: _SaveState, writer: ArtifactWriter) -> Manifest:
    from modelsafe import __version__

    members = {name: MemberRecord(m.size, m.sha256) for name, m in writer.members.items()}
    return Manifest(
        format_version=FORMAT_VERSION,
        modelsafe_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        components=state.components,
        members=members,
        environment=state.environment,
        schema=state.schema,
        verification=state.verification,
        code=tuple(state.code_records),
        metadata=state.metadata,
        source=state.options.get("source"),
    )


def _head(x: Any, n: int) -> Any:
    if hasattr(x, "iloc"):
        return x.iloc[:n]
    if isinstance(x, dict):
        return {k: _head(v, n) for k, v in x.items()}
    try:
        return x[:n]
    except TypeError:
        return x


def _rows(x: Any) -> int:
    if isinstance(x, dict):
        return max((_rows(v) for v in x.values()), default=0)
    try:
        return len(x)
    except TypeError:
        return 1


def _run_outputs(model: Any, preprocess: Any, x: Any, components: Mapping[str, Component]) -> dict[str, Any]:
    if preprocess is not None:
        x = get_flavor(components["preprocess"].flavor).transform(preprocess, x)
    return get_flavor(components["model"].flavor).outputs(model, x)


# ---------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------


class Bundle:
    """A loaded artifact: the model, its preprocessing, and everything recorded with it.

    Examples
    --------
    >>> import modelsafe as ms
    >>> bundle = ms.load("/tmp/doc-model.msafe")
    >>> bundle.predict(bundle.sample_inputs()).shape
    (5,)
    """

    def __init__(self, path: Path, manifest: Manifest, model: Any, preprocess: Any,
                 reader: ArtifactReader, env_report: "EnvReport | None", code_changes: tuple[str, ...] = ()) -> None:
        self.path = path
        #: Local modules used at load whose source differs from the copy bundled at save.
        self.code_changes = code_changes
        self.manifest = manifest
        self.model = model
        self.preprocess = preprocess
        self.env_report = env_report
        self._reader = reader
        self._guard: Any = None
        self._model_flavor = get_flavor(manifest.components["model"].flavor)
        self._pre_flavor = (get_flavor(manifest.components["preprocess"].flavor)
                            if "preprocess" in manifest.components else None)

    def __repr__(self) -> str:
        return f"<modelsafe.Bundle {str(self.path)!r} flavor={self.manifest.flavor!r}>"

    def _prepare(self, x: Any) -> Any:
        if self._pre_flavor is not None:
            return self._pre_flavor.transform(self.preprocess, x)
        return x

    def predict(self, x: Any, *, check: bool = True) -> Any:
        """Preprocess (if any) -> model -> outputs.

        ``check`` (default) guards the raw input against the schema recorded at save:
        columns realigned by name, missing columns and lossy dtype changes refused with
        SchemaError, extra columns and values far outside the recorded ranges warned about.
        Pass ``check=False`` to skip it in hot loops.
        """
        if check and self.manifest.schema:
            if self._guard is None:
                from modelsafe._schema import Guard

                self._guard = Guard(dict(self.manifest.schema))
            x = self._guard.check(x)
        return self._model_flavor.predict(self.model, self._prepare(x))

    def outputs(self, x: Any) -> dict[str, Any]:
        """Every output recorded for verification (e.g. predict and predict_proba)."""
        return self._model_flavor.outputs(self.model, self._prepare(x))

    def sample(self) -> "Sample | None":
        """The verification sample stored in the artifact, or None."""
        spec = self.manifest.verification
        if not spec:
            return None
        from modelsafe._data import decode
        from modelsafe._verify import Sample

        source = ComponentSource(self._reader, "sample")
        return Sample(
            inputs=decode(spec["inputs"], source.read_array),
            outputs={name: source.read_array(o["member"]) for name, o in spec["outputs"].items()},
            tolerances={name: o.get("tolerance") for name, o in spec["outputs"].items()},
            rows=int(spec.get("rows", 0)),
        )

    def sample_inputs(self) -> Any:
        sample = self.sample()
        return None if sample is None else sample.inputs

    def verify(self) -> "VerifyReport":
        """Re-run the stored sample and compare with the recorded outputs (never raises)."""
        from modelsafe._verify import VerifyReport, replay

        sample = self.sample()
        if sample is None:
            return VerifyReport(path=str(self.path), skipped="the artifact was saved without a sample")
        return replay(str(self.path), sample, self.outputs, self.code_changes)

    def close(self) -> None:
        self._reader.close()


@dataclass
class _LoadState:
    path: Path
    options: LoadOptions
    env: str
    verify: bool
    reader: ArtifactReader | None = None
    manifest: Manifest | None = None
    env_report: Any = None
    objects: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, ComponentSource] = field(default_factory=dict)
    integrity: Any = None
    bundle: Bundle | None = None

    def source(self, key: str) -> ComponentSource:
        """The component's member reader, shared by the audit and deserialize steps."""
        assert self.reader is not None
        if key not in self.sources:
            self.sources[key] = ComponentSource(self.reader, key)
        return self.sources[key]


def load(path: PathLike, *, verify: bool = True, env: str = "warn", device: str | None = None,
         trust_code: bool = False, trusted: Iterable[str] = (), code: str = "auto", strict: bool = True,
         **extra: Any) -> Bundle:
    """Load an artifact: check it, audit it, rebuild the model, and verify its predictions.

    Parameters
    ----------
    verify
        Replay the stored sample and raise VerificationError on any difference.
    env
        ``"strict"`` raises on differences beyond a patch release, ``"warn"`` warns, ``"ignore"``.
    device
        For tensor frameworks: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
    trust_code
        Required before any code bundled in the artifact is imported.
    trusted
        Extra ``module.name`` globals the restricted unpickler may resolve.
    code
        ``"auto"`` (importable local modules, else bundled), ``"bundled"`` or ``"current"``.

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.load("/tmp/doc-model.msafe").manifest.flavor
    'sklearn'
    """
    _check_choice("env", env, _ENV_MODES)
    _check_choice("code", code, _CODE_MODES)
    options = LoadOptions(trusted=tuple(trusted), trust_code=trust_code, device=device, code=code,
                          strict=strict, extra=extra)
    state = _LoadState(path=Path(path), options=options, env=env, verify=verify)
    try:
        for step in _LOAD_STEPS:
            step(state)
    except BaseException:
        if state.integrity is not None:
            state.integrity.close()
        if state.reader is not None:
            state.reader.close()
        raise
    assert state.bundle is not None
    return state.bundle


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Invalid `{name}`: expected one of {', '.join(map(repr, choices))}. Received: {name}={value!r}")


def _step_manifest(state: _LoadState) -> None:
    state.reader = open_artifact(state.path)
    state.manifest = read_manifest(state.reader)


def read_manifest(reader: ArtifactReader) -> Manifest:
    """Parse the manifest, checking its format version (raises FormatError)."""
    return Manifest.from_json(reader.read(MANIFEST_NAME), where=f"{reader.path}/{MANIFEST_NAME}")


def _step_integrity(state: _LoadState) -> None:
    """Check sizes and hashes: small members now, large ones in the background.

    No member is read before its own check passed (the reader's gate waits for it), and
    :func:`_step_integrity_done` joins every check before anything is deserialized.
    """
    from modelsafe._integrity import MemberChecks

    assert state.reader is not None and state.manifest is not None
    state.integrity = MemberChecks(state.reader, state.manifest.members, progress=state.options.extra.get("progress"))
    state.reader.gate = state.integrity.wait


def _step_integrity_done(state: _LoadState) -> None:
    assert state.reader is not None
    state.integrity.wait_all()
    state.reader.gate = None


def _step_code(state: _LoadState) -> None:
    """Decide how bundled code is provided; imports nothing yet unless trusted."""
    from modelsafe import _code

    assert state.reader is not None and state.manifest is not None
    state.options = _code.prepare_code(state.manifest, state.reader, state.options)


def _step_audit(state: _LoadState) -> None:
    assert state.reader is not None and state.manifest is not None
    for key, component in state.manifest.components.items():
        flavor = get_flavor(component.flavor)
        flavor.audit(state.source(key), component.data, state.options)


def _step_environment(state: _LoadState) -> None:
    from modelsafe._environment import check_environment

    assert state.manifest is not None
    if state.manifest.environment:
        state.env_report = check_environment(dict(state.manifest.environment), state.env)


def _step_deserialize(state: _LoadState) -> None:
    assert state.reader is not None and state.manifest is not None
    for key, component in state.manifest.components.items():
        flavor = get_flavor(component.flavor)
        state.objects[key] = flavor.load(state.source(key), component.data, state.options)
    state.bundle = Bundle(state.path, state.manifest, state.objects["model"], state.objects.get("preprocess"),
                          state.reader, state.env_report, state.options.code_changes)


def _step_verify(state: _LoadState) -> None:
    assert state.bundle is not None
    if state.verify:
        state.bundle.verify().raise_if_failed()


_LOAD_STEPS: tuple[Callable[[_LoadState], None], ...] = (
    _step_manifest,       # manifest + format version
    _step_integrity,      # sizes and hashes (large members finish in the background)
    _step_code,           # bundled code: trust gate (nothing imported from the artifact)
    _step_audit,          # allowlist audit of every component
    _step_integrity_done,  # every hash checked before anything is deserialized
    _step_environment,    # saved vs current versions
    _step_deserialize,    # build objects
    _step_verify,         # replay the sample
)


# ---------------------------------------------------------------------------------------
# inspect / verify / check_env
# ---------------------------------------------------------------------------------------


def inspect(path: PathLike) -> Manifest:
    """Read the manifest only: imports no framework and runs nothing from the artifact.

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.inspect("/tmp/doc-model.msafe").components["model"].flavor
    'sklearn'
    """
    with open_artifact(path) as reader:
        return read_manifest(reader)


def verify(path: PathLike, **load_kwargs: Any) -> "VerifyReport":
    """Load ``path`` (integrity, audit, environment) and return the verification report.

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.verify("/tmp/doc-model.msafe").ok
    True
    """
    load_kwargs["verify"] = False
    bundle = load(path, **load_kwargs)
    try:
        return bundle.verify()
    finally:
        bundle.close()


def check_env(path: PathLike) -> "EnvReport":
    """Compare the environment recorded in ``path`` with this one; imports no framework.

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.check_env("/tmp/doc-model.msafe").ok
    True
    """
    from modelsafe._environment import compare_environments

    manifest = inspect(path)
    if not manifest.environment:
        raise FormatError(f"{str(path)!r} records no environment; re-save it with this modelsafe.", path=str(path))
    return compare_environments(dict(manifest.environment))
