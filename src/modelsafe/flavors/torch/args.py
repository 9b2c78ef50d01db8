"""Constructor arguments of torch modules: recorded when built, stored as JSON, decoded at load.

* **Recording.** :func:`install_recorder` puts a light hook on ``torch.nn.Module.__new__``
  that remembers the arguments of every module built afterwards, in a weak map: the
  instance itself is untouched. ``import modelsafe`` arranges for it to be installed as soon
  as torch is imported, in either import order (:mod:`modelsafe.flavors.torch.hook`).
* **Inferring.** :func:`infer_args` reads the constructor's signature: attributes named like
  its parameters (``self.hidden = hidden``), else the defaults.
* **Encoding.** Besides JSON values, arguments may be tuples, ``OrderedDict``, torch dtypes
  and devices, enum members, classes or functions of importable code
  (``activation=nn.GELU``) and modules, stored recursively as their own class and arguments
  (``Wrapper(backbone=ResNet(...))``).
* **Decoding.** :func:`audit_refs` checks every class path an architecture names before
  anything is imported; :class:`Decoder` then imports them through :mod:`modelsafe.code.bundle`
  and type-checks what it gets before constructing anything.
"""

from __future__ import annotations

import collections
import enum
import inspect
import math
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from modelsafe.errors import UntrustedContentError
from modelsafe.flavors.torch.tensors import named_dtype

if TYPE_CHECKING:
    from modelsafe.flavors._base import LoadOptions

#: Wrapper modules whose wrapped module is saved instead (attribute holding it).
WRAPPERS = {"DataParallel": "module", "DistributedDataParallel": "module", "OptimizedModule": "_orig_mod"}
_RECORDED: "weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], dict[str, Any]]]" = weakref.WeakKeyDictionary()
_MAX_DEPTH = 20


def install_recorder() -> None:
    """Record the constructor arguments of every ``nn.Module`` built from now on (idempotent)."""
    import torch

    module_cls = torch.nn.Module
    current = module_cls.__dict__.get("__new__")
    if current is not None:
        return  # already installed (or another library customizes it: leave it alone)

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        obj = object.__new__(cls)
        if (args or kwargs) and cls.__new__ is __new__:  # a subclass's own __new__ may drop arguments
            try:
                _RECORDED[obj] = (args, kwargs)
            except TypeError:  # pragma: no cover - an unhashable module subclass
                pass
        return obj

    module_cls.__new__ = staticmethod(__new__)  # type: ignore[assignment]


def recorded_args(module: Any) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """The ``(args, kwargs)`` ``module`` was constructed with, when the hook saw it."""
    try:
        return _RECORDED.get(module)
    except TypeError:  # pragma: no cover
        return None


def unwrap(model: Any) -> tuple[Any, list[str]]:
    """Strip DataParallel / DistributedDataParallel / torch.compile wrappers; return their names."""
    wrappers: list[str] = []
    while type(model).__name__ in WRAPPERS and hasattr(model, WRAPPERS[type(model).__name__]):
        wrappers.append(type(model).__name__)
        model = getattr(model, WRAPPERS[type(model).__name__])
    return model, wrappers


def class_path(obj: Any) -> tuple[str, str]:
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__module__, cls.__qualname__


