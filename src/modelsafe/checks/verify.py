"""Verification: replay the stored sample and compare with the outputs recorded at save.

Labels, integers, booleans and strings are compared exactly; floats with a
dtype-aware tolerance (``|actual - expected| <= atol + rtol * |expected|``).
A mismatch names the output, the largest difference, where it is, and the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from modelsafe._reports import Report
from modelsafe.checks.data import as_arrays, decode, difference
from modelsafe.errors import SaveError, VerificationError

#: (rtol, atol) by float width. float32 models differ in the last bits across BLAS builds.
_TOLERANCES: dict[int, tuple[float, float]] = {
    2: (1e-2, 1e-3),
    4: (1e-4, 1e-5),
    8: (1e-7, 1e-9),
    16: (1e-7, 1e-9),
}


def default_tolerance(dtype: np.dtype) -> dict[str, float] | None:
    """The tolerance for outputs of ``dtype``; None means compare exactly."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        rtol, atol = _TOLERANCES.get(dtype.itemsize, (1e-7, 1e-9))
        return {"rtol": rtol, "atol": atol}
    if dtype.kind == "c":
        rtol, atol = _TOLERANCES.get(dtype.itemsize // 2, (1e-7, 1e-9))
        return {"rtol": rtol, "atol": atol}
    return None


@dataclass(frozen=True)
class OutputCheck:
    """The comparison of one recorded output (e.g. ``predict``) with its replay."""

    output: str
    ok: bool
    dtype: str
    shape: tuple[int, ...]
    mismatches: int = 0
    max_difference: float | None = None
    position: tuple[int, ...] | None = None
    expected_value: Any = None
    actual_value: Any = None
    tolerance: Mapping[str, float] | None = None
    problem: str = ""

    def describe(self) -> str:
        if self.ok:
            exact = "exact" if self.tolerance is None else f"rtol={self.tolerance['rtol']:g}, atol={self.tolerance['atol']:g}"
            return f"  ok    {self.output}: {self.shape} {self.dtype} match ({exact})"
        if self.problem:
            return f"  FAIL  {self.output}: {self.problem}"
        where = f"at index {list(self.position)}" if self.position is not None else ""
        diff = "" if self.max_difference is None else f", largest difference {self.max_difference:.6g}"
        tol = (
            "compared exactly"
            if self.tolerance is None
            else f"tolerance rtol={self.tolerance['rtol']:g}, atol={self.tolerance['atol']:g}"
        )
        return (
            f"  FAIL  {self.output}: {self.mismatches} of {int(np.prod(self.shape))} values differ{diff} "
            f"{where} (expected {self.expected_value!r}, got {self.actual_value!r}; {tol})"
        )


@dataclass(frozen=True)
class VerifyReport(Report):
    """Result of replaying the verification sample. ``ok`` when every output matches."""

    error_class = VerificationError

    path: str
    checks: tuple[OutputCheck, ...] = ()
    rows: int = 0
    error: str = ""
    skipped: str = ""
    #: Local modules used at load whose source differs from the copy bundled at save.
    code_changes: tuple[str, ...] = ()
    #: How this environment differs from the saved one (``"numpy 1.26.4 -> 2.4.6 (major)"``).
    environment: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(c.ok for c in self.checks)

    def _lines(self) -> list[str]:
        if self.skipped:
            return [f"verification of {self.path}: not possible ({self.skipped})",
                    "  note  nothing checks that this model predicts here as it did when it was saved. Save it "
                    "again with sample= a few input rows (modelsafe convert --sample FILE), and every load replays "
                    "them"]
        head = "passed" if self.ok else "FAILED"
        lines = [f"verification of {self.path}: {head} on {self.rows} sample row(s)"]
        if self.error:
            lines.append(f"  FAIL  the model raised while replaying the sample: {self.error}")
        lines.extend(c.describe() for c in self.checks)
        if not self.ok and self.environment:
            lines.append(f"  note  the environment differs from the one the model was saved in: {self.environment}")
        if not self.ok and self.code_changes:
            lines.append(f"  note  the code of {', '.join(self.code_changes)} changed since the model was saved "
                         "(the importable copy was used); load with code='bundled', trust_code=True to use the "
                         "saved copy")
        if not self.ok and self.environment:
            lines.append(
                "Why it matters: this model does not reproduce the outputs it gave when it was saved, so "
                "its predictions here cannot be trusted. How to fix: compare environments with "
                "`modelsafe env`, install the recorded versions, or re-export the model here."
            )
        elif not self.ok:
            lines.append(
                "Why it matters: this model does not reproduce the outputs it gave when it was saved, so its "
                "predictions here cannot be trusted. The recorded packages have the versions they had at save, so "
                "a version change is not the cause: the model is not deterministic on its sample, or depends on "
                "something outside the artifact (code, files, hardware). How to fix: make its outputs "
                "reproducible (fixed seeds, eval mode), check the code it imports, then re-save it."
            )
        return lines

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise VerificationError(str(self), report=self)


@dataclass
class Sample:
    """Sample inputs and the reference outputs recorded at save."""

    inputs: Any
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    tolerances: dict[str, dict[str, float] | None] = field(default_factory=dict)
    rows: int = 0


def compare_output(name: str, expected: np.ndarray, actual: Any,
                   tolerance: Mapping[str, float] | None) -> OutputCheck:
    """Compare one replayed output with its reference."""
    try:
        got = as_arrays(actual)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return OutputCheck(name, False, str(expected.dtype), expected.shape,
                           problem=f"the output could not be read as an array ({exc})")
    if got.shape != expected.shape:
        return OutputCheck(name, False, str(expected.dtype), expected.shape,
                           problem=f"shape {got.shape} differs from the recorded {expected.shape}")
    if tolerance is None or got.dtype.kind not in "fciub":
        differs = _exact_differs(expected, got)
        max_diff = None
    else:
        exp = expected.astype(np.float64) if expected.dtype.kind != "c" else expected
        act = got.astype(exp.dtype)
        diff = np.abs(act - exp)
        limit = tolerance["atol"] + tolerance["rtol"] * np.abs(exp)
        nan_same = np.isnan(exp) & np.isnan(act) if exp.dtype.kind in "fc" else np.zeros(exp.shape, bool)
        differs = ~((diff <= limit) | nan_same)
        diff = np.where(np.isnan(diff) & ~nan_same, np.inf, np.where(nan_same, 0, diff))
        max_diff = float(diff.max()) if diff.size else 0.0
    count = int(differs.sum())
    if count == 0:
        return OutputCheck(name, True, str(expected.dtype), expected.shape, tolerance=tolerance)
    if max_diff is not None:
        flat = int(np.argmax(np.where(differs, diff, -1)))
    else:
        flat = int(np.argmax(differs.ravel()))
    position = tuple(int(i) for i in np.unravel_index(flat, expected.shape))
    return OutputCheck(
        name, False, str(expected.dtype), expected.shape, mismatches=count, max_difference=max_diff,
        position=position, expected_value=_scalar(expected[position]), actual_value=_scalar(got[position]),
        tolerance=tolerance,
    )


def _exact_differs(expected: np.ndarray, got: np.ndarray) -> np.ndarray:
    if expected.dtype.kind in "US" or got.dtype.kind in "US":
        return expected.astype(str) != got.astype(str)
    differs = expected != got
    if expected.dtype.kind == "f":
        differs &= ~(np.isnan(expected) & np.isnan(got.astype(np.float64)))
    return np.asarray(differs)


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def replay(path: str, sample: Sample, run: Callable[[Any], dict[str, Any]],
           code_changes: tuple[str, ...] = (), environment: str = "") -> VerifyReport:
    """Run the model on the sample inputs and compare every recorded output."""
    try:
        actual = run(sample.inputs)
    except Exception as exc:  # noqa: BLE001 - the report carries it
        return VerifyReport(path=path, rows=sample.rows, error=f"{type(exc).__name__}: {exc}",
                            code_changes=code_changes, environment=environment)
    checks = []
    for name, expected in sample.outputs.items():
        if name not in actual:
            checks.append(OutputCheck(name, False, str(expected.dtype), expected.shape,
                                      problem=f"the model no longer produces {name!r}"))
            continue
        checks.append(compare_output(name, expected, actual[name], sample.tolerances.get(name)))
    return VerifyReport(path=path, checks=tuple(checks), rows=sample.rows, code_changes=code_changes,
                        environment=environment)


def check_replays(inputs: Any, spec: dict[str, Any], read: Callable[[str], np.ndarray],
                  recorded: Mapping[str, np.ndarray], tolerances: Mapping[str, Mapping[str, float] | None],
                  run: Callable[[Any], dict[str, Any]]) -> None:
    """At save: raise SaveError unless the stored sample, read back, gives the recorded outputs.

    When the sample reads back equal to the one given (the usual case) it replays by
    construction; otherwise it is run through ``run`` (the path ``predict`` takes) and
    its outputs are compared, so a sample modelsafe cannot store faithfully is refused
    in the process that saved, instead of failing verification at every load.
    """
    decoded = decode(spec, read)
    changed = difference(inputs, decoded)
    if changed is None:
        return
    try:
        actual = run(decoded)
    except Exception as exc:  # noqa: BLE001 - reported as the save's failure
        raise SaveError(
            f"The verification sample does not replay: stored and read back, {changed}, and the model then fails "
            f"({type(exc).__name__}: {exc}). Every load would fail verification. Pass the sample as one array, "
            "a DataFrame, a tuple of arrays (positional inputs) or a dict of arrays (keyword inputs).",
            changed=changed) from exc
    checks = [compare_output(name, expected, actual[name], tolerances.get(name)) if name in actual
              else OutputCheck(name, False, str(expected.dtype), expected.shape, problem="not produced")
              for name, expected in recorded.items()]
    failed = [c for c in checks if not c.ok]
    if failed:
        raise SaveError(
            f"The verification sample does not replay: stored and read back, {changed}, and the model's outputs "
            "then differ:\n" + "\n".join(c.describe() for c in failed) + "\nEvery load would fail verification. "
            "Pass the sample as one array, a DataFrame, a tuple of arrays (positional inputs) or a dict of arrays "
            "(keyword inputs).", changed=changed, outputs=[c.output for c in failed])
