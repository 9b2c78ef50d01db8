"""The diagnosis of a path: why won't this file load here.

Nothing is loaded: the file is scanned (:func:`modelsafe.scan`), and what it references and
records is compared with this environment. Frameworks add their own checks through
``Flavor.diagnose_file(path, report)``; the flavors asked are found from the module roots of
the file's globals (by name, through the registry), so no framework is imported that the file
does not use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe._reports import SEVERITIES, Problem
from modelsafe.diagnosis.report import DoctorReport
from modelsafe.errors import ModelsafeError

if TYPE_CHECKING:
    from modelsafe.security.scanner import ScanReport

__all__ = ["diagnose_path"]


def diagnose_path(path: Path) -> DoctorReport:
    from modelsafe.diagnosis import checks, frameworks, onnx_files
    from modelsafe.diagnosis.mlflow_folder import diagnose_mlflow_folder, is_mlflow_model
    from modelsafe.security.scanner import scan

    if is_mlflow_model(path):  # MLmodel: its flavor, the file convert would read, and that file's diagnosis
        return diagnose_mlflow_folder(path, diagnose_path)
    report = scan(path)
    facts: dict[str, Any] = dict(report.facts)
    problems: list[Problem] = []
    problems += checks.globals_here(report)
    problems += checks.protocol(report)
    problems += checks.recorded_versions(path, report, facts)
    problems += frameworks.torch_checks(path, report, facts)
    problems += frameworks.keras_checks(path, report, facts)
    problems += onnx_files.onnx_checks(path, report, facts)
    problems += checks.artifact_checks(path, report)
    problems += _flavor_checks(path, report)
    problems += _folder_checks(path, report, facts)
    covered = {p.subject for p in problems}  # a specific diagnosis replaces the scan's generic one
    problems = problems + checks.security(report, covered)  # a specific diagnosis first, then the scan's verdict
    order = {s: i for i, s in enumerate(SEVERITIES)}
    problems.sort(key=lambda p: order.get(p.severity, 9))
    return DoctorReport(target=str(path), kind=report.kind, problems=tuple(_unique(problems)), facts=facts)


def _flavor_checks(path: Path, report: "ScanReport") -> list[Problem]:
    """Ask each flavor whose framework the file's globals come from (``Flavor.diagnose_file``)."""
    from modelsafe.flavors import _DETECT, get_flavor

    names = sorted({_DETECT[root] for root in {g.split(".")[0] for g in report.globals()} if root in _DETECT})
    problems: list[Problem] = []
    for name in names:
        try:
            flavor = get_flavor(name)
        except (ModelsafeError, ImportError):
            continue  # the framework is missing: globals_here already says so
        hook = getattr(flavor, "diagnose_file", None)
        if hook is not None:
            problems += _as_problems(hook(str(path), report), name)
    return problems


def _folder_checks(path: Path, report: "ScanReport", facts: dict[str, Any]) -> list[Problem]:
    """A Hugging Face ``save_pretrained`` folder: its files, classes, remote code and pickled weights."""
    if report.kind != "directory":
        return []
    from modelsafe.flavors.transformers.folder import diagnose_folder  # reads JSON and file names only

    return diagnose_folder(path, report, facts)


def _as_problems(result: Any, flavor: str) -> list[Problem]:
    """A hook may return Problems, or objects with ``problem()``/``fix()`` (and ``severity``), or None."""
    if result is None:
        return []
    out = []
    for item in result if isinstance(result, (list, tuple)) else [result]:
        if isinstance(item, Problem):
            out.append(item)
            continue
        what, fix = (getattr(item, attr, "") for attr in ("problem", "fix"))
        what, fix = (v() if callable(v) else v for v in (what, fix))
        severity = getattr(item, "severity", None) or ("warning" if getattr(item, "same_version", False) else "error")
        out.append(Problem(what=str(what or item), why=str(getattr(item, "why", "") or ""), fix=str(fix or ""),
                           severity=severity, subject=flavor))
    return out


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.what, p.subject) not in seen:
            seen.add((p.what, p.subject))
            out.append(p)
    return out
