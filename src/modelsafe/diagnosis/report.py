"""What ``ms.doctor`` returns: a report of problems, each with what, why and how to fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelsafe._reports import SEVERITIES, Problem, Report
from modelsafe.errors import ModelsafeError

__all__ = ["DoctorReport", "Problem", "SEVERITIES"]


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
