"""Value ranges: recorded at save, and the "far outside" warning at predict.

The range of a feature is recorded from ``training_data`` when given, else from the
sample, and only when at least :data:`MIN_RANGE_ROWS` rows give it: the extremes of a
handful of rows (often the first rows of a sorted frame) say little about the data
the model will see. A value is *far outside* when it lies more than ``width(n)`` spans
beyond the recorded ``[min, max]``; the band is wider the fewer rows it was recorded
from (``FAR * (1 + 10 / sqrt(n))``: about 2.8 spans for 30 rows, 2 for 100, 1.3 for
1,000, tending to ``FAR``), so that predicting on the rest of the same data does not
warn, while raw input given to a model trained on scaled input (values off by orders
of magnitude) still does. The warning says where the ranges came from.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["InputWarning", "MIN_RANGE_ROWS", "FAR", "record", "RangeCheck", "width", "warn_input"]

#: Ranges are recorded only from at least this many rows.
MIN_RANGE_ROWS = 30
#: The band beyond [min, max], in spans, for ranges from very many rows.
FAR = 1.0
_QUANTILES = (0.01, 0.5, 0.99)


class InputWarning(UserWarning):
    """Input given to ``Bundle.predict`` looks unlike what the model saw at save."""


def warn_input(message: str) -> None:
    """Warn InputWarning, attributed to the caller's line (the first frame outside modelsafe)."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("modelsafe."):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, InputWarning, stacklevel=level)


def width(rows: int | None) -> float:
    """How many spans beyond [min, max] a value may lie before it is far outside."""
    if rows is None:
        return FAR
    return FAR * (1.0 + 10.0 / math.sqrt(max(rows, 1)))


def record(values: np.ndarray) -> dict[str, Any]:
    """``min``, ``max`` and a few quantiles of one feature (missing values ignored)."""
    values = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return {}
    q = np.quantile(values.astype(np.float64), _QUANTILES)
    return {"min": float(values.min()), "max": float(values.max()),
            "quantiles": {str(k): float(v) for k, v in zip(_QUANTILES, q)}}


@dataclass(frozen=True)
class RangeCheck:
    """The compiled range check of the features that have a recorded range."""

    names: tuple[Any, ...]
    #: Positions of those features among all recorded features (columns).
    index: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seen_low: np.ndarray
    seen_high: np.ndarray
    origin: str

    @classmethod
    def compile(cls, names: Sequence[Any], entries: Sequence[dict[str, Any]], schema: dict[str, Any]) -> "RangeCheck | None":
        picked = [(i, n, e) for i, (n, e) in enumerate(zip(names, entries)) if "min" in e and "max" in e]
        if not picked:
            return None
        lo = np.array([e["min"] for _, _, e in picked], dtype=np.float64)
        hi = np.array([e["max"] for _, _, e in picked], dtype=np.float64)
        span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
        rows, source = schema.get("range_rows"), schema.get("ranges_from")
        # An old schema recorded no row count: its training ranges keep the old band, and its
        # sample ranges (from an unknown, possibly tiny, sample) get the band of the smallest one.
        w = width(MIN_RANGE_ROWS if rows is None and source != "training_data" else rows)
        return cls(tuple(n for _, n, _ in picked), np.array([i for i, _, _ in picked], dtype=np.intp),
                   lo - w * span, hi + w * span, lo, hi, _origin(source, rows))

    def check(self, values: np.ndarray, show: Any = repr) -> None:
        """Warn InputWarning when a column of ``values`` (one per ranged feature) is far outside."""
        if values.size == 0:
            return
        # fmin/fmax skip NaN (missing values are not "out of range").
        low = np.fmin.reduce(values, axis=0) if values.dtype.kind == "f" else values.min(axis=0)
        high = np.fmax.reduce(values, axis=0) if values.dtype.kind == "f" else values.max(axis=0)
        far = (low < self.low) | (high > self.high)
        if not far.any():
            return
        notes = [f"feature {show(self.names[j])} has values {low[j]:.4g}–{high[j]:.4g} but the model saw "
                 f"{self.seen_low[j]:.4g}–{self.seen_high[j]:.4g}" for j in np.flatnonzero(far)[:5]]
        more = "" if far.sum() <= 5 else f" (and {int(far.sum()) - 5} more)"
        warn_input("; ".join(notes) + more + f" {self.origin}. Input far outside the recorded ranges usually "
                   "means a preprocessing step (a scaler, an encoder) was not applied, or the data changed; "
                   "predictions there are unreliable. Was the scaler applied?")


def _origin(source: str | None, rows: int | None) -> str:
    if source == "training_data":
        return "during training" + (f" ({rows:,} rows of training_data)" if rows else "")
    size = f"{rows:,}-row " if rows else ""
    return (f"in the {size}sample given at save (pass training_data=X to ms.save for ranges from the whole "
            "training set)")
