"""Shared behaviour of the report dataclasses (VerifyReport, EnvReport, ...), and ``Problem``.

Every report is a frozen dataclass with ``.ok``, a readable ``str()``,
``.to_dict()`` (JSON-able) and ``.raise_if_failed()``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass
from typing import Any, ClassVar


def to_jsonable(value: Any) -> Any:
    """Convert dataclasses, enums, tuples, paths and numpy scalars to JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return to_jsonable(item())
        except (TypeError, ValueError):
            pass
    return str(value)


class Report:
    """Mixin for frozen report dataclasses. Subclasses define ``ok`` and ``_lines``."""

    error_class: ClassVar[type[Exception]]

    @property
    def ok(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError  # abstract

    def _lines(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError  # abstract

    def __str__(self) -> str:
        return "\n".join(self._lines())

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-able data, including ``ok``."""
        data = to_jsonable(self)
        data["ok"] = self.ok
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def raise_if_failed(self) -> None:
        """Raise this report's error class (with ``report=self``) unless ``ok``."""
        if not self.ok:
            raise self.error_class(str(self), report=self)


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
