"""The estimator zoo: every scikit-learn estimator that fits on a small data set, with its outputs.

Shared by the round-trip test (``test_sklearn_all.py``) and the compatibility suite
(``tests/compat/test_zoo.py``, which runs it in the old environment too), so both cover the
same estimators. Imports neither pytest nor modelsafe.
"""

from __future__ import annotations

import warnings

import numpy as np

METHODS = ("predict", "predict_proba", "decision_function", "transform")
# Meta-estimators need sub-estimators; they are covered by the Pipeline tests.
NEEDS_ARGS = {"ClassifierChain", "ColumnTransformer", "FeatureUnion", "FixedThresholdClassifier",
              "FrozenEstimator", "GridSearchCV", "HalvingGridSearchCV", "HalvingRandomSearchCV",
              "MultiOutputClassifier", "MultiOutputRegressor", "OneVsOneClassifier", "OneVsRestClassifier",
              "OutputCodeClassifier", "Pipeline", "RandomizedSearchCV", "RegressorChain", "RFE", "RFECV",
              "SelectFromModel", "SelfTrainingClassifier", "SequentialFeatureSelector", "SparseCoder",
              "StackingClassifier", "StackingRegressor", "TunedThresholdClassifierCV", "VotingClassifier",
              "VotingRegressor", "TransformedTargetRegressor"}
# Settings that pickle other internal types than the defaults (each loss is its own Cython extension type).
VARIANTS = {"SGDClassifier": [{"loss": "log_loss"}, {"loss": "modified_huber"}],
            "HistGradientBoostingRegressor": [{"loss": "poisson", "max_iter": 10}],
            "GradientBoostingRegressor": [{"loss": "huber", "n_estimators": 10}],
            "GradientBoostingClassifier": [{"loss": "exponential", "n_estimators": 10}]}


def data(kind: str):
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(60, 4))) + 0.1  # positive: some estimators need it
    if kind == "classifier":
        return X, (X[:, 0] > np.median(X[:, 0])).astype(int)
    if kind == "regressor":
        return X, X @ np.array([1.0, -2.0, 0.5, 0.0])
    if kind == "counts":  # Poisson, Gamma and Tweedie losses need positive targets
        return X, np.abs(X @ np.array([1.0, -2.0, 0.5, 0.0])) + 0.5
    return X, None


def fit_all():
    """``[(name, fitted estimator, X)]`` for every estimator ``all_estimators()`` can fit here."""
    from sklearn.utils import all_estimators

    fitted = []
    for name, cls in all_estimators():
        if name in NEEDS_ARGS:
            continue
        for suffix, params in [("", {})] + [(_suffix(p), p) for p in VARIANTS.get(name, [])]:
            est, X = _fit(name, cls, params)
            if est is not None:
                fitted.append((name + suffix, est, X))
    return fitted


def _suffix(params: dict) -> str:
    return "".join(f"_{value}" for key, value in params.items() if key == "loss")


def _fit(name, cls, params):
    """``(fitted estimator, X)`` on the first kind of data ``cls(**params)`` fits, or ``(None, None)``."""
    kind = ("classifier" if "Classifier" in name or name.endswith("SVC") or name in ("LogisticRegression",)
            else "regressor")
    for kind in (kind, "counts", "transformer"):
        X, y = data(kind)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est = cls(**params)
                est.fit(X, y) if y is not None else est.fit(X)
            return est, X
        except Exception:  # noqa: BLE001 - estimators that need other data are skipped
            continue
    return None, None


def outputs(est, X):
    """``{method: array}`` of every output method the fitted estimator answers on ``X``."""
    out = {}
    for method in METHODS:
        if not hasattr(est, method):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = getattr(est, method)(X)
        except Exception:  # noqa: BLE001 - e.g. transform unavailable for this configuration
            continue
        if hasattr(value, "toarray"):
            value = value.toarray()
        out[method] = np.asarray(value)
    return out
