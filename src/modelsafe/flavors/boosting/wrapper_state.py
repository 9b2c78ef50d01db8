"""The scikit-learn wrapper state of gradient-boosting models, stored as plain JSON.

XGBoost and LightGBM save their boosters in their own formats, but the scikit-learn
wrapper around a booster holds more: hyper-parameters, ``classes_`` (string labels
too), training history, attributes a user's subclass adds. This module turns that
state into JSON and back without pickle, and resolves the wrapper's class at load
through modelsafe's custom-code policy (nothing is imported that the caller did not allow).

Values are encoded as JSON where JSON can hold them; the rest is tagged:
``{"$float": "nan"}``, ``{"$array": [...], "dtype": "<i8", "shape": [...]}``,
``{"$tuple": [...]}`` and ``{"$dict": [[key, value], ...]}`` (dicts whose keys are not
all plain strings). Anything else (functions, open objects) cannot be stored.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from modelsafe.errors import FormatError, UnsupportedModelError

if TYPE_CHECKING:
    from modelsafe.flavors._base import LoadOptions

__all__ = ["Unstorable", "to_json", "from_json", "encode_params", "capture_attributes", "restore_attributes",
           "class_ref", "find_base", "check_component", "check_class", "resolve_class", "construct"]

_SCALARS = (str, bool, int, type(None))
_MAX_DEPTH = 64


class Unstorable(Exception):
    """A value that JSON cannot hold: ``path``, ``type_name`` and ``reason``."""

    def __init__(self, path: str, value: Any, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.type_name = _type_name(value)
        self.reason = reason

    @property
    def problem(self) -> tuple[str, str, str]:
        return (self.path, self.type_name, self.reason)


def _type_name(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _float(value: float) -> Any:
    return value if math.isfinite(value) else {"$float": repr(value)}


def to_json(value: Any, path: str = "value", _depth: int = 0) -> Any:
    """``value`` as JSON-able data; raises :class:`Unstorable` naming the offending path."""
    if _depth > _MAX_DEPTH:
        raise Unstorable(path, value, "it is nested too deeply to store as JSON")
    if isinstance(value, _SCALARS):
        return str(value) if isinstance(value, str) else value
    if isinstance(value, float):  # numpy's float64 too: stored as a plain float
        return _float(float(value))
    if isinstance(value, (list, tuple)):
        items = [to_json(v, f"{path}[{i}]", _depth + 1) for i, v in enumerate(value)]
        return items if isinstance(value, list) else {"$tuple": items}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: to_json(v, f"{path}[{k!r}]", _depth + 1) for k, v in value.items()}
        return {"$dict": [[to_json(k, f"{path}<key>", _depth + 1), to_json(v, f"{path}[{k!r}]", _depth + 1)]
                          for k, v in value.items()]}
    if type(value).__module__ == "numpy":
        return _numpy_to_json(value, path)
    raise Unstorable(path, value, "only numbers, strings, lists, dicts and numpy arrays can be stored as JSON")


def _numpy_to_json(value: Any, path: str) -> Any:
    import numpy as np

    if isinstance(value, np.generic) and not isinstance(value, np.ndarray):
        if value.dtype.kind in "biu":
            return value.item()
        if value.dtype.kind == "f":
            return _float(float(value))
        if value.dtype.kind in "US":
            return str(value)
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        if kind in "biufUS":
            items = value.tolist() if kind != "f" else [_float(v) for v in value.ravel().tolist()]
            if kind == "S":
                raise Unstorable(path, value, "byte-string arrays cannot be stored as JSON; convert to str")
            return {"$array": items, "dtype": value.dtype.str, "shape": list(value.shape)}
        if kind == "O" and value.ndim == 1 and all(isinstance(v, (str, int, float, bool)) for v in value):
            items = [to_json(v, f"{path}[{i}]") for i, v in enumerate(value.tolist())]
            return {"$array": items, "dtype": "object", "shape": list(value.shape)}
    raise Unstorable(path, value, "this numpy value holds Python objects that cannot be stored as JSON")


def from_json(value: Any) -> Any:
    """The inverse of :func:`to_json`."""
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$float" in value:
        return float(value["$float"])
    if "$tuple" in value:
        return tuple(from_json(v) for v in value["$tuple"])
    if "$dict" in value:
        return {_hashable(from_json(k)): from_json(v) for k, v in value["$dict"]}
    if "$array" in value:
        return _array_from_json(value)
    return {k: from_json(v) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _array_from_json(value: Mapping[str, Any]) -> Any:
    import numpy as np

    dtype = value.get("dtype", "object")
    items = [from_json(v) for v in _flat(value["$array"])]
    try:
        array = np.array(items, dtype=object if dtype == "object" else np.dtype(dtype))
        return array.reshape(value.get("shape", [len(items)]))
    except (TypeError, ValueError) as exc:
        raise FormatError(
            f"A stored array of dtype {dtype!r} could not be rebuilt ({exc}): the wrapper state is malformed. "
            "Re-export the model from its source.",
        ) from exc


def _flat(items: Any) -> Iterable[Any]:
    for item in items:
        if isinstance(item, list):
            yield from _flat(item)
        else:
            yield item


def encode_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Hyper-parameters as JSON, and those that cannot be (name -> type) which are dropped.

    Parameters that hold code or live objects (a custom objective function, callbacks,
    a ``RandomState``) only matter for training; they are recorded by type and left at
    their defaults when loading. Predictions are still checked by the verification sample.
    """
    encoded: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    for name, value in params.items():
        try:
            encoded[name] = to_json(value, name)
        except Unstorable:
            dropped[name] = _type_name(value)
    return encoded, dropped


