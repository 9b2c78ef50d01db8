"""``BatchReport``: what one ``predict_file`` run read, wrote, rejected, and how fast."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from modelsafe._reports import Report
from modelsafe.errors import BatchError

__all__ = ["BatchReport"]


@dataclass(frozen=True)
class BatchReport(Report):
    """The result of :func:`modelsafe.predict_file`.

    ``ok`` is True when every row was scored; rows the input guard or the model refused
    under ``on_error="skip"`` are counted in ``rejected`` and written to ``rejects``.
    """

    error_class: ClassVar[type[Exception]] = BatchError

    artifact: str
    source: str
    destination: str
    method: str
    rows_in: int
    rows_out: int
    rejected: int
    seconds: float
    #: Where the rejected rows went (``OUTPUT.rejects.<ext>``), or None when none were rejected.
    rejects: str | None = None
    #: The input guard's warnings, each once (extra columns, values far outside the recorded ranges).
    warnings: tuple[str, ...] = ()
    #: Rows read per second.
    throughput: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "throughput", self.rows_in / self.seconds if self.seconds > 0 else 0.0)

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    def _lines(self) -> list[str]:
        lines = [f"{self.source} -> {self.destination} ({self.method} of {self.artifact})",
                 f"  rows in {self.rows_in:,}, rows out {self.rows_out:,}, rejected {self.rejected:,}",
                 f"  {self.seconds:.2f} s, {self.throughput:,.0f} rows/s"]
        if self.rejects:
            lines.append(f"  rejected rows (with a reason column) in {self.rejects}")
        lines += [f"  warning: {text}" for text in self.warnings]
        return lines
