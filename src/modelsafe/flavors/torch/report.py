"""Comparing saved weights with the model a class builds now, key by key.

:func:`compare` gives a :class:`WeightsReport`: keys missing from the weights, keys the
model no longer has, shape differences, and rename suggestions (a saved key and a model
key with the same shape, the same last name part and the nearest position, such as
``fc2.weight`` -> ``head.weight``). ``str(report)`` is a readable table; a strict load
raises it as :class:`~modelsafe.errors.ArchitectureMismatchError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from modelsafe._reports import Report
from modelsafe.errors import ArchitectureMismatchError

Shape = tuple[int, ...]
_MAX_ROWS = 40


@dataclass(frozen=True)
class WeightsReport(Report):
    """Saved weights vs the current model. ``ok`` when every key and shape matches."""

    error_class = ArchitectureMismatchError

    model: str
    saved_with: str
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: dict[str, tuple[Shape, Shape]] = field(default_factory=dict)
    renames: dict[str, str] = field(default_factory=dict)
    code_changes: tuple[str, ...] = ()
    matched: int = 0
    strict: bool = True
    #: Shapes of the unexpected (saved) and missing (current) keys, for the table.
    saved_shapes: dict[str, Shape] = field(default_factory=dict)
    current_shapes: dict[str, Shape] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def _rows(self) -> list[tuple[str, str, str, str]]:
        rows: list[tuple[str, str, str, str]] = []
        for key in self.unexpected:
            hint = f" (renamed to {self.renames[key]}?)" if key in self.renames else ""
            rows.append((key, _fmt(self.saved_shapes.get(key)), "-", "not in the model" + hint))
        for key in self.missing:
            rows.append((key, "-", _fmt(self.current_shapes.get(key)), "not in the saved weights"))
        for key, (saved, current) in self.mismatched.items():
            rows.append((key, _fmt(saved), _fmt(current), "shape differs"))
        return rows

    def _lines(self) -> list[str]:
        if self.ok:
            return [f"the saved weights fit {self.model}: {self.matched} tensors match"]
        differ = len(self.missing) + len(self.unexpected) + len(self.mismatched)
        lines = [f"The saved weights do not fit {self.model} as it is defined now ({differ} key(s) differ, "
                 f"{self.matched} match):"]
        rows = self._rows()
        shown = rows[:_MAX_ROWS]
        widths = [max(len(r[i]) for r in [("key", "saved", "current", ""), *shown]) for i in range(3)]
        header = ("key", "saved", "current", "problem")
        for row in [header, *shown]:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
        if len(rows) > len(shown):
            lines.append(f"  ... and {len(rows) - len(shown)} more")
        lines.append(f"The weights were saved from {self.saved_with}.")
        if self.code_changes:
            lines.append("Local module(s) whose source changed since the model was saved: "
                         f"{', '.join(self.code_changes)}.")
        if self.renames:
            pairs = ", ".join(f"{a} -> {b}" for a, b in list(self.renames.items())[:6])
            lines.append(f"Looks like renames: {pairs}.")
        lines.append("Why it matters: weights loaded into a different architecture would be silently wrong, or "
                     "fail later at predict.")
        fixes = ["use the class as it was when the model was saved (load with code='bundled' and "
                 "trust_code=True to use the copy bundled with the artifact)"]
        if self.renames:
            fixes.append("rename the attributes back, or map the old keys to the new names")
        fixes.append(f"load with strict=False to load the {self.matched} matching tensors and keep the rest "
                     "as initialized")
        lines.append("How to fix: " + "; or ".join(fixes) + ".")
        return lines

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise ArchitectureMismatchError(str(self), missing=list(self.missing), unexpected=list(self.unexpected),
                                            mismatched=dict(self.mismatched), renames=dict(self.renames),
                                            code_changes=list(self.code_changes), report=self)


def _fmt(shape: Shape | None) -> str:
    if shape is None:
        return "-"
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def compare(saved: Mapping[str, Shape], current: Mapping[str, Shape], *, model: str, saved_with: str,
            code_changes: Sequence[str] = (), strict: bool = True) -> WeightsReport:
    """Compare saved key shapes with the current model's, both in state-dict order."""
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    mismatched = {k: (tuple(saved[k]), tuple(current[k])) for k in saved
                  if k in current and tuple(saved[k]) != tuple(current[k])}
    matched = sum(1 for k in saved if k in current and k not in mismatched)
    renames = suggest_renames(list(saved), list(current), saved, current, unexpected, missing)
    return WeightsReport(model=model, saved_with=saved_with, missing=tuple(missing),
                         unexpected=tuple(unexpected), mismatched=mismatched, renames=renames,
                         code_changes=tuple(code_changes), matched=matched, strict=strict,
                         saved_shapes={k: tuple(saved[k]) for k in unexpected},
                         current_shapes={k: tuple(current[k]) for k in missing})


def suggest_renames(saved_order: list[str], current_order: list[str], saved: Mapping[str, Shape],
                    current: Mapping[str, Shape], unexpected: Sequence[str], missing: Sequence[str]) -> dict[str, str]:
    """``{saved key: model key}`` for pairs with the same shape and last name part, nearest position first."""
    saved_pos = {k: i for i, k in enumerate(saved_order)}
    current_pos = {k: i for i, k in enumerate(current_order)}
    free = list(missing)
    renames: dict[str, str] = {}
    for key in unexpected:
        leaf = key.rsplit(".", 1)[-1]
        options = [m for m in free if m.rsplit(".", 1)[-1] == leaf and tuple(current[m]) == tuple(saved[key])]
        if not options:
            continue
        best = min(options, key=lambda m: abs(current_pos[m] - saved_pos[key]))
        renames[key] = best
        free.remove(best)
    return _whole_modules(renames, unexpected)


def _whole_modules(renames: dict[str, str], unexpected: Sequence[str]) -> dict[str, str]:
    """Keep a rename only when every unexpected key of its module moves to the same new module."""
    def parent(key: str) -> str:
        return key.rpartition(".")[0]

    moves: dict[str, set[str]] = {}
    for key in unexpected:
        moves.setdefault(parent(key), set()).add(parent(renames[key]) if key in renames else "\0")
    return {k: v for k, v in renames.items() if len(moves[parent(k)]) == 1}


def shapes_of(tensors: Mapping[str, Any]) -> dict[str, Shape]:
    return {k: tuple(v.shape) for k, v in tensors.items() if hasattr(v, "shape")}