def capture_attributes(obj: Any, skip: Iterable[str], where: str) -> dict[str, Any]:
    """The instance attributes of ``obj`` other than ``skip``, as JSON.

    Raises
    ------
    UnsavableObjectError
        Listing every attribute that cannot be stored, with its type.
    """
    skipped = set(skip)
    captured: dict[str, Any] = {}
    problems: list[tuple[str, str, str]] = []
    for name, value in vars(obj).items():
        if name in skipped:
            continue
        try:
            captured[name] = to_json(value, f"{where}.{name}")
        except Unstorable as exc:
            problems.append(exc.problem)
    if problems:
        from modelsafe.code.diagnose import unsavable_error

        raise unsavable_error(problems)
    return captured


def restore_attributes(obj: Any, attributes: Mapping[str, Any]) -> None:
    """Set the recorded fitted attributes on a rebuilt wrapper.

    A library version may turn a stored attribute into a read-only property it derives
    from the model (XGBoost 1.7 stored ``classes_``; 3.x computes it). Then the derived
    value must equal the recorded one, or the rebuilt model would not be the saved one.
    """
    for name, value in attributes.items():
        decoded = from_json(value)
        prop = getattr(type(obj), name, None)
        if isinstance(prop, property) and prop.fset is None:
            _check_derived(obj, name, decoded)
        else:
            setattr(obj, name, decoded)


def _check_derived(obj: Any, name: str, recorded: Any) -> None:
    import numpy as np

    try:
        current = getattr(obj, name)
        same = bool(np.array_equal(np.asarray(current), np.asarray(recorded)))
    except Exception:  # noqa: BLE001 - an attribute this version cannot derive counts as different
        current, same = "<not available>", False
    if not same:
        raise ValueError(f"{type(obj).__name__}.{name} is derived by this version of the library and gives "
                         f"{current!r}, but the saved model recorded {recorded!r}")


# ---------------------------------------------------------------------------------------
# the wrapper's class
# ---------------------------------------------------------------------------------------


def class_ref(cls: type) -> str:
    """``module:qualname`` of a class, as stored in the manifest."""
    return f"{cls.__module__}:{cls.__qualname__}"


