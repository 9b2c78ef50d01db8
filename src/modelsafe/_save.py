"""``save``: a pipeline of named steps that writes one artifact atomically.

components (each object by its flavor) -> verification sample (outputs on the raw input)
-> custom code (bundled source) -> environment fingerprint -> manifest -> commit
(fsync + rename). Anything that fails leaves nothing at the target path.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from modelsafe.artifact.location import resolve
from modelsafe.artifact.manifest import (
    FORMAT_VERSION,
    Component,
    Manifest,
    MemberRecord,
)
from modelsafe.artifact.disk_errors import saving_to
from modelsafe.artifact.writer import ArtifactWriter
from modelsafe.errors import ModelsafeError, SaveError
from modelsafe.flavors import detect_flavor, get_flavor
from modelsafe.flavors._base import ComponentStore, SavedComponent

PathLike = str | os.PathLike[str]
#: At most this many sample rows are stored for verification (the schema uses them all).
MAX_SAMPLE_ROWS = 100



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
    provenance: dict[str, Any] | None = None
    #: ``portable=``: None, "onnx" or "try-onnx"; the sample's inputs and native outputs it is checked on.
    portable: str | None = None
    sample_inputs: Any = None
    sample_outputs: dict[str, Any] | None = None
    portable_record: dict[str, Any] | None = None


def save(obj: Any, path: PathLike, *, sample: Any = None, preprocess: Any = None, code: Iterable[Any] = (),
         metadata: Mapping[str, Any] | None = None, overwrite: bool = False,
         storage_options: Mapping[str, Any] | None = None, **options: Any) -> Manifest:
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
    storage_options
        For a URL path (``s3://bucket/model.msafe``): options of the store's fsspec filesystem
        (credentials, ``endpoint_url``...). The artifact is streamed to the store and appears
        only once complete; ``overwrite=False`` is a conditional write on S3.
    **options
        ``training_data=X`` records the input ranges from ``X`` instead of the sample, so
        the input guard knows what the model saw in training. ``provenance={"git": True,
        "datasets": [...], ...}`` records what produced the model in the manifest (and so in
        its signature: see :mod:`modelsafe.signing.provenance`). ``portable="onnx"`` adds the model as
        an ONNX graph, checked with onnxruntime on the sample (labels exact, scores within a
        float32-derived tolerance) and refused with SaveError when it predicts differently;
        ``portable="try-onnx"`` warns instead (see :mod:`modelsafe.portable`). Other options go
        to the model's flavor (e.g. ``init_args=`` for PyTorch).

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
    _check_keywords(obj, options)
    training_data = options.pop("training_data", None)
    state = _SaveState(obj=obj, path=resolve(path, storage_options), sample=sample, preprocess=preprocess, code=tuple(code),
                       metadata=dict(metadata or {}), options=options)
    _check_metadata(state.metadata)
    state.provenance = _record_provenance(options.pop("provenance", None))
    state.portable = _portable_choice(options.pop("portable", None))
    state.schema = _capture_schema(sample, training_data, _takes_positional(obj, preprocess))
    with saving_to(str(state.path)), ArtifactWriter(state.path, overwrite=overwrite,
                                                    progress=options.pop("progress", None)) as writer:
        _save_components(state, writer)
        writer.start_sync()  # the components go to disk while the sample runs
        _save_sample(state, writer)
        _save_portable(state, writer)
        _save_code(state, writer)
        _capture_environment(state)
        manifest = _build_manifest(state, writer)
        writer.commit(manifest.to_json())
    return manifest


def _check_keywords(obj: Any, options: Mapping[str, Any]) -> None:
    """Refuse keywords neither save nor the model's flavor reads (a misspelled option would be ignored)."""
    if options:
        from modelsafe._keywords import signature_names
        from modelsafe.flavors.keywords import check_save_keywords

        check_save_keywords("save", options, signature_names(save), get_flavor(detect_flavor(obj)))


