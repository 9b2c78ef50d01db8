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

from typing import TYPE_CHECKING, Any, Mapping

from modelsafe.errors import FormatError, UnsupportedModelError
from modelsafe.flavors._base import ComponentSource, ComponentStore, Flavor, LoadOptions, SavedComponent
from modelsafe.flavors._feature_guard import align_features
from modelsafe.flavors._lightgbm_text import check_model_text
from modelsafe.flavors._wrapper_state import (
    capture_attributes, check_class, check_component, construct, encode_params, find_base, from_json, resolve_class,
    restore_attributes, to_json,
)

if TYPE_CHECKING:
    import lightgbm

MODEL = "model.txt"
WRAPPERS = ("LGBMClassifier", "LGBMRegressor", "LGBMRanker")
KNOWN = tuple(f"lightgbm:{name}" for name in ("Booster", *WRAPPERS))
_KINDS = ("booster", "classifier", "regressor", "ranker")
#: Wrapper attributes rebuilt from the booster rather than stored as JSON.
_REBUILT = ("_Booster", "_le")


def _known() -> dict[str, type]:
    import lightgbm

    return {f"lightgbm:{name}": getattr(lightgbm, name) for name in ("Booster", *WRAPPERS)}


def _kind(obj: Any) -> str:
    import lightgbm

    if isinstance(obj, lightgbm.Booster):
        return "booster"
    if isinstance(obj, lightgbm.LGBMRanker):
        return "ranker"
    return "classifier" if isinstance(obj, lightgbm.LGBMClassifier) else "regressor"


def _booster(obj: Any) -> "lightgbm.Booster":
    import lightgbm

    return obj if isinstance(obj, lightgbm.Booster) else obj.booster_


def _is_fitted(obj: Any) -> bool:
    import lightgbm

    return isinstance(obj, lightgbm.Booster) or bool(obj.__sklearn_is_fitted__())


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


class LightGBMFlavor(Flavor):
    name = "lightgbm"
    version = 1

    # -- save ----------------------------------------------------------------------------
    def save(self, obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
        import lightgbm

        base, ref = find_base(obj, _known(), "lightgbm")
        data: dict[str, Any] = {"class": ref, "base": base, "kind": _kind(obj),
                                "lightgbm_version": lightgbm.__version__, "fitted": _is_fitted(obj)}
        if data["fitted"]:
            data.update(_save_booster(_booster(obj), store))
            data["feature_names_in_"] = _feature_names(obj)
        modules = {"lightgbm", "numpy", "scipy"}
        if data["kind"] != "booster":
            data.update(_wrapper_state(obj, data["fitted"]))
            modules.add("sklearn")
        saved = SavedComponent(data=data, modules=modules, type_name=f"{type(obj).__module__}.{type(obj).__qualname__}")
        if ref != base:  # a user's subclass: its code is needed at load
            saved.refs.add((type(obj).__module__, type(obj).__qualname__))
            saved.modules.add(type(obj).__module__)
        return saved

    def can_embed(self, obj: Any) -> bool:
        try:
            find_base(obj, _known(), "lightgbm")
        except UnsupportedModelError:
            return False
        return True

    # -- load ----------------------------------------------------------------------------
    def audit(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
        check_component(data, _KINDS, MODEL, "lightgbm")
        check_class(data["class"], KNOWN, options)
        if not data.get("fitted", True):
            return
        source.cache["lightgbm_text"] = _checked_text(source)

    def load(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
        import lightgbm

        base = lightgbm.Booster if data["kind"] == "booster" else lightgbm.LGBMModel
        cls = resolve_class(data["class"], _known(), base, options, "lightgbm")
        if not data.get("fitted", True):
            obj = construct(cls, data)
            restore_attributes(obj, data.get("attributes", {}))
            return obj
        text = source.cache.pop("lightgbm_text", None) or _checked_text(source)
        try:
            booster = cls(model_str=text) if data["kind"] == "booster" else lightgbm.Booster(model_str=text)
        except lightgbm.basic.LightGBMError as exc:
            raise FormatError(
                f"LightGBM {lightgbm.__version__} could not read the model written by LightGBM "
                f"{data.get('lightgbm_version', '?')}: {exc}. Without it nothing can be predicted. Install "
                f"lightgbm=={data.get('lightgbm_version', '<the recorded version>')} (see `modelsafe env`), or "
                "re-save the model with this version.",
                saved=data.get("lightgbm_version"), current=lightgbm.__version__,
            ) from exc
        booster.best_iteration = int(data.get("best_iteration", -1))
        booster.best_score = from_json(data.get("best_score", {}))
        obj = booster if data["kind"] == "booster" else _rebuild_wrapper(cls, booster, data)
        _check_loaded(obj, data)
        return obj

    # -- running -------------------------------------------------------------------------
    def predict(self, obj: Any, x: Any) -> Any:
        return obj.predict(self._guard(obj, x))

    def outputs(self, obj: Any, x: Any) -> dict[str, Any]:
        x = self._guard(obj, x)
        outputs = {"predict": obj.predict(x)}
        if _kind(obj) == "classifier":
            outputs["predict_proba"] = obj.predict_proba(x)
        return outputs

    @staticmethod
    def _guard(obj: Any, x: Any) -> Any:
        return align_features(x, _feature_names(obj), int(_booster(obj).num_feature()), model=type(obj).__name__,
                              normalize=_lightgbm_name)


def _checked_text(source: ComponentSource) -> str:
    """The model text, validated before LightGBM sees it (see :mod:`._lightgbm_text`)."""
    try:
        text = bytes(source.view(MODEL)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"Member {source.prefix}/{MODEL} is not UTF-8 LightGBM model text ({exc}). Re-export "
                          "the model from its source.", member=f"{source.prefix}/{MODEL}") from exc
    return check_model_text(text)


def _wrapper_state(obj: Any, fitted: bool) -> dict[str, Any]:
    params = obj.get_params(deep=False)
    encoded, dropped = encode_params(params)
    state: dict[str, Any] = {
        "params": encoded,
        "dropped_params": dropped,
        "attributes": capture_attributes(obj, {*_REBUILT, *params}, type(obj).__name__),
    }
    if fitted and _kind(obj) == "classifier":
        state["classes_"] = to_json(obj.classes_, "classes_")
    return state


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


def _check_loaded(obj: Any, data: Mapping[str, Any]) -> None:
    """The rebuilt model must expose exactly the recorded features and classes."""
    booster = _booster(obj)
    found: dict[str, Any] = {"feature_name": list(booster.feature_name()),
                             "n_features_in_": int(booster.num_feature()),
                             "feature_names_in_": _feature_names(obj)}
    if "classes_" in data:
        found["classes_"] = to_json(obj.classes_, "classes_")
    for key, actual in found.items():
        if key in data and data[key] != actual:
            raise FormatError(
                f"The loaded LightGBM model has {key}={actual!r} but the manifest records {data[key]!r}: the "
                "model and its recorded state disagree, so its predictions could be attributed to the wrong "
                "features or classes. Re-export the model from its source.",
                field=key, expected=data[key], actual=actual,
            )
