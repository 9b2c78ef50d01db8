"""One chunk of rows through the bundle: the input guard, the model, its output as named columns.

:class:`ChunkScorer` turns a pandas chunk into what the model was saved with (a DataFrame for
a DataFrame schema, an array for an array schema, a list for texts), calls the bundle's
guarded method and names the output (:mod:`modelsafe.batch.outputs`).

:meth:`ChunkScorer.split` scores a chunk that failed again in halves, down to single rows,
so the rows that fail are found (``on_error="skip"``) with ``O(k log n)`` calls for ``k``
bad rows in ``n``. Only failures that depend on rows are split: a missing column or a column
of the wrong dtype fails every row, and stops the run whatever ``on_error`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelsafe.batch.outputs import class_labels, to_frame
from modelsafe.errors import BatchError, ModelsafeError, SchemaError

__all__ = ["ChunkScorer", "Split", "chunk_error", "row_level"]


@dataclass
class Split:
    """A chunk scored row-wise: predictions of the rows that passed, in order, and the rows that did not."""

    #: ``(first row, predictions)`` per scored run of rows, in row order.
    scored: list[tuple[int, Any]] = field(default_factory=list)
    #: ``(row, reason)`` per rejected row, in row order.
    rejected: list[tuple[int, str]] = field(default_factory=list)


class ChunkScorer:
    """Scores chunks with one bundle method; built once per run (or per worker)."""

    def __init__(self, bundle: Any, method: str) -> None:
        self.method = method
        self.call = bundle.predict if method == "predict" else getattr(bundle, method)
        self.labels = class_labels(bundle.model)
        self.manifest = bundle.manifest
        self.kind = (bundle.manifest.schema or {}).get("kind")

    def model_input(self, frame: Any) -> Any:
        """The chunk as the kind of input the model was saved with."""
        if self.kind in ("ndarray", "tensor"):
            return frame.to_numpy()
        if self.kind == "texts":
            if frame.shape[1] != 1:
                raise BatchError(
                    f"The model was saved with a list of texts, and the input has {frame.shape[1]} columns "
                    f"({list(frame.columns)}): which one holds the texts is not known. Keep only the text column.",
                    columns=[str(c) for c in frame.columns])
            return frame.iloc[:, 0].tolist()
        if self.kind in ("positional", "dict"):
            raise BatchError(
                f"The model was saved with {self.kind} inputs (several arrays), which one table of rows cannot "
                "hold. Score it with bundle.predict in a loop of your own.", kind=self.kind)
        return frame

    def score(self, frame: Any) -> Any:
        """Predictions for ``frame`` (a pandas Series or DataFrame on the chunk's index)."""
        result = self.call(self.model_input(frame))
        return to_frame(result, self.method, self.labels, index=frame.index)

    def empty(self) -> Any:
        """No predictions, with the columns and dtype of the recorded output (``prediction`` without one)."""
        from modelsafe.batch.outputs import OutputSpec

        try:
            return OutputSpec.recorded(self.manifest, self.method, self.labels).empty()
        except BatchError:
            return OutputSpec(self.method, ("prediction",), "float64", True).empty()

    def split(self, frame: Any, first: int, failure: BaseException) -> Split:
        """Score ``frame`` (rows ``first``..., which failed with ``failure``) in halves, rejecting failing rows."""
        found = Split()
        self._split(frame, first, failure, found)
        return found

    def _split(self, frame: Any, first: int, failure: BaseException, found: Split) -> None:
        if len(frame) == 1:
            found.rejected.append((first, _reason(failure)))
            return
        middle = len(frame) // 2
        for part, start in ((frame.iloc[:middle], first), (frame.iloc[middle:], first + middle)):
            try:
                found.scored.append((start, self.score(part)))
            except Exception as exc:
                if not row_level(exc):
                    raise
                self._split(part, start, exc, found)


def row_level(exc: BaseException) -> bool:
    """Whether ``exc`` may hold for some rows only (so skipping rows can help)."""
    if isinstance(exc, SchemaError):
        return isinstance(getattr(exc, "missing", None), int)  # missing values, counted, in some rows
    if isinstance(exc, (ModelsafeError, MemoryError)):
        return False
    return isinstance(exc, Exception)


def _reason(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, ModelsafeError) else f"{type(exc).__name__}: {exc}"
    return text.strip() or type(exc).__name__


def chunk_error(exc: BaseException, where: str, facts: Mapping[str, Any]) -> ModelsafeError:
    """``exc`` (the guard's or the model's) said of the rows at ``where``, its facts kept and ``facts`` added."""
    if isinstance(exc, ModelsafeError):
        known = {k: v for k, v in vars(exc).items() if k != "message"}
        try:  # the same class, so that `except ms.SchemaError` still catches the guard's refusal
            return type(exc)(f"{where}: {exc.message}", **{**known, **facts})
        except TypeError:  # a class with its own constructor
            return BatchError(f"{where}: {exc.message}", **{**known, **facts})
    return BatchError(
        f"{where}: the model raised {type(exc).__name__}: {exc}. These rows stopped the run; pass "
        "on_error='skip' (--on-error skip) to write the rows that fail to a rejects file with the reason, "
        "and score the others.", **facts, cause=f"{type(exc).__name__}: {exc}")
