"""The work of ``load(runtime="onnx")``'s steps: find the portable member, audit its graph, check the runtime's
environment, build the onnxruntime-backed model. The steps themselves, in order, are in :mod:`modelsafe._load`.

Nothing here imports the model's framework: only numpy, protobuf (to audit the graph) and onnxruntime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelsafe.artifact.manifest import Manifest
from modelsafe.errors import (
    EnvironmentMismatchError,
    FlavorNotInstalledError,
    FormatError,
    NoPortableMemberError,
    UnsafeArchiveError,
    UntrustedContentError,
)
from modelsafe.flavors._base import ComponentSource
from modelsafe.flavors.onnx_graph import GraphInput
from modelsafe.portable import PREFIX
from modelsafe.portable.runtime import OnnxModel, OnnxRunner, create_session

__all__ = ["AuditedGraph", "audit_graph", "build", "portable_spec", "read_graph", "runtime_environment"]


@dataclass
class AuditedGraph:
    """The graph's bytes and its external data (location -> bytes), after the audit."""

    graph: Any
    external: dict[str, Any]


def portable_spec(manifest: Manifest, path: Any) -> Mapping[str, Any]:
    """The manifest's portable record; NoPortableMemberError (saying how to add one) when there is none."""
    spec = manifest.portable
    if not spec:
        raise NoPortableMemberError(
            f"{str(path)!r} has no portable ONNX member, so it cannot run with runtime='onnx': it was saved without "
            f"portable=. Load it with runtime='native' where its framework ({manifest.flavor}) is installed, and save "
            "it again with ms.save(model, path, sample=X, portable='onnx') (or portable='try-onnx') to add one.",
            path=str(path), flavor=manifest.flavor)
    if spec.get("format") != "onnx" or not isinstance(spec.get("graph"), str):
        raise FormatError(
            f"The portable record of {str(path)!r} has format {spec.get('format')!r}, which this modelsafe does not "
            "read: it was written by a newer modelsafe. Upgrade with: pip install -U modelsafe",
            path=str(path), field="portable.format")
    return spec


def read_graph(source: ComponentSource, spec: Mapping[str, Any]) -> AuditedGraph:
    """The graph member and its external-data members (each read once its hash was checked)."""
    external = {location: source.view(_member_of(location, spec)) for location in spec.get("external_data", ())}
    return AuditedGraph(source.view(spec["graph"]), external)


def _member_of(location: str, spec: Mapping[str, Any]) -> str:
    from modelsafe.security._onnx import unsafe_location

    why = unsafe_location(location)
    if why:
        raise UnsafeArchiveError(
            f"The portable record names external data {location!r}, which {why}: the runtime would read a file "
            "outside the artifact into the model. Do not load this artifact; re-export the model from its source.",
            member=location)
    return location


def audit(source: ComponentSource, spec: Mapping[str, Any], trusted: Iterable[str]) -> AuditedGraph:
    """Read the graph and refuse it when it reaches outside the artifact or uses untrusted operator domains."""
    from modelsafe.security._onnx import OnnxUnreadable, read_model

    found = read_graph(source, spec)
    where = f"{source.path}:{PREFIX}/{spec['graph']}"
    try:
        facts = read_model(found.graph)
    except OnnxUnreadable as exc:
        raise FormatError(f"{where} is not an ONNX model modelsafe can read: {exc}. Re-export the model from its "
                          "source.", path=where) from exc
    audit_graph(found.graph, facts, found.external, trusted, where=where)
    return found


def audit_graph(graph: Any, facts: Any, external: Mapping[str, Any], trusted: Iterable[str], *,
                where: str = f"{PREFIX}/model.onnx") -> None:
    """Refuse ``graph`` (facts read by :func:`modelsafe.security._onnx.read_model`) unless it is safe to run:
    external data only in the members given, operator domains standard or in ``trusted``."""
    from modelsafe.security._onnx import WHY_FIX, refusals

    for refusal in refusals(facts, trusted):
        _, why, fix = WHY_FIX[refusal.kind]
        fix = fix.replace("'<domain>'", repr(refusal.subject))
        if refusal.kind == "external-data":
            raise UnsafeArchiveError(f"{where}: {refusal.what}: {why}. Fix: {fix}.", member=where,
                                     location=refusal.subject)
        raise UntrustedContentError(f"{where}: {refusal.what}: {why}. Fix: {fix}.", member=where,
                                    domain=refusal.subject, places=list(refusal.places))
    outside = sorted(set(facts.external) - set(external))
    if outside:
        raise UnsafeArchiveError(
            f"{where} keeps tensors in {', '.join(map(repr, outside))}, which the artifact does not hold: the runtime "
            "would look for those files beside wherever it runs, outside the artifact. Do not load this artifact; "
            "re-export the model from its source.", member=where, locations=outside)


def runtime_environment(spec: Mapping[str, Any], env: str) -> Any:
    """The runtime's environment (onnxruntime, numpy, Python) compared with the one at save; raises under strict."""
    from modelsafe.checks.environment import check_environment

    saved = spec.get("environment")
    return check_environment(dict(saved), env) if saved else None


def build(found: AuditedGraph, spec: Mapping[str, Any]) -> tuple[OnnxModel, OnnxRunner, dict[str, Any]]:
    """The onnxruntime-backed model, its runner, and the recorded tolerance of each output."""
    outputs = {name: {k: v for k, v in o.items() if k in ("graph", "dtype", "shape")}
               for name, o in spec["outputs"].items()}
    model = OnnxModel(_session(found, spec), [GraphInput.from_dict(i) for i in spec["inputs"]], outputs,
                      spec.get("classes"))
    tolerances = {name: o.get("tolerance") for name, o in spec["outputs"].items()}
    return model, OnnxRunner(), tolerances


def _session(found: AuditedGraph, spec: Mapping[str, Any]) -> Any:
    """The onnxruntime session; EnvironmentMismatchError when this onnxruntime cannot run the graph."""
    from modelsafe.checks.environment import installed_version

    try:
        return create_session(found.graph, found.external)
    except FlavorNotInstalledError:
        raise
    except Exception as exc:
        saved = ((spec.get("environment") or {}).get("packages", {}).get("onnxruntime") or {}).get("version", "?")
        current = installed_version("onnxruntime") or "?"
        raise EnvironmentMismatchError(
            f"onnxruntime {current} cannot run the portable graph (saved with onnxruntime {saved}, opsets "
            f"{spec.get('opsets', {})}): {type(exc).__name__}: {str(exc).strip()[:400]}. An older runtime lacks "
            f"newer operators. Install onnxruntime=={saved} or newer (`modelsafe env` lists the saved versions).",
            packages=["onnxruntime"], saved=saved, current=current) from exc
