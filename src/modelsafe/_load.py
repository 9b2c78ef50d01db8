"""``load``: a pipeline of named steps, in the order the spec gives.

manifest + format version -> signature beside the artifact (``P.sig``; before any member is
read) -> integrity (hashes; large members finish in the background)
-> bundled-code trust gate -> security audit (nothing from the artifact is imported
before this) -> every hash checked -> environment check -> deserialize -> verification.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from modelsafe._bundle import Bundle
from modelsafe.artifact.location import resolve
from modelsafe.artifact.manifest import Manifest
from modelsafe.artifact.reader import ArtifactReader, open_artifact, read_manifest
from modelsafe.errors import EnvironmentMismatchError, FlavorNotInstalledError, ModelsafeError, SecurityError
from modelsafe.flavors import get_flavor
from modelsafe.flavors._base import ComponentSource, LoadOptions

PathLike = str | os.PathLike[str]
_ENV_MODES = ("strict", "warn", "ignore")
_CODE_MODES = ("auto", "bundled", "current")
_RUNTIMES = ("native", "onnx", "auto")


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
    #: ``runtime="onnx"``: the portable record and its audited graph; ``lenient``: a fallback of
    #: ``runtime="auto"``, whose keywords the native path accepted (or could not check).
    portable: Any = None
    graph: Any = None
    lenient: bool = False
    #: Frames between the caller of ``load`` and the step functions, less one (for warnings' stacklevel).
    depth: int = 1

    def source(self, key: str) -> ComponentSource:
        """The component's member reader, shared by the audit and deserialize steps."""
        assert self.reader is not None
        if key not in self.sources:
            self.sources[key] = ComponentSource(self.reader, key)
        return self.sources[key]


