"""XGBoost flavor: boosters in XGBoost's native UBJSON format, wrapper state as JSON.

Saves ``XGBClassifier``, ``XGBRegressor``, ``XGBRanker``, ``XGBRF*`` and raw ``Booster``
objects (and subclasses of them the caller trusts). No pickle is involved: the booster
goes through ``Booster.save_raw("ubj")`` and the scikit-learn wrapper's state
(parameters, ``classes_``, feature names and types, categories, best iteration, any
other fitted attribute) is stored as JSON in the manifest.

Prediction goes through an input guard: DataFrame columns are realigned by name, a
missing or renamed feature raises :class:`~modelsafe.errors.SchemaError`, and a booster
trained without feature names is never given names by the data it sees.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe.errors import FormatError
from modelsafe.flavors._base import ComponentSource, ComponentStore, LoadOptions
from modelsafe.flavors.boosting import xgboost_categories as categories
from modelsafe.flavors.boosting.base import BoostingFlavor
from modelsafe.flavors.boosting.feature_guard import align_features, is_dataframe
from modelsafe.flavors.boosting.threads import openmp_one_thread
from modelsafe.flavors.boosting.wrapper_state import (
    capture_attributes,
    construct,
    from_json,
    restore_attributes,
    to_json,
)
from modelsafe.flavors.boosting.xgboost_trees import check_booster

if TYPE_CHECKING:
    import xgboost

MODEL = "model.ubj"
#: Wrapper attributes ``XGBModel.load_model`` overwrites from the booster's config.
_FROM_CONFIG = ("objective", "booster", "base_score", "feature_types", "enable_categorical")


def _booster(obj: Any) -> "xgboost.Booster":
    import xgboost

    return obj if isinstance(obj, xgboost.Booster) else obj.get_booster()


def _save_booster(booster: "xgboost.Booster", store: ComponentStore) -> dict[str, Any]:
    """Write the booster as UBJSON; return what the manifest records about it."""
    store.write(MODEL, booster.save_raw(raw_format="ubj"))
    return {
        "member": MODEL, "format": "ubj",
        "n_features_in_": int(booster.num_features()),
        "feature_names_in_": booster.feature_names,
        "feature_types": booster.feature_types,
        "categories": categories.describe(booster),
        **_best(booster),
    }


def _best(booster: "xgboost.Booster") -> dict[str, Any]:
    attrs = booster.attributes()
    best: dict[str, Any] = {}
    if "best_iteration" in attrs:
        best["best_iteration"] = int(attrs["best_iteration"])
    if "best_score" in attrs:
        best["best_score"] = float(attrs["best_score"])
    return best


class XGBoostFlavor(BoostingFlavor):
    name = "xgboost"
    version = 1
    library = "XGBoost"
    model_member = MODEL
    wrappers = ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor")
    rebuilt_attributes = ("_Booster", "kwargs")

    def classes(self) -> tuple[type, type, type, type]:
        import xgboost

        return xgboost.Booster, xgboost.XGBModel, xgboost.XGBClassifier, xgboost.XGBRanker

    def replay_context(self, obj: Any) -> contextlib.AbstractContextManager[Any]:
        """One OpenMP thread on this thread: XGBoost has no per-call thread option, and sizes its parallel
        regions by OpenMP's count (the model's ``n_jobs`` is not changed); in a Pipeline too."""
        return openmp_one_thread()

    def save_model(self, obj: Any, store: ComponentStore) -> dict[str, Any]:
        data = _save_booster(_booster(obj), store)
        if self.kind(obj) == "booster":
            data["attributes"] = capture_attributes(obj, {"handle"}, "booster")
        return data

    def wrapper_state(self, obj: Any, fitted: bool) -> dict[str, Any]:
        return {**super().wrapper_state(obj, fitted),
                "enable_categorical": bool(getattr(obj, "enable_categorical", False))}

    def audit(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
        super().audit(source, data, options)
        if not data.get("fitted", True):
            return
        head = bytes(source.view(data["member"])[:1])
        if head != b"{":
            raise FormatError(
                f"Member {source.prefix}/{data['member']} is not an XGBoost UBJSON model (it starts with "
                f"{head!r}, not '{{'): it cannot be loaded. Re-export the model from its source.",
                member=f"{source.prefix}/{data['member']}",
            )

    def read_model(self, source: ComponentSource, data: Mapping[str, Any], cls: type) -> Any:
        import xgboost

        raw = bytearray(source.view(data["member"]))
        try:
            obj = _load_booster(cls, raw, data) if data["kind"] == "booster" else _load_wrapper(cls, raw, data)
        except xgboost.core.XGBoostError as exc:
            raise self.unreadable(data, str(exc).strip().splitlines()[0]) from exc
        check_booster(_booster(obj))  # before anything predicts with it
        return obj

    def check_loaded(self, obj: Any, data: Mapping[str, Any]) -> None:
        self.compare_recorded(_recorded_facts(obj, data), data)

    def guard(self, obj: Any, x: Any) -> Any:
        booster = _booster(obj)
        x = align_features(x, booster.feature_names, int(booster.num_features()), model=type(obj).__name__)
        if is_dataframe(x):
            categories.check_frame(booster, x, model=type(obj).__name__)
        return x

    def run(self, obj: Any, x: Any) -> Any:
        return _predict(obj, x)

    def diagnose_file(self, path: str, report: Any = None) -> Any:
        """For ``ms.doctor``: which XGBoost wrote a pickle/joblib file, and how to re-export it.

        ``report`` is what the caller already read from the file: its scan report, a pickle
        summary, or the names of its globals (None: the file is scanned here). Returns a list
        with one :class:`modelsafe._reports.Problem` (an error when another XGBoost wrote the
        file, a warning when this one did), or None when the file holds no XGBoost object.
        The file is never unpickled (see :mod:`.xgboost_legacy`).
        """
        from modelsafe._reports import Problem
        from modelsafe.flavors.boosting.xgboost_legacy import diagnose_xgboost_pickle

        found = diagnose_xgboost_pickle(path, _global_names(report))
        if found is None:
            return None
        return [Problem(what=found.problem(), why=found.why, fix=found.fix(),
                        severity="warning" if found.same_version else "error", subject="xgboost")]

    def device_info(self, obj: Any) -> dict[str, Any]:
        import xgboost

        info = xgboost.build_info()
        return {"xgboost": {"built_with_cuda": bool(info.get("USE_CUDA")),
                            "cuda_version": ".".join(map(str, info.get("CUDA_VERSION") or [])) or None}}


def _load_booster(cls: type, raw: bytearray, data: Mapping[str, Any]) -> Any:
    booster = cls()
    booster.load_model(raw)
    restore_attributes(booster, data.get("attributes", {}))
    return booster


def _load_wrapper(cls: type, raw: bytearray, data: Mapping[str, Any]) -> Any:
    params = from_json(data["params"])
    obj = construct(cls, data)
    obj.load_model(raw)
    for key in _FROM_CONFIG:  # load_model infers these from the booster; keep the user's values
        if key in params:
            setattr(obj, key, params[key])
    restore_attributes(obj, data.get("attributes", {}))
    return obj


def _global_names(summary: Any) -> list[str] | None:
    """Global names from a ScanReport, a PickleSummary, or an iterable of names."""
    if summary is None:
        return None
    found = getattr(summary, "globals", summary)
    found = found() if callable(found) else found
    return [getattr(g, "qualname", getattr(g, "name", g)) for g in found]


def _recorded_facts(obj: Any, data: Mapping[str, Any]) -> dict[str, Any]:
    """What the rebuilt model says about its features and classes (compared with the manifest)."""
    booster = _booster(obj)
    found = {"feature_names_in_": booster.feature_names, "n_features_in_": int(booster.num_features()),
             "feature_types": booster.feature_types}
    if "classes_" in data:
        found["classes_"] = to_json(obj.classes_, "classes_")
    return found


def _predict(obj: Any, x: Any) -> Any:
    import xgboost

    if not isinstance(obj, xgboost.Booster):
        return obj.predict(x)
    nameless = obj.feature_names is None
    try:
        if isinstance(x, xgboost.DMatrix):
            return obj.predict(x)
        try:
            return obj.inplace_predict(x)
        except TypeError:  # input kinds inplace prediction does not take (e.g. lists of rows)
            return obj.predict(xgboost.DMatrix(x, enable_categorical=True))
    finally:
        if nameless and obj.feature_names is not None:  # never adopt names from the data
            obj.feature_names = None
