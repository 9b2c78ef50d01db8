"""Human-readable rendering of a manifest (``modelsafe inspect``)."""

from __future__ import annotations

from modelsafe.artifact.manifest import Manifest


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def describe_manifest(path: str, manifest: Manifest) -> str:
    """A readable summary of everything the manifest records."""
    lines = [f"{path}", f"  format {manifest.format_version}, written by modelsafe {manifest.modelsafe_version} "
             f"at {manifest.created}"]
    for key, comp in manifest.components.items():
        lines.append(f"  {key}: {comp.type_name or '?'} (flavor {comp.flavor} v{comp.flavor_version}, "
                     f"{len(comp.members)} member(s))")
    total = sum(m.size for m in manifest.members.values())
    lines.append(f"  members: {len(manifest.members)}, {_size(total)}, each with SHA-256")
    for name, m in sorted(manifest.members.items()):
        lines.append(f"    {name:<40} {_size(m.size):>10}  {m.sha256[:12]}")
    env = manifest.environment
    if env:
        py = env.get("python", {})
        plat = env.get("platform", {})
        lines.append(f"  environment: Python {py.get('version', '?')} ({py.get('implementation', '?')}), "
                     f"{plat.get('system', '?')} {plat.get('machine', '')}")
        for name, info in sorted(env.get("packages", {}).items()):
            lines.append(f"    {name}=={info.get('version', '?') if isinstance(info, dict) else info}")
    if manifest.schema:
        schema = manifest.schema
        if schema.get("columns"):
            cols = ", ".join(f"{c['name']}:{c['dtype']}" for c in schema["columns"][:12])
            more = "" if len(schema["columns"]) <= 12 else f", … ({len(schema['columns'])} columns)"
            lines.append(f"  input: {schema['kind']} [{cols}{more}]")
        else:
            lines.append(f"  input: {schema.get('kind')} {schema.get('dtype', '')} shape {schema.get('shape', '')}")
    if manifest.verification:
        outputs = ", ".join(manifest.verification.get("outputs", {}))
        lines.append(f"  verification: {manifest.verification.get('rows')} sample row(s); outputs {outputs}")
    else:
        lines.append("  verification: none (saved without a sample)")
    for record in manifest.code:
        lines.append(f"  bundled code: {record.get('module')} ({record.get('member')})")
    if manifest.source:
        lines.append(f"  converted from: {manifest.source}")
    if manifest.metadata:
        lines.append(f"  metadata: {dict(manifest.metadata)}")
    return "\n".join(lines)