def load(path: PathLike, *, verify: bool = True, env: str = "warn", device: str | None = None,
         trust_code: bool = False, trusted: Iterable[str] = (), code: str = "auto", strict: bool = True,
         storage_options: Mapping[str, Any] | None = None, **extra: Any) -> Bundle:
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
    storage_options
        For a URL path (``s3://bucket/model.msafe``): options of the store's fsspec filesystem
        (credentials, ``endpoint_url``...). Each member is downloaded once and hashed as it arrives.
    **extra
        ``signature="auto"|"require"|"ignore"`` and ``trusted_keys=[...]`` (default: the paths in
        ``MODELSAFE_TRUSTED_KEYS``): the OMS signature at ``path + ".sig"`` is checked before any
        member is read (see :mod:`modelsafe.signing.gate`). ``runtime="native"|"onnx"|"auto"``:
        the model's framework (default), the portable ONNX member run by onnxruntime (never
        imports the framework; ``trusted`` may name custom operator domains), or native with a
        fallback to the member, and one RuntimeFallbackWarning, when the native load is refused
        for environment reasons (see :mod:`modelsafe.portable`); ``bundle.runtime`` says which
        runs. Options of the artifact's flavors.

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.load("/tmp/doc-model.msafe").manifest.flavor
    'sklearn'
    """
    _check_choice("env", env, _ENV_MODES)
    _check_choice("code", code, _CODE_MODES)
    isolate = extra.pop("isolate", False)
    if isolate is not False and isolate is not None:
        # The model runs in a worker inside the recreated environment. modelsafe.envs sits above the verbs (its
        # worker calls load there): it is reached by its import path, as ms.export reaches its exporters.
        envs = importlib.import_module("modelsafe.envs.isolated")
        return envs.load_isolated(path, isolate, verify=verify, env=env, device=device, trust_code=trust_code,
                                  trusted=trusted, code=code, strict=strict, storage_options=storage_options, **extra)
    runtime = extra.pop("runtime", "native")
    _check_choice("runtime", runtime, _RUNTIMES)
    options = LoadOptions(trusted=tuple(trusted), trust_code=trust_code, device=device, code=code,
                          strict=strict, extra=extra)
    state = _LoadState(path=resolve(path, storage_options), options=options, env=env, verify=verify)  # type: ignore[arg-type]
    if runtime == "auto":
        return _load_auto(state)
    return _run(state, _LOAD_STEPS if runtime == "native" else _PORTABLE_STEPS)


def _run(state: _LoadState, steps: tuple[Callable[[_LoadState], None], ...]) -> Bundle:
    try:
        for step in steps:
            step(state)
    except BaseException:
        if state.integrity is not None:
            state.integrity.close()
        if state.reader is not None:
            state.reader.close()
        raise
    assert state.bundle is not None
    return state.bundle


def _load_auto(state: _LoadState) -> Bundle:
    """``runtime="auto"``: native; the portable member when the native load is refused because the environment
    differs or the framework is missing (never for integrity or security failures), with one warning."""
    options, state.depth = state.options, 2
    try:
        return _run(state, _LOAD_STEPS)
    except (EnvironmentMismatchError, FlavorNotInstalledError) as exc:
        if state.manifest is None or not state.manifest.portable:
            raise
        native = exc
    fallback = _LoadState(path=state.path, options=options, env=state.env, verify=state.verify, lenient=True)
    try:
        bundle = _run(fallback, _PORTABLE_STEPS)
    except ModelsafeError as exc:
        raise exc from native
    from modelsafe.portable.fallback import warn_fallback

    warn_fallback(state.path, native, bundle.env_report, stacklevel=3)
    return bundle


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Invalid `{name}`: expected one of {', '.join(map(repr, choices))}. Received: {name}={value!r}")


def refuse_unknown_keywords(extra: Mapping[str, Any], manifest: Manifest, verb: str = "load",
                            own: Iterable[str] = ()) -> None:
    """Refuse keywords load would not use (UnknownKeywordError, in ``verb``'s name): those neither load, nor
    ``own`` (the calling verb's), nor the artifact's flavors (and the components nested in them) read. Runs
    before any member is read; also the check of the verbs that pass their keywords on to a load elsewhere
    (predict_file, Dask, Spark, an isolated worker, recreate_env)."""
    if extra:
        from modelsafe._keywords import signature_names
        from modelsafe.flavors.keywords import check_load_keywords

        check_load_keywords(verb, extra, signature_names(load) | frozenset(own),
                            [(get_flavor(c.flavor), c.data) for c in manifest.components.values()])


def _step_manifest(state: _LoadState) -> None:
    state.reader = open_artifact(state.path)
    state.manifest = read_manifest(state.reader)
    refuse_unknown_keywords(state.options.extra, state.manifest)
    state.options = dataclasses.replace(state.options, environment=dict(state.manifest.environment))


def _step_signature(state: _LoadState) -> None:
    """``signature=`` / ``trusted_keys=``: the signature is checked before any member is read."""
    from modelsafe.signing.gate import check_before_load

    assert state.reader is not None and state.manifest is not None
    check_before_load(state.path, state.reader, state.manifest, state.options.extra)


def _step_integrity(state: _LoadState) -> None:
    """Check sizes and hashes: small members now, large ones in the background.

    No member is read before its own check passed (the reader's gate waits for it), and
    :func:`_step_integrity_done` joins every check before anything is deserialized.
    """
    from modelsafe.artifact.integrity import MemberChecks

    assert state.reader is not None and state.manifest is not None
    keep = [f"{key}/{name}" for key, component in state.manifest.components.items()
            for name in get_flavor(component.flavor).copied_members(component.data)]
    state.integrity = MemberChecks(state.reader, state.manifest.members, progress=state.options.extra.get("progress"),
                                   keep=keep, cache=state.options.extra.get("hash_cache", True))
    state.reader.gate = state.integrity.wait
    state.reader.verified = {name: record.sha256 for name, record in state.manifest.members.items()}


def _step_integrity_done(state: _LoadState) -> None:
    assert state.reader is not None
    state.integrity.wait_all()
    state.reader.gate = None


def _step_code(state: _LoadState) -> None:
    """Decide how bundled code is provided; imports nothing yet unless trusted."""
    from modelsafe.code.gate import prepare_code
    assert state.reader is not None and state.manifest is not None
    state.options = prepare_code(state.manifest, state.reader, state.options)


def _step_audit(state: _LoadState) -> None:
    assert state.reader is not None and state.manifest is not None
    for key, component in state.manifest.components.items():
        flavor = get_flavor(component.flavor)
        flavor.audit(state.source(key), component.data, state.options)


def _step_environment(state: _LoadState) -> None:
    from modelsafe.checks.environment import check_environment

    assert state.manifest is not None
    if state.manifest.environment:
        state.env_report = check_environment(dict(state.manifest.environment), state.env)


def _step_deserialize(state: _LoadState) -> None:
    assert state.reader is not None and state.manifest is not None
    for key, component in state.manifest.components.items():
        flavor = get_flavor(component.flavor)
        try:
            state.objects[key] = flavor.load(state.source(key), component.data, state.options)
        except (ModelsafeError, AttributeError, TypeError, ValueError, ImportError) as exc:
            raise _rebuild_failure(state, key, component.type_name, exc) from exc
    state.bundle = Bundle(state.path, state.manifest, state.objects["model"], state.objects.get("preprocess"),
                          state.reader, state.env_report, state.options.code_changes)


def _rebuild_failure(state: _LoadState, key: str, type_name: str, exc: BaseException) -> BaseException:
    """A component that passed every check but cannot be rebuilt: name the versions if they differ."""
    report = state.env_report
    if isinstance(exc, (SecurityError, EnvironmentMismatchError)) or report is None or not report.notable():
        return exc
    return EnvironmentMismatchError(
        f"The {key} component ({type_name or 'unknown type'}) could not be rebuilt here: {type(exc).__name__}: "
        f"{exc}\nIt was saved in a different environment: {report.summary()}. The libraries that define it "
        "changed in a way it cannot survive. Install the saved versions (`modelsafe env` lists them with pip "
        "commands), or load it where it was saved and re-save it with the versions of this environment.",
        report=report, component=key, packages=[d.package for d in report.notable()])


def _step_verify(state: _LoadState) -> None:
    assert state.bundle is not None
    if state.verify:
        state.bundle.verify().raise_if_failed()


def _step_warn(state: _LoadState) -> None:
    """Under env="warn", say how the environment differs, now that the model has loaded."""
    from modelsafe.checks.environment import warn_environment

    if state.env == "warn" and state.env_report is not None and not state.lenient:  # a fallback says it once
        warn_environment(state.env_report, stacklevel=3 + state.depth)


# -- runtime="onnx": the portable member, run by onnxruntime; the model's framework is never imported ---------


def _step_portable_manifest(state: _LoadState) -> None:
    from modelsafe.portable.load import portable_spec

    state.reader = open_artifact(state.path)
    state.manifest = read_manifest(state.reader)
    state.portable = portable_spec(state.manifest, state.path)
    if state.options.extra and not state.lenient:  # no flavor runs, so only load's own keywords are read
        from modelsafe._keywords import check_keywords, declared, signature_names

        check_keywords("load", state.options.extra, {*signature_names(load), *declared("load")})


def _step_portable_integrity(state: _LoadState) -> None:
    """Every member's size and hash, as natively (a changed native member is a changed artifact too)."""
    from modelsafe.artifact.integrity import MemberChecks

    assert state.reader is not None and state.manifest is not None
    state.integrity = MemberChecks(state.reader, state.manifest.members, progress=state.options.extra.get("progress"),
                                   keep=[], cache=state.options.extra.get("hash_cache", True))
    state.reader.gate = state.integrity.wait


def _step_portable_audit(state: _LoadState) -> None:
    """The graph: external data inside the artifact only, operator domains standard or trusted."""
    from modelsafe.portable import PREFIX
    from modelsafe.portable.load import audit

    state.graph = audit(state.source(PREFIX), state.portable, state.options.trusted)


def _step_portable_environment(state: _LoadState) -> None:
    from modelsafe.portable.load import runtime_environment

    state.env_report = runtime_environment(state.portable, state.env)


def _step_portable_deserialize(state: _LoadState) -> None:
    from modelsafe.portable.load import build

    assert state.reader is not None and state.manifest is not None
    model, runner, tolerances = build(state.graph, state.portable)
    state.bundle = Bundle(state.path, state.manifest, model, None, state.reader, state.env_report,
                          runtime="onnx", runner=runner, tolerances=tolerances)


_PORTABLE_STEPS: tuple[Callable[[_LoadState], None], ...] = (
    _step_portable_manifest,     # manifest + format version + the portable record
    _step_signature,             # who signed the manifest, before any member is read
    _step_portable_integrity,    # sizes and hashes of every member
    _step_portable_audit,        # the graph's external data and operator domains
    _step_integrity_done,        # every hash checked before anything is built
    _step_portable_environment,  # onnxruntime, numpy and Python: saved vs current
    _step_portable_deserialize,  # the onnxruntime session
    _step_verify,                # replay the sample against the recorded ONNX tolerance
    _step_warn,                  # environment differences, once everything succeeded
)

_LOAD_STEPS: tuple[Callable[[_LoadState], None], ...] = (
    _step_manifest,       # manifest + format version
    _step_signature,      # who signed the manifest (P.sig), before any member is read
    _step_integrity,      # sizes and hashes (large members finish in the background)
    _step_code,           # bundled code: trust gate (nothing imported from the artifact)
    _step_audit,          # allowlist audit of every component
    _step_integrity_done,  # every hash checked before anything is deserialized
    _step_environment,    # saved vs current versions
    _step_deserialize,    # build objects
    _step_verify,         # replay the sample
    _step_warn,           # environment differences, once everything succeeded
)
