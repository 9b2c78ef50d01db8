"""``ms.doctor``: why won't this file load here (a path), or why won't this object save.

For a path nothing is loaded: the file is scanned (:func:`modelsafe.scan`), and what
it references and records is compared with this environment. Each problem says what
is wrong (with the exact names and versions), why it matters, and how to fix it.
Frameworks add their own checks through ``Flavor.diagnose_file(path, report)``; the
flavors asked are found from the module roots of the file's globals (by name, through
the registry), so no framework is imported that the file does not use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe._reports import Report
from modelsafe.errors import ModelsafeError

if TYPE_CHECKING:
    from modelsafe.security.scanner import ScanReport

__all__ = ["doctor", "DoctorReport", "Problem"]

#: error: it will not load (or not safely, or not the same); warning: it may not; info: a fact.
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Problem:
    """One reason a file won't load here (or an object won't save), in three parts."""

    what: str
    why: str
    fix: str
    severity: str = "error"
    #: The exact name involved: a global, a package, a member, an attribute path.
    subject: str = ""

    def describe(self) -> str:
        parts = [f"{self.severity.upper()}: {self.what}"]
        parts += [f"    {label}: {text}" for label, text in (("why", self.why), ("fix", self.fix)) if text]
        return "\n".join(parts)


@dataclass(frozen=True)
class DoctorReport(Report):
    """What :func:`doctor` found. ``ok`` when no problem is an error.

    Attributes: ``target`` (the path, or the object's type), ``kind`` (what it is),
    ``problems`` (errors first), ``facts`` (versions and such read from the file).
    """

    error_class = ModelsafeError

    target: str
    kind: str
    problems: tuple[Problem, ...]
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def _lines(self) -> list[str]:
        lines = [f"{self.target}: {self.kind}"]
        lines += [f"  {k}: {v}" for k, v in sorted(self.facts.items())]
        lines += ["  " + p.describe().replace("\n", "\n  ") for p in self.problems]
        n_err = len(self.errors())
        lines.append("ok: nothing found that stops it here" if self.ok
                     else f"{n_err} problem(s) stop it here; fix them in the order shown")
        return lines

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise ModelsafeError(str(self), report=self, problems=[p.subject for p in self.errors()])


def doctor(target: Any) -> DoctorReport:
    """Explain why a model file won't load here, or why an object won't save.

    Parameters
    ----------
    target
        A path (any model file or folder: pickle, joblib, torch, Keras, modelsafe artifact):
        nothing in it is loaded or imported. Or a Python object: the problems that would
        stop ``ms.save`` are listed, each attribute by its path.

    Returns
    -------
    DoctorReport
        ``ok`` when nothing stops it; otherwise each problem with what, why and how to fix.

    Raises
    ------
    FormatError
        The path does not exist or cannot be read.

    Examples
    --------
    >>> import pickle, modelsafe as ms
    >>> with open("/tmp/doc-doctor.pkl", "wb") as f:
    ...     pickle.dump({"weights": [1.0, 2.0]}, f)
    >>> ms.doctor("/tmp/doc-doctor.pkl").ok
    True
    >>> import threading
    >>> ms.doctor({"lock": threading.Lock()}).ok
    False
    """
    if isinstance(target, (str, os.PathLike)):
        return _doctor_path(Path(target))
    return _doctor_object(target)


def _doctor_path(path: Path) -> DoctorReport:
    from modelsafe import _doctor_checks as checks
    from modelsafe import _doctor_frameworks as frameworks
    from modelsafe.security.scanner import scan

    report = scan(path)
    facts: dict[str, Any] = dict(report.facts)
    problems: list[Problem] = []
    problems += checks.globals_here(report)
    problems += checks.protocol(report)
    problems += checks.recorded_versions(path, report, facts)
    problems += frameworks.torch_checks(path, report, facts)
    problems += frameworks.keras_checks(path, report, facts)
    problems += checks.artifact_checks(path, report)
    problems += _flavor_checks(path, report)
    covered = {p.subject for p in problems}  # a specific diagnosis replaces the scan's generic one
    problems = checks.security(report, covered) + problems
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


def _doctor_object(obj: Any) -> DoctorReport:
    """Everything that would stop ``ms.save(obj)``, each attribute named by its path."""
    from modelsafe._diagnose import diagnose_object

    cls = type(obj)
    problems = [
        Problem(what=f"{path} ({type_name}) cannot be stored", why=reason,
                fix="drop or replace this attribute before saving (implement __getstate__ to leave it out, "
                    "reopen connections and files after loading, use a named function instead of a lambda)",
                subject=path)
        for path, type_name, reason in diagnose_object(obj)
    ]
    return DoctorReport(target=f"{cls.__module__}.{cls.__qualname__}", kind="object", problems=tuple(problems))