@dataclass
class _Encoder:
    refs: set[tuple[str, str]] = field(default_factory=set)
    problems: list[tuple[str, str, str]] = field(default_factory=list)

    def value(self, value: Any, path: str, depth: int = 0) -> Any:
        import torch

        if depth > _MAX_DEPTH:
            self.problems.append((path, type(value).__name__, "nested too deeply"))
            return None
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, enum.Enum):
            self.refs.add(class_path(value))
            return {"$enum": [*class_path(value), value.name]}
        if isinstance(value, (tuple, torch.Size)):
            return {"$tuple": [self.value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return self.mapping(value, path, depth)
        if isinstance(value, torch.dtype):
            return {"$dtype": str(value).removeprefix("torch.")}
        if isinstance(value, torch.device):
            return {"$device": str(value)}
        if isinstance(value, torch.nn.Module):
            return {"$module": self.module(value, path, depth + 1)}
        ref = _ref_path(value) if isinstance(value, type) or callable(value) else None
        if ref is not None:
            self.refs.add(ref)
            return {"$ref": list(ref)}
        reason = "a tensor: constructor arguments are stored as JSON, weights go to the state dict" \
            if isinstance(value, torch.Tensor) else "it cannot be stored as JSON nor named by an import path"
        self.problems.append((path, f"{type(value).__module__}.{type(value).__qualname__}", reason))
        return None

    def mapping(self, value: dict[Any, Any], path: str, depth: int) -> Any:
        items = [[self.value(k, f"{path}.<key>", depth + 1), self.value(v, f"{path}[{k!r}]", depth + 1)]
                 for k, v in value.items()]
        if isinstance(value, collections.OrderedDict):
            return {"$odict": items}
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: v for (k, _), (_, v) in zip(value.items(), items)}
        return {"$dict": items}

    def module(self, module: Any, path: str, depth: int) -> dict[str, Any]:
        args, kwargs = recorded_args(module) or infer_args(module) or ((), {})
        self.refs.add(class_path(module))
        return {"class": list(class_path(module)),
                "args": [self.value(a, f"{path}.args[{i}]", depth) for i, a in enumerate(args)],
                "kwargs": {k: self.value(v, f"{path}.{k}", depth) for k, v in kwargs.items()}}


def _ref_path(obj: Any) -> tuple[str, str] | None:
    """``(module, qualname)`` under which ``obj`` (a class or function) can be imported again."""
    from modelsafe.code.source import importable_as

    if not (isinstance(obj, type) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        return None
    return importable_as(obj)


def infer_args(module: Any) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Arguments from the constructor's signature: same-named attributes, else defaults."""
    import torch

    params = _init_parameters(type(module))
    if params is None:
        return None
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = _attribute(module, p.name)
        if value is _MISSING or isinstance(value, torch.Tensor):
            if p.default is p.empty:
                return None
            value = p.default
        if p.kind is p.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[p.name] = value
    return tuple(args), kwargs


_MISSING = object()


def _attribute(module: Any, name: str) -> Any:
    try:
        return getattr(module, name)
    except Exception:  # noqa: BLE001 - properties may raise; the attribute is then unusable
        return _MISSING


def _init_parameters(cls: type) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return None


def walk_refs(value: Any) -> Iterator[tuple[str, str]]:
    """Every ``(module, qualname)`` an encoded architecture names (class, $ref, $enum, $module)."""
    if isinstance(value, list):
        for item in value:
            yield from walk_refs(item)
    elif isinstance(value, dict):
        if "class" in value and isinstance(value["class"], list) and len(value["class"]) == 2:
            yield str(value["class"][0]), str(value["class"][1])
        for tag in ("$ref", "$enum"):
            if tag in value and isinstance(value[tag], list) and len(value[tag]) >= 2:
                yield str(value[tag][0]), str(value[tag][1])
        for item in value.values():
            yield from walk_refs(item)


def audit_refs(data: Mapping[str, Any], options: "LoadOptions") -> None:
    """Refuse, importing nothing, class paths that are dangerous or not importable as allowed."""
    from modelsafe.code import gate
    from modelsafe.security import classify

    for module, qualname in sorted(set(walk_refs(data))):
        name = f"{module}.{qualname}"
        if classify(module, qualname) == "dangerous" and name not in options.trusted:
            raise UntrustedContentError(
                f"The architecture names {name}, which can run code or touch files, as the model's class or a "
                "constructor argument. A model never needs it there, so the artifact was crafted or tampered with. "
                "Nothing was imported. Do not use this file.", globals=[name])
        gate.check_symbol(options, module, qualname)


class Decoder:
    """Turns encoded arguments back into objects; imports only what the audit allowed."""

    def __init__(self, options: "LoadOptions") -> None:
        self.options = options

    def symbol(self, module: str, qualname: str) -> Any:
        from modelsafe.code import gate
        return gate.import_symbol(self.options, module, qualname)

    def module_class(self, module: str, qualname: str) -> type:
        import torch

        cls = self.symbol(module, qualname)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise UntrustedContentError(
                f"The artifact names {module}.{qualname} as the model's class, but it is a {type(cls).__name__}, not "
                "a torch.nn.Module subclass: constructing it could run arbitrary code. Nothing was constructed. "
                "Check that the right code is installed; do not use the file if you did not make it.",
                globals=[f"{module}.{qualname}"])
        return cls

    def value(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (tag, inner), = value.items()
            if tag.startswith("$"):
                return self._tagged(tag, inner)
        return {k: self.value(v) for k, v in value.items()}

    def _tagged(self, tag: str, inner: Any) -> Any:
        import torch

        if tag == "$tuple":
            return tuple(self.value(v) for v in inner)
        if tag in ("$odict", "$dict"):
            pairs = [(self.value(k), self.value(v)) for k, v in inner]
            return collections.OrderedDict(pairs) if tag == "$odict" else dict(pairs)
        if tag == "$float":
            return float(inner)
        if tag == "$dtype":
            dtype = named_dtype(inner)
            if dtype is None:
                raise _bad_value(f"unknown dtype {inner!r}")
            return dtype
        if tag == "$device":
            return torch.device(str(inner))
        if tag == "$enum":
            cls = self.symbol(inner[0], inner[1])
            if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
                raise _bad_value(f"{inner[0]}.{inner[1]} is not an enum")
            return cls[inner[2]]
        if tag == "$ref":
            target = self.symbol(inner[0], inner[1])
            if not (isinstance(target, type) or callable(target)):
                raise _bad_value(f"{inner[0]}.{inner[1]} is neither a class nor a function")
            return target
        if tag == "$module":
            return self._build(inner)
        raise _bad_value(f"unknown tag {tag!r}")

    def construct(self, data: Mapping[str, Any], device: str = "meta") -> Any:
        """Build the module ``data`` describes, tensors on ``device``, without touching torch's RNG."""
        import torch

        with torch.random.fork_rng(devices=[]), torch.device(device):
            return self._build(data)

    def _build(self, data: Mapping[str, Any]) -> Any:
        cls = self.module_class(*data["class"])
        args = self.value(list(data.get("args", [])))
        kwargs = {k: self.value(v) for k, v in data.get("kwargs", {}).items()}
        return cls(*args, **kwargs)


def _bad_value(problem: str) -> UntrustedContentError:
    return UntrustedContentError(
        f"The stored constructor arguments are invalid: {problem}. modelsafe writes only values it can read back, "
        "so the manifest was changed after saving. Nothing was constructed. Re-export the model from its source.",
        globals=[])


class LiveDecoder(Decoder):
    """Decodes at save, in the saving process: names resolve to the objects already imported there."""

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]

    def symbol(self, module: str, qualname: str) -> Any:
        import importlib
        import sys

        target: Any = sys.modules.get(module) or importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        return target
