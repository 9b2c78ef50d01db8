"""A module's architecture: its importable class plus the arguments that construct it.

Where the arguments come from, in order (each candidate is checked at save by building
the class on the ``meta`` device, which allocates nothing, and comparing every state-dict
key and shape with the model's):

1. ``init_args=`` given to ``ms.save`` (a mapping of keyword arguments, or a sequence of
   positional ones); if they do not fit the constructor, ``save`` fails at once;
2. torch's own containers (``Sequential``, ``ModuleList``, ``ModuleDict``) from their children;
3. the arguments recorded when the module was constructed (see :mod:`.args`);
4. inferred from the constructor's signature: same-named attributes, else the defaults.

How they are stored and decoded is :mod:`modelsafe.flavors.torch.args`.
"""

from __future__ import annotations

import collections
import inspect
import json
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from modelsafe.errors import SaveError, UnsavableObjectError
from modelsafe.flavors.torch.args import (
    _MISSING,
    _attribute,
    _Encoder,
    _init_parameters,
    class_path,
    infer_args,
    recorded_args,
)


@dataclass(frozen=True)
class Architecture:
    """What rebuilds the module: class path, encoded arguments and where they came from."""

    module: str
    qualname: str
    args: list[Any]
    kwargs: dict[str, Any]
    source: str
    refs: frozenset[tuple[str, str]] = frozenset()

    def to_data(self) -> dict[str, Any]:
        return {"class": [self.module, self.qualname], "args": self.args, "kwargs": self.kwargs,
                "args_from": self.source}

    def describe(self) -> str:
        return describe(self.to_data())


def describe(data: Mapping[str, Any]) -> str:
    """``module.Class(arg, key=value)`` for messages."""
    module, qualname = data["class"]
    parts = [_short(a) for a in data.get("args", [])]
    parts += [f"{k}={_short(v)}" for k, v in data.get("kwargs", {}).items()]
    return f"{module}.{qualname}({', '.join(parts)})"


