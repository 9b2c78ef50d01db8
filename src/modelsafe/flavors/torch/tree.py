"""Weights without an architecture: state dicts and checkpoint dicts as JSON plus tensors.

A bare ``state_dict()`` (or a training checkpoint such as ``{"model": sd, "optimizer":
opt.state_dict(), "epoch": 3}``) has no class to rebuild. It is stored as a *weights-only*
component: its tensors go to safetensors members and the structure around them to JSON,
and it loads back as the same structure (an ``OrderedDict`` of tensors for a state
dict), ready for ``model.load_state_dict``. Nothing in it is pickled.

Tensor names: a flat mapping of string keys keeps its keys (the member is then an
ordinary safetensors state dict); nested tensors are named by their path
(``optimizer.state.0.exp_avg``). Leaves besides tensors: JSON values, tuples, ordered
and non-string-keyed dicts, numpy scalars and arrays, torch dtypes, devices and sizes,
``argparse.Namespace``. Anything else is refused at save, naming its path.
"""

from __future__ import annotations

import argparse
import collections
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe.errors import FormatError, UnsavableObjectError
from modelsafe.flavors.torch.tensors import named_dtype

if TYPE_CHECKING:
    import torch

_MAX_DEPTH = 64


@dataclass
class Encoded:
    tree: Any
    tensors: dict[str, "torch.Tensor"] = field(default_factory=dict)
    arrays: list[str] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)


def encode(obj: Any) -> Encoded:
    """Split ``obj`` into JSON (with ``{"$tensor": name}`` leaves) and the named tensors."""
    out = Encoded(tree=None)
    flat = isinstance(obj, Mapping) and all(isinstance(k, str) for k in obj)
    out.tree = _Encoder(out, flat).value(obj, "", 0)
    if out.problems:
        lines = "\n".join(f"  - {path or '<root>'}: {type_name} ({reason})" for path, type_name, reason in out.problems)
        raise UnsavableObjectError(
            f"The weights-only object holds values that cannot be stored without pickle:\n{lines}\nA state dict or "
            "checkpoint is stored as tensors plus JSON, so anything else in it would need code to rebuild. Keep only "
            "tensors, numbers, strings, lists and dicts in it (e.g. save the model itself, or vars(args)).",
            problems=out.problems)
    return out


class _Encoder:
    def __init__(self, out: Encoded, flat: bool) -> None:
        self.out = out
        self.flat = flat

    def name(self, path: str) -> str:
        name = path or "tensor"
        while name in self.out.tensors:
            name += "_"
        return name

    def value(self, value: Any, path: str, depth: int) -> Any:
        import numpy as np
        import torch

        if depth > _MAX_DEPTH:
            self.out.problems.append((path, type(value).__name__, "nested too deeply"))
            return None
        if isinstance(value, torch.Tensor):
            name = self.name(path)
            self.out.tensors[name] = value
            return {"$tensor": name}
        if isinstance(value, np.generic) and not isinstance(value, np.object_):  # before float: np.float64 is one
            item = value.item()
            return {"$numpy": [value.dtype.str, item if not isinstance(item, float) or math.isfinite(item)
                               else repr(item)]}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, np.ndarray) and not value.dtype.hasobject:
            name = self.name(path)
            self.out.tensors[name] = torch.from_numpy(np.ascontiguousarray(value))
            self.out.arrays.append(name)
            return {"$ndarray": name}
        if isinstance(value, torch.Size):
            return {"$size": list(value)}
        if isinstance(value, torch.dtype):
            return {"$dtype": str(value).removeprefix("torch.")}
        if isinstance(value, torch.device):
            return {"$device": str(value)}
        if isinstance(value, argparse.Namespace):
            return {"$namespace": self.value(vars(value), path, depth + 1)}
        if isinstance(value, (list, tuple)):
            items = [self.value(v, f"{path}.{i}" if path else str(i), depth + 1) for i, v in enumerate(value)]
            return {"$tuple": items} if isinstance(value, tuple) else items
        if isinstance(value, Mapping):
            return self.mapping(value, path, depth)
        self.out.problems.append((path, f"{type(value).__module__}.{type(value).__qualname__}",
                                  "not a tensor, array, number, string, list or dict"))
        return None

    def mapping(self, value: Mapping[Any, Any], path: str, depth: int) -> Any:
        def child(key: Any) -> str:
            if self.flat and depth == 0:
                return str(key)
            return f"{path}.{key}" if path else str(key)

        items = [[self.value(k, f"{path}.<key>", depth + 1), self.value(v, child(k), depth + 1)]
                 for k, v in value.items()]
        if isinstance(value, collections.OrderedDict):
            return {"$odict": items}
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: v for (k, _), (_, v) in zip(value.items(), items)}
        return {"$dict": items}


def decode(tree: Any, tensors: Mapping[str, "torch.Tensor"]) -> Any:
    """Rebuild the object :func:`encode` split, from its JSON and tensors."""
    return _decode(tree, tensors, 0)


def _decode(value: Any, tensors: Mapping[str, "torch.Tensor"], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise _bad("it is nested too deeply")
    if isinstance(value, list):
        return [_decode(v, tensors, depth + 1) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, inner), = value.items()
        if isinstance(tag, str) and tag.startswith("$"):
            return _tagged(tag, inner, tensors, depth)
    return {k: _decode(v, tensors, depth + 1) for k, v in value.items()}


def _tagged(tag: str, inner: Any, tensors: Mapping[str, "torch.Tensor"], depth: int) -> Any:
    import numpy as np
    import torch

    if tag in ("$tensor", "$ndarray"):
        if inner not in tensors:
            raise _bad(f"it names tensor {inner!r}, which the weights do not hold")
        return tensors[inner] if tag == "$tensor" else tensors[inner].numpy()
    if tag == "$tuple":
        return tuple(_decode(v, tensors, depth + 1) for v in inner)
    if tag in ("$odict", "$dict"):
        pairs = [(_decode(k, tensors, depth + 1), _decode(v, tensors, depth + 1)) for k, v in inner]
        return collections.OrderedDict(pairs) if tag == "$odict" else dict(pairs)
    if tag == "$float":
        return float(inner)
    if tag == "$numpy":
        dtype = np.dtype(inner[0])
        if dtype.hasobject:
            raise _bad("it holds a numpy object scalar")
        return dtype.type(float(inner[1]) if isinstance(inner[1], str) else inner[1])
    if tag == "$size":
        return torch.Size(inner)
    if tag == "$dtype":
        dtype = named_dtype(inner)
        if dtype is None:
            raise _bad(f"it names an unknown dtype {inner!r}")
        return dtype
    if tag == "$device":
        return torch.device(str(inner))
    if tag == "$namespace":
        return argparse.Namespace(**_decode(inner, tensors, depth + 1))
    raise _bad(f"it has an unknown tag {tag!r}")


def _bad(problem: str) -> FormatError:
    return FormatError(f"The stored structure of the weights-only component is invalid: {problem}. The manifest was "
                       "changed after saving or written by a newer modelsafe; upgrade modelsafe or re-export.",
                       problem=problem)
