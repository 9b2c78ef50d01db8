"""Custom code bundled into a golden artifact (a local module at save time)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Shift(BaseEstimator, TransformerMixin):
    """Adds a constant: the smallest custom transformer."""

    def __init__(self, by: float = 1.0) -> None:
        self.by = by

    def fit(self, X, y=None):  # noqa: ANN001 - scikit-learn's signature
        return self

    def transform(self, X):  # noqa: ANN001
        return np.asarray(X) + self.by
