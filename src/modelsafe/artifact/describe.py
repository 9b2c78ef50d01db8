"""A manifest as people read it: ``str(manifest)`` and ``modelsafe inspect``.

Everything the manifest records, one fact per line: the components and their flavors, the
members (size and the start of each SHA-256), the environment, the input schema, the
verification sample, bundled code, where a converted model came from, and the metadata; then,
for a manifest read by ``ms.inspect``, who signed the artifact and whether that key is trusted here.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["describe", "size_text"]


def size_text(n: int) -> str:
    """``1.5 MiB``: a byte count for people."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def describe(manifest: Any, path: str = "", *, max_members: int | None = None,
             ignored: Iterable[str] = ()) -> str:
    """A readable summary of ``manifest`` (a :class:`~modelsafe.artifact.manifest.Manifest`, which imports
    this module for its ``str()``); ``ignored`` lists OS files a folder artifact holds beside it."""
    lines = [path or "modelsafe artifact", f"  format {manifest.format_version}, written by modelsafe "
             f"{manifest.modelsafe_version} at {manifest.created}"]
    for key, comp in manifest.components.items():
        lines.append(f"  {key}: {comp.type_name or '?'} (flavor {comp.flavor} v{comp.flavor_version}, "
                     f"{len(comp.members)} member(s))")
    lines += _members(manifest, max_members)
    ignored = sorted(ignored)
    if ignored:
        lines.append(f"  ignored: {', '.join(ignored)} (files the operating system left in the folder: outside "
                     "the manifest, never read)")
    lines += _environment(manifest.environment)
    lines += _schema(manifest.schema)
    if manifest.verification:
        outputs = ", ".join(manifest.verification.get("outputs", {}))
        lines.append(f"  verification: {manifest.verification.get('rows')} sample row(s); outputs {outputs}")
    else:
        lines.append("  verification: not possible (saved without a sample)")
    if manifest.portable:
        inputs = ", ".join(f"{i.get('name')}:{i.get('dtype')}" for i in manifest.portable.get("inputs", ()))
        lines.append(f"  portable: ONNX graph by {manifest.portable.get('converter', '?')} (inputs {inputs}); "
                     "runs with load(runtime='onnx')")
    for record in manifest.code:
        lines.append(f"  bundled code: {record.get('module')} ({record.get('member')})")
    if manifest.source:
        lines.append(f"  converted from: {_source(manifest.source)}")
    if manifest.metadata:
        lines.append(f"  metadata: {dict(manifest.metadata)}")
    if manifest.provenance:
        lines.append(f"  provenance (recorded at save): {dict(manifest.provenance)}")
    if getattr(manifest, "signature", None) is not None:  # ms.inspect's check of P.sig (a SignatureReport)
        lines.append(manifest.signature.section())
    return "\n".join(lines)


def _members(manifest: Any, limit: int | None) -> list[str]:
    total = sum(m.size for m in manifest.members.values())
    lines = [f"  members: {len(manifest.members)}, {size_text(total)}, each with SHA-256"]
    entries = sorted(manifest.members.items())
    shown = entries if limit is None else entries[:limit]
    lines += [f"    {name:<40} {size_text(m.size):>10}  {m.sha256[:12]}" for name, m in shown]
    if len(shown) < len(entries):
        lines.append(f"    … and {len(entries) - len(shown)} more (modelsafe inspect lists them all)")
    return lines


def _environment(env: Mapping[str, Any]) -> list[str]:
    if not env:
        return []
    py, plat = env.get("python", {}), env.get("platform", {})
    lines = [f"  environment: Python {py.get('version', '?')} ({py.get('implementation', '?')}), "
             f"{plat.get('system', '?')} {plat.get('machine', '')}".rstrip()]
    for name, info in sorted(env.get("packages", {}).items()):
        lines.append(f"    {name}=={info.get('version', '?') if isinstance(info, dict) else info}")
    return lines


def _schema(schema: Mapping[str, Any] | None) -> list[str]:
    if not schema:
        return []
    return [f"  input: {_input(schema)}"]


def _input(schema: Mapping[str, Any]) -> str:
    """One input as ``dataframe [age:int64, …]``, ``ndarray float32 shape (n, 3)``, or its inputs in brackets."""
    kind = schema.get("kind")
    columns = schema.get("columns")
    if columns:
        cols = ", ".join(f"{_label(c.get('name'))}:{c.get('dtype')}" for c in columns[:12])
        more = "" if len(columns) <= 12 else f", … ({len(columns)} columns)"
        return f"{kind} [{cols}{more}]"
    if kind == "positional":
        return f"positional ({len(schema.get('inputs', []))} inputs) [{', '.join(map(_input, schema['inputs']))}]"
    if kind == "dict" and "keys" in schema:
        inputs = schema.get("inputs") or {}
        return "dict [" + ", ".join(f"{k}: {_input(inputs[k]) if k in inputs else '?'}" for k in schema["keys"]) + "]"
    shape = schema.get("shape")
    shown = None if shape is None else f"shape ({', '.join('n' if d is None else str(d) for d in shape)})"
    return " ".join(str(part) for part in (kind, schema.get("dtype"), shown) if part)


def _label(name: Any) -> str:
    """A column name as the schema stores it (see modelsafe.checks.labels), written as Python would."""
    if isinstance(name, dict):
        if "tuple" in name:
            return "(" + ", ".join(_label(part) for part in name["tuple"]) + ")"
        return str(next(iter(name.values()), ""))
    return name if isinstance(name, str) else repr(name)


def _source(source: Mapping[str, Any]) -> str:
    """``/data/old.pkl (pickle, 2.1 MiB, sha256 9f2c41ab07e1…) on 2026-01-02T03:04:05+00:00; trusted: a.B``."""
    facts = [str(source.get("kind") or "?")]
    if isinstance(source.get("size"), int):
        facts.append(size_text(source["size"]))
    if source.get("sha256"):
        facts.append(f"sha256 {str(source['sha256'])[:12]}…")
    text = f"{source.get('path', '?')} ({', '.join(facts)})"
    if source.get("converted"):
        text += f" on {source['converted']}"
    trusted = source.get("trusted") or []
    return text + f"; trusted: {', '.join(map(str, trusted)) if trusted else 'nothing beyond the allowlist'}"
