"""The input guard of models that know their feature names (XGBoost, LightGBM).

A DataFrame is realigned to the model's feature order by column name. A missing or
renamed column is a :class:`~modelsafe.errors.SchemaError` naming it; nothing is ever
matched by position when the model has names. A model trained without names only
checks the number of columns, and is never given names it did not have.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

from modelsafe.errors import SchemaError

__all__ = ["align_features", "is_dataframe"]


def is_dataframe(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "pandas" and type(x).__name__ == "DataFrame"


def align_features(x: Any, names: Sequence[str] | None, n_features: int | None, *, model: str,
                   normalize: Callable[[str], str] = str) -> Any:
    """Return ``x`` with its columns in the model's order, or raise SchemaError.

    Parameters
    ----------
    x
        The input: a pandas DataFrame, or anything with a ``shape``.
    names
        The model's feature names, or None when it was trained without names.
    n_features
        The number of features the model expects.
    model
        How to call the model in messages (e.g. ``"XGBClassifier"``).
    normalize
        How the framework turned column names into feature names (LightGBM replaces
        spaces with underscores); columns are matched after this.
    """
    if is_dataframe(x):
        return _align_frame(x, list(names) if names is not None else None, n_features, model, normalize)
    shape = getattr(x, "shape", None)
    if n_features is not None and shape is not None and len(shape) == 2 and shape[1] != n_features:
        raise SchemaError(
            f"Input has {shape[1]} feature column(s) but the {model} was trained on {n_features}: the features "
            "do not line up, so its predictions would be meaningless. Pass the same features, in the same "
            "order, as at training" + (f" ({', '.join(names)})." if names else "."),
            expected=n_features, actual=int(shape[1]),
        )
    return x


def _align_frame(x: Any, names: list[str] | None, n_features: int | None, model: str,
                 normalize: Callable[[str], str]) -> Any:
    columns = list(x.columns)
    if names is None:
        if n_features is not None and len(columns) != n_features:
            raise SchemaError(
                f"Input has {len(columns)} column(s) but the {model} was trained on {n_features} unnamed "
                "features (a numpy array): the features do not line up. Pass the same features in the "
                "same order as at training.",
                expected=n_features, actual=len(columns),
            )
        return x
    keys = [normalize(str(c)) for c in columns]
    by_name = dict(zip(keys, columns))
    if len(by_name) != len(columns):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise SchemaError(
            f"Input has duplicate column name(s) {dupes}: the {model} finds features by name, so it cannot "
            "tell which one to use. Give every column a unique name.",
            column=dupes[0], expected=names, actual=[str(c) for c in columns],
        )
    missing = [n for n in names if n not in by_name]
    extra = [str(c) for c, k in zip(columns, keys) if k not in set(names)]
    if missing:
        hint = (f" Columns {extra} are not features of the model: if they were renamed, give them back their "
                "training names." if extra else "")
        raise SchemaError(
            f"Input is missing feature column(s) {missing}: the {model} was trained on columns {names} and "
            f"received {[str(c) for c in columns]}. It finds features by name, so it cannot predict without "
            f"them.{hint} Add the missing columns under their training names.",
            column=missing[0], expected=names, actual=[str(c) for c in columns],
        )
    if extra:
        from modelsafe.checks.schema import InputWarning

        warnings.warn(f"Input has column(s) {extra} the {model} was not trained on; they are ignored.",
                      InputWarning, stacklevel=4)
    if keys == names:
        return x
    return x[[by_name[n] for n in names]]