def _record_provenance(given: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``provenance=``: git commit, dataset digests, free-form fields (see modelsafe.signing.provenance)."""
    if given is None:
        return None
    from modelsafe.signing.provenance import record_provenance

    return record_provenance(given, error=SaveError)


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
    """Record the sample's outputs through the path ``predict`` takes, and check that the stored sample replays."""
    if state.sample is None:
        return
    from modelsafe._bundle import Route
    from modelsafe.checks.data import as_arrays, encode, npy_bytes, npy_load
    from modelsafe.checks.verify import check_replays, default_tolerance

    inputs = _head(state.sample, MAX_SAMPLE_ROWS)
    pre = get_flavor(state.components["preprocess"].flavor) if state.preprocess is not None else None
    # The schema as a loaded manifest holds it (JSON), so the guard here is the guard at load.
    schema = json.loads(json.dumps(state.schema)) if state.schema else None
    route = Route(state.obj, get_flavor(state.components["model"].flavor), state.preprocess, pre, schema)
    try:
        outputs = route.replay(inputs)
    except (ModelsafeError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise SaveError(
            f"The model failed on the verification sample at save: {type(exc).__name__}: {exc}. "
            "A sample must be input the model accepts (with preprocess applied by modelsafe, if given). "
            "Pass a few rows of real input, or sample=None to skip verification.",
        ) from exc
    store = ComponentStore(writer, "sample")
    written: dict[str, Any] = {}

    def write(name: str, array: Any) -> str:
        written[name] = npy_bytes(array)
        return store.write(name, written[name])

    spec_inputs = encode(inputs, write, "inputs")
    recorded: dict[str, Any] = {}
    for name, value in outputs.items():
        arr = as_arrays(value)
        recorded[name] = {"member": store.write_array(f"outputs/{name}.npy", arr),
                          "dtype": str(arr.dtype), "shape": list(arr.shape),
                          "tolerance": default_tolerance(arr.dtype)}
    check_replays(inputs, spec_inputs, lambda name: npy_load(written[name]),
                  {name: as_arrays(value) for name, value in outputs.items()},
                  {name: r["tolerance"] for name, r in recorded.items()}, route.replay)
    state.verification = {"inputs": spec_inputs, "outputs": recorded, "rows": _rows(inputs),
                          "members": list(store.members)}
    state.sample_inputs, state.sample_outputs = inputs, {name: as_arrays(value) for name, value in outputs.items()}


def _portable_choice(portable: Any) -> str | None:
    from modelsafe.portable.save import CHOICES

    if portable is not None and portable not in CHOICES:
        raise ValueError(f"Invalid `portable`: expected one of {', '.join(map(repr, CHOICES))} or None. "
                         f"Received: portable={portable!r}")
    return portable


def _save_portable(state: _SaveState, writer: ArtifactWriter) -> None:
    """``portable="onnx"|"try-onnx"``: the model as an ONNX graph, run with onnxruntime on the sample through the
    input guard ``predict`` uses, and stored only when it predicts what the model does (see modelsafe.portable)."""
    if state.portable is None:
        return
    from modelsafe._bundle import Route
    from modelsafe.portable import PREFIX
    from modelsafe.portable.save import save_portable

    schema = json.loads(json.dumps(state.schema)) if state.schema else None
    state.portable_record = save_portable(
        state.portable, state.obj, get_flavor(state.components["model"].flavor), schema, state.sample_inputs,
        state.sample_outputs, ComponentStore(writer, PREFIX),
        replay=lambda model, runner: Route(model, runner, None, None, schema).replay,
        has_preprocess=state.preprocess is not None)


def _takes_positional(obj: Any, preprocess: Any) -> bool:
    """Whether what receives the raw input takes a tuple or list of arrays as several inputs."""
    return get_flavor(detect_flavor(obj if preprocess is None else preprocess)).positional_inputs


def _capture_schema(sample: Any, training_data: Any, positional: bool) -> dict[str, Any] | None:
    """The input schema, from the sample (ranges from ``training_data`` when given)."""
    if sample is None and training_data is None:
        return None
    from modelsafe.checks.schema import capture_schema

    return capture_schema(_head(training_data, MAX_SAMPLE_ROWS) if sample is None else sample, training_data,
                          positional=positional)


def _save_code(state: _SaveState, writer: ArtifactWriter) -> None:
    """Bundle the source of custom code the components reference (see modelsafe.code.bundle)."""
    from modelsafe.code.bundle import bundle_code
    from modelsafe.code.modules import CODE_PREFIX
    refs: set[tuple[str, str]] = set()
    for saved in state.saved.values():
        refs |= saved.refs
    state.code_records = bundle_code(refs, state.code, ComponentStore(writer, CODE_PREFIX))


def _capture_environment(state: _SaveState) -> None:
    from modelsafe.checks.environment import capture_environment

    modules: set[str] = set()
    devices: dict[str, Any] = {}
    for key, saved in state.saved.items():
        modules |= saved.modules
        devices.update(get_flavor(state.components[key].flavor).device_info(
            state.obj if key == "model" else state.preprocess))
    if state.schema is not None and state.schema.get("kind") in ("dataframe", "series"):
        modules.add("pandas")  # the model is fed pandas objects: how pandas behaves matters too
        if state.schema.get("library") == "polars":
            modules |= {"polars", "pyarrow"}  # fed polars frames, which the guard reads through Arrow
    env = capture_environment(sorted(modules))
    if devices:
        env = {**env, "devices": {**env.get("devices", {}), **devices}}
    state.environment = env


def _build_manifest(state: _SaveState, writer: ArtifactWriter) -> Manifest:
    from modelsafe._version import __version__

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
        provenance=state.provenance,
        portable=state.portable_record,
    )


def _head(x: Any, n: int) -> Any:
    from modelsafe.checks.data import describe_kind

    if hasattr(x, "iloc"):
        return x.iloc[:n]
    if isinstance(x, dict):
        return {k: _head(v, n) for k, v in x.items()}
    if describe_kind(x) == "sequence":  # several inputs: the first rows of each
        return type(x)(_head(v, n) for v in x)
    try:
        return x[:n]
    except TypeError:
        return x


def _rows(x: Any) -> int:
    from modelsafe.checks.data import describe_kind

    if isinstance(x, dict):
        return max((_rows(v) for v in x.values()), default=0)
    if describe_kind(x) == "sequence":
        return max((_rows(v) for v in x), default=0)
    try:
        return len(x)
    except TypeError:
        return 1

