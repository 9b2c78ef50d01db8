"""Predictions as named columns: ``prediction``, or one column per class named by the class labels.

* A 1-D output (labels, values, a binary decision score) is one column, ``prediction``.
* A 2-D output of ``k`` columns is ``k`` columns: named by the model's class labels
  (``classes_``, as ``str``) for ``predict_proba`` and ``decision_function`` when the model has
  ``k`` of them, else ``prediction_0`` ... ``prediction_{k-1}``.
* A DataFrame output keeps its column names; a Series its name (or ``prediction``).

:class:`OutputSpec` is the same naming computed without running the model, from the outputs
recorded at save (their dtype and shape) and the labels: the ``meta`` of a Dask result and the
``result_type`` of a Spark UDF.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelsafe.errors import BatchError

__all__ = ["PER_CLASS", "PREDICTION", "OutputSpec", "class_labels", "column_names", "recorded_width", "to_frame"]

PREDICTION = "prediction"
#: Methods whose columns are the model's classes.
PER_CLASS = ("predict_proba", "decision_function")


def class_labels(model: Any) -> list[Any] | None:
    """The model's class labels (``classes_``: scikit-learn, XGBoost, LightGBM), or None."""
    labels = getattr(model, "classes_", None)
    if labels is None:
        return None
    try:
        return list(np.asarray(labels).tolist())
    except (TypeError, ValueError):
        return None


def recorded_width(manifest: Any, method: str) -> int:
    """Columns of the output of ``method`` recorded at save (1 for a 1-D output, 0 when not recorded)."""
    spec = ((manifest.verification or {}).get("outputs") or {}).get(method) or {}
    shape = spec.get("shape") or []
    return 0 if not shape else (1 if len(shape) == 1 else int(shape[1]))


def column_names(method: str, width: int, labels: Sequence[Any] | None) -> list[str]:
    """Names of the ``width`` columns of a 2-D output of ``method``."""
    if method in PER_CLASS and labels is not None and len(labels) == width:
        names = [str(label) for label in labels]
        if len(set(names)) == width:
            return names
    return [f"{PREDICTION}_{j}" for j in range(width)]


def to_frame(result: Any, method: str, labels: Sequence[Any] | None, index: Any = None) -> Any:
    """``result`` of ``bundle.<method>`` as a pandas DataFrame (2-D) or Series (1-D), on ``index``."""
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        frame = result.copy(deep=False)
        frame.columns = [str(c) for c in frame.columns]
        if index is not None:
            frame.index = index
        return frame
    if isinstance(result, pd.Series):
        return pd.Series(result.to_numpy(), index=index, name=str(result.name or PREDICTION))
    array = _numpy(result)
    if array.ndim == 1:
        return pd.Series(array, index=index, name=PREDICTION)
    if array.ndim == 2:
        if array.shape[1] == 1 and method == "predict":
            return pd.Series(array[:, 0], index=index, name=PREDICTION)
        return pd.DataFrame(array, index=index, columns=column_names(method, array.shape[1], labels))
    raise BatchError(
        f"The model's {method} returned an array of shape {array.shape}: a table holds 1-D or 2-D outputs only. "
        "Score this model with bundle.predict in a loop of your own, or save a model whose output is a table.",
        method=method, shape=list(array.shape))


def _numpy(result: Any) -> np.ndarray:
    if hasattr(result, "detach") and hasattr(result, "cpu"):  # a torch tensor
        result = result.detach().cpu().numpy()
    array = np.asarray(result)
    if array.ndim == 0:
        raise BatchError(f"The model returned one value ({array!r}) for a whole chunk: there is no value per row to "
                         "write. Save a model that returns one output per input row.", shape=[])
    return array


@dataclass(frozen=True)
class OutputSpec:
    """The columns a method's output has, known before any row is scored."""

    method: str
    #: Column names; one name and ``series=True`` for a 1-D output.
    names: tuple[str, ...]
    dtype: str
    series: bool

    @classmethod
    def recorded(cls, manifest: Any, method: str, labels: Sequence[Any] | None) -> OutputSpec:
        """From the output of ``method`` recorded with the verification sample at save."""
        outputs = (manifest.verification or {}).get("outputs") or {}
        spec = outputs.get(method)
        if spec is None or "shape" not in spec:
            recorded = sorted(outputs)
            raise BatchError(
                f"The artifact records no {method} output (recorded: {recorded or 'none'}), so the type of its "
                f"predictions is not known before they are computed. Save the model with a sample "
                f"(ms.save(model, path, sample=X[:32])), pick a recorded method, or pass the output type yourself "
                "(meta= for Dask, result_type= for Spark).", method=method, recorded=recorded)
        shape = list(spec["shape"])
        dtype = str(np.dtype(spec["dtype"])) if spec.get("dtype") else "float64"
        if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1 and method == "predict"):
            return cls(method, (PREDICTION,), dtype, True)
        if len(shape) == 2:
            return cls(method, tuple(column_names(method, int(shape[1]), labels)), dtype, False)
        raise BatchError(f"The recorded {method} output has shape {shape}: a table holds 1-D or 2-D outputs only.",
                         method=method, shape=shape)

    def empty(self, index: Any = None) -> Any:
        """An empty pandas Series or DataFrame of these columns and dtype (a Dask ``meta``)."""
        width = 1 if self.series else len(self.names)
        array = np.empty((0,) if self.series else (0, width), dtype=np.dtype(self.dtype))
        labels = None if self.series else list(self.names)
        frame = to_frame(array, self.method, labels, index=index)
        if not self.series:
            frame.columns = list(self.names)
        return frame
