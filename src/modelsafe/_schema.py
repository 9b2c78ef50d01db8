"""Input schema: what the model was given at save (names, dtypes, shapes, value ranges)."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelsafe._data import describe_kind

_QUANTILES = (0.01, 0.5, 0.99)
_MAX_FEATURES = 2048


def _ranges(values: np.ndarray) -> dict[str, Any]:
    values = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return {}
    q = np.quantile(values.astype(np.float64), _QUANTILES)
    return {"min": float(values.min()), "max": float(values.max()),
            "quantiles": {str(k): float(v) for k, v in zip(_QUANTILES, q)}}


def capture_schema(x: Any) -> dict[str, Any]:
    """Describe ``x``: kind, columns or features with dtypes and value ranges."""
    kind = describe_kind(x)
    if kind == "dataframe":
        columns = []
        for name in x.columns:
            col = x[name]
            entry: dict[str, Any] = {"name": name if isinstance(name, (str, int)) else str(name), "dtype": str(col.dtype)}
            values = col.to_numpy()
            if values.dtype.kind in "iuf":
                entry.update(_ranges(values))
            elif str(col.dtype) == "category":
                entry["categories"] = [str(c) for c in col.cat.categories[:1000]]
            columns.append(entry)
        return {"kind": kind, "columns": columns}
    if kind in ("texts", "dict", "list") and kind != "list":
        return {"kind": kind}
    try:
        arr = x.detach().cpu().numpy() if kind == "tensor" and hasattr(x, "detach") else np.asarray(x)
    except Exception:  # noqa: BLE001 - an input we cannot describe gets no schema
        return {"kind": kind}
    schema: dict[str, Any] = {"kind": kind, "dtype": str(arr.dtype), "shape": [None, *arr.shape[1:]]}
    if arr.ndim == 2 and arr.dtype.kind in "iuf" and arr.shape[1] <= _MAX_FEATURES:
        schema["features"] = [_ranges(arr[:, j]) for j in range(arr.shape[1])]
    return schema


class InputWarning(UserWarning):
    """Input given to ``Bundle.predict`` looks unlike what the model saw at save."""


def check_input(schema: dict[str, Any], x: Any) -> Any:
    """Check ``x`` against ``schema``; return it realigned (DataFrame columns by name)."""
    from modelsafe.errors import SchemaError

    kind = schema.get("kind")
    if kind == "dataframe" and hasattr(x, "columns"):
        names = [c["name"] for c in schema["columns"]]
        missing = [n for n in names if n not in x.columns]
        if missing:
            raise SchemaError(
                f"Input is missing column(s) {missing}: the model was saved with columns {names}. "
                "Without them it cannot predict. Add the missing columns (same names) to the input.",
                column=missing[0], expected=names, actual=list(x.columns),
            )
        extra = [c for c in x.columns if c not in set(names)]
        if extra:
            import warnings

            warnings.warn(f"Input has column(s) {extra} the model was not saved with; they are ignored.",
                          InputWarning, stacklevel=3)
        if list(x.columns) != names:
            x = x[names]
        return x
    if kind in ("ndarray", "tensor") and schema.get("shape"):
        shape = getattr(x, "shape", None)
        expected = schema["shape"]
        if shape is not None and len(shape) == len(expected) and list(shape[1:]) != list(expected[1:]):
            raise SchemaError(
                f"Input has shape {tuple(shape)} but the model was saved with input shape "
                f"{tuple('n' if d is None else d for d in expected)}: the features do not line up. "
                "Pass input with the same number and order of features as at save.",
                expected=expected, actual=list(shape),
            )
    return x
