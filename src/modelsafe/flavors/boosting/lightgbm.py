"""LightGBM flavor: boosters as LightGBM model text, wrapper state as JSON.

Saves ``LGBMClassifier``, ``LGBMRegressor``, ``LGBMRanker`` and raw ``Booster`` objects
(and subclasses the custom-code policy allows). No pickle is involved: the booster is
stored with ``Booster.model_to_string`` (every iteration, plus the pandas categories
it learned), and the scikit-learn wrapper's state (parameters, ``classes_`` including
string labels, feature names, best iteration and score, training history) as JSON.

LightGBM itself matches DataFrame columns by *position*, so a reordered DataFrame
silently gives wrong predictions. The input guard realigns columns by name (after
LightGBM's own renaming of spaces to ``_``) and raises SchemaError for a missing
or renamed feature.

LightGBM offers no public way to rebuild a fitted scikit-learn wrapper from model text,
so loading sets the wrapper's fitted attributes as its ``fit`` does; the LightGBM
version is recorded, and the verification sample checks the result.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe.errors import FormatError
from modelsafe.flavors._base import ComponentSource, ComponentStore, LoadOptions
from modelsafe.flavors.boosting.base import BoostingFlavor
from modelsafe.flavors.boosting.feature_guard import align_features
from modelsafe.flavors.boosting.lightgbm_text import check_model_text
from modelsafe.flavors.boosting.threads import lightgbm_one_thread
from modelsafe.flavors.boosting.wrapper_state import (
    construct,
    from_json,
    restore_attributes,
    to_json,
)

if TYPE_CHECKING:
    import lightgbm

MODEL = "model.txt"
#: Wrapper attributes rebuilt from the booster rather than stored as JSON.
_REBUILT = ("_Booster", "_le")


def _booster(obj: Any) -> "lightgbm.Booster":
    import lightgbm

    return obj if isinstance(obj, lightgbm.Booster) else obj.booster_


def _feature_names(obj: Any) -> list[str] | None:
    """The names the model was trained with, or None when it was trained on unnamed data."""
    import lightgbm

    booster = _booster(obj)
    names = list(booster.feature_name())
    if isinstance(obj, lightgbm.Booster):
        return None if names == [f"Column_{i}" for i in range(len(names))] else names
    return names if hasattr(obj, "feature_names_in_") else None


def _lightgbm_name(column: str) -> str:
    """The feature name LightGBM makes of a column name (spaces become ``_``)."""
    return column.replace(" ", "_")


def _save_booster(booster: "lightgbm.Booster", store: ComponentStore) -> dict[str, Any]:
    text = booster.model_to_string(num_iteration=-1)  # every iteration; best_iteration is applied at predict
    store.write(MODEL, text.encode("utf-8"))
    return {
        "member": MODEL, "format": "text",
        "n_features_in_": int(booster.num_feature()),
        "feature_name": list(booster.feature_name()),
        "pandas_categorical": to_json(booster.pandas_categorical, "pandas_categorical"),
        "best_iteration": int(booster.best_iteration),
        "best_score": to_json(booster.best_score, "best_score"),
    }


class LightGBMFlavor(BoostingFlavor):
    name = "lightgbm"
    version = 1
    library = "LightGBM"
    model_member = MODEL
    wrappers = ("LGBMClassifier", "LGBMRegressor", "LGBMRanker")
    rebuilt_attributes = _REBUILT

    def call_options(self) -> dict[str, Any]:
        """``num_threads=1`` while a sample replays: LightGBM takes it per call, and its OpenMP threads cost
        more than 32 rows (the model's own ``n_jobs`` / ``num_threads`` parameter is not changed)."""
        return {"num_threads": 1} if self.one_thread() else {}

    def embedded_replay_context(self, obj: Any) -> contextlib.AbstractContextManager[None]:
        """In a Pipeline, which calls the model with its own ``n_jobs``: LightGBM capped at one thread."""
        return lightgbm_one_thread()

    def classes(self) -> tuple[type, type, type, type]:
        import lightgbm

        return lightgbm.Booster, lightgbm.LGBMModel, lightgbm.LGBMClassifier, lightgbm.LGBMRanker

    def save_model(self, obj: Any, store: ComponentStore) -> dict[str, Any]:
        return {**_save_booster(_booster(obj), store), "feature_names_in_": _feature_names(obj)}

    def audit(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
        super().audit(source, data, options)
        if data.get("fitted", True):
            source.cache["lightgbm_text"] = _checked_text(source)

    def read_model(self, source: ComponentSource, data: Mapping[str, Any], cls: type) -> Any:
        import lightgbm

        text = source.cache.pop("lightgbm_text", None) or _checked_text(source)
        try:
            booster = cls(model_str=text) if data["kind"] == "booster" else lightgbm.Booster(model_str=text)
        except lightgbm.basic.LightGBMError as exc:
            raise self.unreadable(data, str(exc)) from exc
        booster.best_iteration = int(data.get("best_iteration", -1))
        booster.best_score = from_json(data.get("best_score", {}))
        return booster if data["kind"] == "booster" else _rebuild_wrapper(cls, booster, data)

    def check_loaded(self, obj: Any, data: Mapping[str, Any]) -> None:
        booster = _booster(obj)
        found: dict[str, Any] = {"feature_name": list(booster.feature_name()),
                                 "n_features_in_": int(booster.num_feature()),
                                 "feature_names_in_": _feature_names(obj)}
        if "classes_" in data:
            found["classes_"] = to_json(obj.classes_, "classes_")
        self.compare_recorded(found, data)

    def guard(self, obj: Any, x: Any) -> Any:
        return align_features(x, _feature_names(obj), int(_booster(obj).num_feature()), model=type(obj).__name__,
                              normalize=_lightgbm_name)


def _checked_text(source: ComponentSource) -> str:
    """The model text, validated before LightGBM sees it (see :mod:`.lightgbm_text`)."""
    try:
        text = bytes(source.view(MODEL)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"Member {source.prefix}/{MODEL} is not UTF-8 LightGBM model text ({exc}). Re-export "
                          "the model from its source.", member=f"{source.prefix}/{MODEL}") from exc
    return check_model_text(text)


def _rebuild_wrapper(cls: type, booster: "lightgbm.Booster", data: Mapping[str, Any]) -> Any:
    """A fitted wrapper around ``booster``, with the attributes its ``fit`` set."""
    obj = construct(cls, data)
    restore_attributes(obj, data.get("attributes", {}))
    obj._Booster = booster
    if "classes_" in data:
        from sklearn.preprocessing import LabelEncoder

        encoder = LabelEncoder()
        encoder.classes_ = from_json(data["classes_"])
        obj._le = encoder
    return obj


