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