def find_base(obj: Any, known: Mapping[str, type], flavor: str) -> tuple[str, str]:
    """``(base, ref)``: the known framework class ``obj`` is or derives from, and the class to store.

    ``ref`` is ``base`` for an instance of the framework class itself, or ``module:qualname``
    of a user's subclass. Classes of the framework itself that are not known (its Dask or
    Spark wrappers, data containers) are refused with UnsupportedModelError.
    """
    by_class = {cls: name for name, cls in known.items()}
    own = type(obj)
    for cls in own.__mro__:
        if cls in by_class:
            if cls is own:
                return by_class[cls], by_class[cls]
            if own.__module__.split(".")[0] != flavor:
                return by_class[cls], class_ref(own)
            break
    raise UnsupportedModelError(
        f"The {flavor} flavor saves {', '.join(n.partition(':')[2] for n in known)} and their subclasses, not "
        f"{own.__module__}.{own.__qualname__}. Save the trained booster or one of those wrappers instead.",
        type_name=f"{own.__module__}.{own.__qualname__}",
    )


def check_component(data: Mapping[str, Any], kinds: Iterable[str], member: str, flavor: str) -> None:
    """Validate the shape of a boosting flavor's manifest data (raises FormatError)."""
    problems = []
    fitted = data.get("fitted", True)
    if fitted and data.get("member") != member:
        problems.append(f"member={data.get('member')!r}")
    if not isinstance(data.get("class"), str):
        problems.append(f"class={data.get('class')!r}")
    if data.get("kind") not in set(kinds):
        problems.append(f"kind={data.get('kind')!r}")
    if data.get("kind") != "booster" and not isinstance(data.get("params"), dict):
        problems.append("params is not a JSON object")
    if not isinstance(data.get("attributes", {}), dict):
        problems.append("attributes is not a JSON object")
    if problems:
        raise FormatError(
            f"Invalid {flavor} component data in the manifest ({', '.join(problems)}): it was not written by "
            f"modelsafe's {flavor} flavor or was damaged. Re-export the model from its source.",
            problems=problems,
        )


def construct(cls: type, data: Mapping[str, Any]) -> Any:
    """A wrapper built from its saved parameters (unfitted: its fitted state is set afterwards)."""
    try:
        return cls(**from_json(data["params"]))
    except TypeError as exc:
        raise FormatError(
            f"{cls.__qualname__} no longer accepts the saved parameters ({exc}): the class changed since the "
            "model was saved. Install the recorded versions (`modelsafe env`) or re-export the model.",
        ) from exc


def _split(ref: str) -> tuple[str, str]:
    module, _, qualname = ref.partition(":")
    if not module or not qualname:
        raise FormatError(f"Malformed class reference {ref!r} in the manifest: expected 'module:qualname'. "
                          "The artifact is damaged; re-export the model from its source.", ref=ref)
    return module, qualname


def check_class(ref: str, known: Iterable[str], options: "LoadOptions") -> None:
    """Refuse (before anything is imported) a wrapper class the load may not import.

    Known framework classes pass; any other class goes through the custom-code policy of
    :func:`modelsafe.code.bundle.check_symbol` (bundled or local code, ``trusted`` names, installed
    packages; never the standard library).
    """
    if ref in set(known):
        return
    from modelsafe.code.gate import check_symbol

    check_symbol(options, *_split(ref))


def resolve_class(ref: str, known: Mapping[str, type], base: type, options: "LoadOptions", flavor: str) -> type:
    """The class named by ``ref``: a known framework class, or an allowed subclass of ``base``."""
    if ref in known:
        return known[ref]
    from modelsafe.code.gate import import_symbol

    module, qualname = _split(ref)
    cls = import_symbol(options, module, qualname)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise FormatError(
            f"{module}.{qualname} is not a subclass of {base.__module__}.{base.__qualname__}, so it cannot "
            f"hold the saved {flavor} model. The code changed since saving; restore the class or re-export.",
            ref=ref,
        )
    return cls