def _short(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1:
        (tag, inner), = value.items()
        if tag == "$tuple":
            return "(" + ", ".join(_short(v) for v in inner) + ("," if len(inner) == 1 else "") + ")"
        if tag == "$module":
            return describe(inner)
        if tag in ("$ref", "$enum"):
            return ".".join(inner)
        if tag in ("$dtype", "$device", "$float"):
            return f"{tag[1:]}({inner})"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _containers(module: Any) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Arguments of torch's own containers, which take their children as arguments."""
    import torch

    children = list(module._modules.items())
    if isinstance(module, torch.nn.Sequential):
        if all(name == str(i) for i, (name, _) in enumerate(children)):
            return tuple(child for _, child in children), {}
        return (collections.OrderedDict(children),), {}
    if isinstance(module, torch.nn.ModuleList):
        return ([child for _, child in children],), {}
    if isinstance(module, torch.nn.ModuleDict):
        return (collections.OrderedDict(children),), {}
    return None


def _candidates(model: Any, init_args: Any) -> Iterator[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    if init_args is not None:
        if isinstance(init_args, Mapping):
            yield "init_args", (), dict(init_args)
        elif isinstance(init_args, (list, tuple)):
            yield "init_args", tuple(init_args), {}
        else:
            raise SaveError(
                f"init_args must be a mapping of keyword arguments or a sequence of positional ones. Received: "
                f"init_args={init_args!r}. Pass e.g. init_args={{'hidden': 64}}.", init_args=repr(init_args))
        return
    for source, found in (("torch container", _containers(model)), ("recorded", recorded_args(model)),
                          ("inferred", infer_args(model))):
        if found is not None:
            yield source, found[0], found[1]
    if not unknown_parameters(model):
        yield "defaults", (), {}


def unknown_parameters(model: Any) -> list[str]:
    """Constructor parameters with neither a default nor an attribute of the same name."""
    return [p.name for p in _init_parameters(type(model)) or []
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and _attribute(model, p.name) is _MISSING]


def capture(model: Any, init_args: Any = None) -> Architecture:
    """The architecture of ``model``, checked to rebuild the same state-dict keys and shapes."""
    cls = type(model)
    module, qualname = class_path(model)
    if "<locals>" in qualname:
        raise SaveError(
            f"{module}.{qualname} is defined inside a function, so no other process can import it. Define the class "
            "at the top level of a module (or of the script / notebook) and save again.", cls=f"{module}.{qualname}")
    tried: list[str] = []
    for source, args, kwargs in _candidates(model, init_args):
        _check_signature(cls, args, kwargs, source)
        encoder = _Encoder(refs={(module, qualname)})
        data_args = [encoder.value(a, f"args[{i}]") for i, a in enumerate(args)]
        data_kwargs = {k: encoder.value(v, k) for k, v in kwargs.items()}
        if encoder.problems:
            if source == "init_args":
                raise _unencodable(encoder.problems, module, qualname)
            tried.append(f"{source}: cannot store {', '.join(p[0] for p in encoder.problems)}")
            continue
        arch = Architecture(module, qualname, data_args, data_kwargs, source, frozenset(encoder.refs))
        problem = _rebuild_problem(model, args, kwargs, json.dumps([data_args, data_kwargs], sort_keys=True))
        if problem is None:
            return arch
        if source == "init_args":
            raise SaveError(
                f"init_args do not rebuild the model: {module}.{qualname}({_call(args, kwargs)}) {problem}. The saved "
                "weights would not fit the rebuilt model at load. Pass the arguments the model was constructed "
                "with.", cls=f"{module}.{qualname}", problem=problem)
        tried.append(f"{source} {_call(args, kwargs)}: {problem}")
    unknown = unknown_parameters(model)
    if unknown:
        tried.append(f"{', '.join(unknown)} {'has' if len(unknown) == 1 else 'have'} no default and no attribute of "
                     "that name")
    raise SaveError(
        f"Cannot tell how to construct {module}.{qualname}: the architecture is stored as its class plus constructor "
        f"arguments, and none were recorded or could be inferred"
        + (f" ({'; '.join(tried)})" if tried else "") + ". Without them the model cannot be rebuilt at load. Pass "
        f"them at save: ms.save(model, path, init_args={{...}}) with the arguments of {qualname}(...), or store them "
        f"on the module as attributes of the same names (self.hidden = hidden).",
        cls=f"{module}.{qualname}", tried=tried, unknown=unknown)


def _call(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    return ", ".join([_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()])


def _check_signature(cls: type, args: tuple[Any, ...], kwargs: Mapping[str, Any], source: str) -> None:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        if source != "init_args":
            return  # the candidate is simply not usable; the next one is tried
        raise SaveError(
            f"init_args do not match the constructor {cls.__module__}.{cls.__qualname__}{signature}: {exc} "
            f"(given: {_call(args, kwargs) or 'nothing'}). The model could not be rebuilt at load. Pass the "
            "arguments the class takes, e.g. init_args={name: value, ...}.",
            cls=f"{cls.__module__}.{cls.__qualname__}", signature=str(signature), problem=str(exc)) from None


def _unencodable(problems: list[tuple[str, str, str]], module: str, qualname: str) -> UnsavableObjectError:
    lines = "\n".join(f"  - init_args {path}: {type_name} ({reason})" for path, type_name, reason in problems)
    return UnsavableObjectError(
        f"The constructor arguments of {module}.{qualname} cannot be stored:\n{lines}\nThey are kept as JSON (plus "
        "tuples, dtypes, modules and importable classes or functions), so the model can be rebuilt anywhere. Pass "
        "plain values in init_args (numbers, strings, lists) and build other objects inside __init__.",
        problems=[(f"init_args.{p}", t, r) for p, t, r in problems])


# class -> the (arguments, state-dict shapes) it was seen to rebuild. Saving the same model
# again (a Checkpointer saves every few steps) then skips building it on the meta device.
_REBUILDS: "weakref.WeakKeyDictionary[type, set[tuple[str, frozenset[tuple[str, tuple[int, ...]]]]]]" = \
    weakref.WeakKeyDictionary()


def _rebuild_problem(model: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], encoded: str) -> str | None:
    """None when ``type(model)(*args, **kwargs)`` has the model's state-dict keys and shapes.

    ``encoded`` is the arguments as stored: with the shapes, it identifies a rebuild already
    checked for this class (a class defined again is a new class, and is checked again).
    """
    cls = type(model)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items() if hasattr(v, "shape")}
    seen = (encoded, frozenset(want.items()))
    if seen in _REBUILDS.get(cls, ()):
        return None
    try:
        rebuilt = construct(cls, args, kwargs)
    except Exception as exc:  # noqa: BLE001 - reported as the reason this candidate fails
        return f"fails: {type(exc).__name__}: {exc}"
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items() if hasattr(v, "shape")}
    if want == got:
        _REBUILDS.setdefault(cls, set()).add(seen)
        return None
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    shapes = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    bits = []
    if missing:
        bits.append(f"lacks {', '.join(missing[:5])}")
    if extra:
        bits.append(f"has extra {', '.join(extra[:5])}")
    if shapes:
        bits.append("differs in " + ", ".join(f"{k} {want[k]} -> {got[k]}" for k in shapes[:5]))
    return "builds a model that " + "; ".join(bits)


def construct(cls: type, args: tuple[Any, ...], kwargs: Mapping[str, Any], device: str = "meta") -> Any:
    """``cls(*args, **kwargs)`` with tensors created on ``device``, without touching torch's RNG."""
    import torch

    with torch.random.fork_rng(devices=[]), torch.device(device):
        return cls(*args, **kwargs)
