"""The shared shape of the gradient-boosting flavors (XGBoost, LightGBM).

Each stores the library's own model file (never a pickle) plus the scikit-learn wrapper's
state as JSON, loads it back into the same class (or a trusted subclass), checks the
rebuilt model against what was recorded, and predicts through an input guard. A
subclass supplies the library-specific parts as small hooks.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, ClassVar, Iterator, Mapping

from modelsafe.errors import FormatError, UnsupportedModelError
from modelsafe.flavors._base import (
    ComponentSource,
    ComponentStore,
    Flavor,
    LoadOptions,
    SavedComponent,
)
from modelsafe.flavors.boosting.wrapper_state import (
    capture_attributes,
    check_class,
    check_component,
    construct,
    encode_params,
    find_base,
    resolve_class,
    restore_attributes,
    to_json,
)

KINDS = ("booster", "classifier", "regressor", "ranker")
#: Set while the verification sample replays (per thread and task: other callers are unaffected).
_ONE_THREAD: contextvars.ContextVar[bool] = contextvars.ContextVar("modelsafe_boosting_one_thread", default=False)


class BoostingFlavor(Flavor):
    """Template for a library with a ``Booster`` and scikit-learn wrappers around it."""

    #: Display name of the library ("XGBoost") and its import name ("xgboost").
    library: ClassVar[str] = ""
    #: The member holding the native model file.
    model_member: ClassVar[str] = ""
    #: The wrapper classes saved, by public name in the library's top-level module.
    wrappers: ClassVar[tuple[str, ...]] = ()
    #: Wrapper attributes rebuilt from the model file, never stored as JSON.
    rebuilt_attributes: ClassVar[tuple[str, ...]] = ()

    # -- hooks -------------------------------------------------------------------------------
    def classes(self) -> tuple[type, type, type, type]:
        """``(Booster, wrapper base, classifier, ranker)`` classes of the library."""
        raise NotImplementedError  # abstract

    def save_model(self, obj: Any, store: ComponentStore) -> dict[str, Any]:
        """Write the fitted model's native file; return what the manifest records about it."""
        raise NotImplementedError  # abstract

    def wrapper_state(self, obj: Any, fitted: bool) -> dict[str, Any]:
        """The scikit-learn wrapper's parameters, fitted attributes and classes as JSON."""
        params = obj.get_params(deep=False)
        encoded, dropped = encode_params(params)
        state: dict[str, Any] = {
            "params": encoded,
            "dropped_params": dropped,
            "attributes": capture_attributes(obj, {*self.rebuilt_attributes, *params}, type(obj).__name__),
        }
        if fitted and self.kind(obj) == "classifier":
            state["classes_"] = to_json(obj.classes_, "classes_")
        return state

    def read_model(self, source: ComponentSource, data: Mapping[str, Any], cls: type) -> Any:
        """Rebuild a fitted model of class ``cls`` from its native file (audited already)."""
        raise NotImplementedError  # abstract

    def check_loaded(self, obj: Any, data: Mapping[str, Any]) -> None:
        """Raise FormatError unless the rebuilt model matches the recorded state."""

    def guard(self, obj: Any, x: Any) -> Any:
        """Check and realign input ``x`` for ``obj`` (see :mod:`.feature_guard`)."""
        return x

    def run(self, obj: Any, x: Any) -> Any:
        """The model's ``predict`` on guarded input."""
        return obj.predict(x, **self.call_options())

    def call_options(self) -> dict[str, Any]:
        """Keywords for this call of ``predict``/``predict_proba`` (see :meth:`replay_context`). Default: none."""
        return {}

    @contextlib.contextmanager
    def replay_context(self, obj: Any) -> Iterator[None]:
        """Calls inside it run on one thread where the library takes that per call (:meth:`call_options`)."""
        token = _ONE_THREAD.set(True)
        try:
            yield
        finally:
            _ONE_THREAD.reset(token)

    @staticmethod
    def one_thread() -> bool:
        """Whether the current call runs inside :meth:`replay_context`."""
        return _ONE_THREAD.get()

    # -- the shared parts --------------------------------------------------------------------
    def known(self) -> dict[str, type]:
        import importlib

        module = importlib.import_module(self.name)
        return {f"{self.name}:{n}": getattr(module, n) for n in ("Booster", *self.wrappers)}

    def known_names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}:{n}" for n in ("Booster", *self.wrappers))

    def kind(self, obj: Any) -> str:
        booster, _, classifier, ranker = self.classes()
        if isinstance(obj, booster):
            return "booster"
        if isinstance(obj, ranker):
            return "ranker"
        return "classifier" if isinstance(obj, classifier) else "regressor"

    def is_fitted(self, obj: Any) -> bool:
        """Boosters always are; an unfitted wrapper (a StackingClassifier's template) holds parameters only."""
        return isinstance(obj, self.classes()[0]) or bool(obj.__sklearn_is_fitted__())

    def version_of_library(self) -> str:
        import importlib

        return str(importlib.import_module(self.name).__version__)

    def save(self, obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
        base, ref = find_base(obj, self.known(), self.name)
        data: dict[str, Any] = {"class": ref, "base": base, "kind": self.kind(obj),
                                f"{self.name}_version": self.version_of_library(), "fitted": self.is_fitted(obj)}
        if data["fitted"]:
            data.update(self.save_model(obj, store))
        modules = {self.name, "numpy", "scipy"}
        if data["kind"] != "booster":
            data.update(self.wrapper_state(obj, data["fitted"]))
            modules.add("sklearn")
        saved = SavedComponent(data=data, modules=modules, type_name=f"{type(obj).__module__}.{type(obj).__qualname__}")
        if ref != base:  # a user's subclass: its code is needed at load
            saved.refs.add((type(obj).__module__, type(obj).__qualname__))
            saved.modules.add(type(obj).__module__)
        return saved

    def can_embed(self, obj: Any) -> bool:
        try:
            find_base(obj, self.known(), self.name)
        except UnsupportedModelError:
            return False
        return True

    def audit(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
        check_component(data, KINDS, self.model_member, self.name)
        check_class(data["class"], self.known_names(), options)

    def load(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
        booster, wrapper, _, _ = self.classes()
        cls = resolve_class(data["class"], self.known(), booster if data["kind"] == "booster" else wrapper,
                            options, self.name)
        if not data.get("fitted", True):
            obj = construct(cls, data)
            restore_attributes(obj, data.get("attributes", {}))
            return obj
        obj = self.read_model(source, data, cls)
        self.check_loaded(obj, data)
        return obj

    def compare_recorded(self, found: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        """Raise FormatError where the rebuilt model's facts differ from the recorded ones."""
        for key, actual in found.items():
            if key in data and data[key] != actual:
                raise FormatError(
                    f"The loaded {self.library} model has {key}={actual!r} but the manifest records {data[key]!r}: "
                    "the model and its recorded state disagree, so its predictions could be attributed to the "
                    "wrong features or classes. Re-export the model from its source.",
                    field=key, expected=data[key], actual=actual,
                )

    def unreadable(self, data: Mapping[str, Any], detail: str) -> FormatError:
        """The error when this version of the library cannot read the stored model."""
        saved, current = data.get(f"{self.name}_version"), self.version_of_library()
        return FormatError(
            f"{self.library} {current} could not read the model written by {self.library} {saved or '?'}: {detail}. "
            f"Without it nothing can be predicted. Install {self.name}=={saved or '<the recorded version>'} "
            "(see `modelsafe env`), or re-save the model with this version.",
            saved=saved, current=current,
        )

    def to_onnx(self, obj: Any, schema: Mapping[str, Any] | None, sample: Any) -> Any:
        """The model as an ONNX graph, by onnxmltools (see :mod:`modelsafe.flavors.boosting.onnx`)."""
        from modelsafe.flavors.boosting.onnx import to_onnx

        return to_onnx(self.name, self.kind(obj), obj, schema)

    def predict(self, obj: Any, x: Any) -> Any:
        return self.run(obj, self.guard(obj, x))

    def call(self, obj: Any, method: str, x: Any) -> Any:
        if method == "predict":
            return self.predict(obj, x)
        return getattr(obj, method)(self.guard(obj, x))

    def outputs(self, obj: Any, x: Any) -> dict[str, Any]:
        x = self.guard(obj, x)
        outputs = {"predict": self.run(obj, x)}
        if self.kind(obj) == "classifier":
            outputs["predict_proba"] = obj.predict_proba(x, **self.call_options())
        return outputs
