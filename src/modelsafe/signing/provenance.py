"""Provenance: what produced a model, recorded at save (in the manifest) and at signing (in the statement).

``provenance=`` (of ``ms.save`` and ``ms.sign``) is a mapping. Three keys are understood:

* ``"git"``: ``True`` (the repository of the working directory), a path inside a repository,
  or a mapping given as is (``{"commit": ..., "dirty": ...}``). Recorded as ``{"commit",
  "dirty", "branch", "remote"}``: the training code's exact version, and whether it had
  uncommitted changes.
* ``"datasets"``: a list of entries, each a local file (hashed: its SHA-256 and size are
  recorded), a URI (recorded as given), or a mapping ``{"uri": ..., "sha256": ...}``.
* anything else: free-form JSON fields, recorded as given.

The signed statement's provenance (``predicate.modelsafe_provenance``) always holds the
signing modelsafe version, when the artifact was written and by which modelsafe, and a
summary of the environment it was saved in; then the provenance recorded at save, then
the one given to ``sign`` (whose keys win).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

from modelsafe.artifact.manifest import Manifest
from modelsafe.errors import ModelsafeError
from modelsafe.signing.statement import check_json_value

__all__ = ["record_provenance", "statement_provenance", "environment_summary"]

_HASH_CHUNK = 8 << 20


def record_provenance(given: Mapping[str, Any], *, error: type[ModelsafeError]) -> dict[str, Any]:
    """``given`` with ``git`` and ``datasets`` resolved, checked to be JSON; ``error`` is raised otherwise."""
    if not isinstance(given, Mapping):
        raise error(f"provenance must be a mapping (e.g. {{'git': True, 'datasets': ['train.parquet']}}). "
                    f"Received: {type(given).__name__}.", reason="provenance", path=None)
    record = dict(given)
    if "git" in record:
        record["git"] = _git(record["git"], error)
    if "datasets" in record:
        entries = record["datasets"]
        if isinstance(entries, (str, os.PathLike, Mapping)):
            entries = [entries]
        record["datasets"] = [_dataset(entry, error) for entry in entries]
    try:
        check_json_value(record, "provenance")
    except ValueError as exc:
        raise error(f"The provenance cannot be recorded: {exc}. It is stored as JSON (and signed as JSON); convert "
                    "the value to str, int, float, bool, lists or dicts.", reason="provenance", path=None) from None
    return record


def _git(value: Any, error: type[ModelsafeError]) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if value is True:
        where = Path.cwd()
    elif isinstance(value, (str, os.PathLike)):
        where = Path(value)
    else:
        raise error(f"provenance['git'] must be True, a path inside a git repository, or a mapping. Received: "
                    f"{value!r}.", reason="provenance", path=None)

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise error(f"Cannot record the git commit of {str(where)!r}: running git failed ({exc}). Install git, "
                        "or pass provenance={'git': {'commit': ..., 'dirty': ...}}.", reason="provenance",
                        path=str(where)) from None
        if done.returncode != 0:
            raise error(f"Cannot record the git commit of {str(where)!r}: {done.stderr.strip() or 'git failed'}. "
                        "Pass a path inside the training code's repository, or provenance={'git': {...}}.",
                        reason="provenance", path=str(where))
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    record: dict[str, Any] = {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        record["branch"] = branch
    remote = git("config", "--get", "remote.origin.url") if _has_origin(where) else ""
    if remote:
        record["remote"] = remote
    return record


def _has_origin(where: Path) -> bool:
    done = subprocess.run(["git", "-C", str(where), "remote"], capture_output=True, text=True, timeout=60, check=False)
    return "origin" in done.stdout.split()


def _dataset(entry: Any, error: type[ModelsafeError]) -> dict[str, Any]:
    if isinstance(entry, Mapping):
        if not isinstance(entry.get("uri"), str):
            raise error(f"A dataset entry must have a 'uri' string. Received: {dict(entry)!r}.", reason="provenance",
                        path=None)
        return dict(entry)
    if not isinstance(entry, (str, os.PathLike)):
        raise error(f"A dataset entry must be a path, a URI or a mapping with 'uri'. Received: {entry!r}.",
                    reason="provenance", path=None)
    path = Path(entry)
    if "://" in str(entry) or not path.is_file():
        if "://" not in str(entry):
            raise error(f"The dataset {str(entry)!r} is not a file here, so its digest cannot be recorded. Pass an "
                        "existing file, a URI (s3://...), or {'uri': ..., 'sha256': ...}.", reason="provenance",
                        path=str(entry))
        return {"uri": str(entry)}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return {"uri": path.resolve().as_uri(), "sha256": digest.hexdigest(), "size": path.stat().st_size}


def environment_summary(environment: Mapping[str, Any]) -> dict[str, Any]:
    """Python, platform and package versions of a manifest's environment fingerprint."""
    python = environment.get("python", {})
    platform = environment.get("platform", {})
    packages = {name: info.get("version") if isinstance(info, Mapping) else info
                for name, info in sorted(environment.get("packages", {}).items())}
    return {"python": f"{python.get('version', '?')} ({python.get('implementation', '?')})",
            "platform": f"{platform.get('system', '?')} {platform.get('machine', '?')}", "packages": packages}


def statement_provenance(manifest: Manifest, given: Mapping[str, Any] | None, *,
                         error: type[ModelsafeError]) -> dict[str, Any]:
    """The provenance signed into the statement (see the module docstring)."""
    from modelsafe._version import __version__

    record: dict[str, Any] = {
        "signed_with": f"modelsafe {__version__}",
        "signed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "artifact": {"created": manifest.created, "modelsafe_version": manifest.modelsafe_version,
                     "format_version": manifest.format_version, "flavor": manifest.flavor},
        "environment": environment_summary(manifest.environment),
    }
    record.update(manifest.provenance or {})
    if given is not None:
        record.update(record_provenance(given, error=error))
    return record
