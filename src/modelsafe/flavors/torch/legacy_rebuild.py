"""The stand-ins the ``torch.save`` reader (:mod:`.legacy`) resolves instead of torch's own helpers.

Each rebuild function checks every offset, size and stride against its storage before a
tensor views it; storage types become markers; ``torch.nn`` module classes are the only
classes resolved without ``trusted=[...]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Collection

from modelsafe.errors import FormatError, UntrustedContentError

if TYPE_CHECKING:
    import torch

_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}
_DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                "complex64", "complex128", "float", "double", "half", "long", "int", "short", "uint16", "uint32",
                "uint64")


class StorageType:
    """Stands for ``torch.FloatStorage`` & co. in persistent ids: it only carries the dtype."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype = name, dtype

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UntrustedContentError(f"The checkpoint calls torch.{self.name}(...) directly, which torch.save never "
                                    "writes; the file was crafted. Nothing was loaded.", globals=[f"torch.{self.name}"])


class _TypeMarker:
    """Stands for ``torch.Tensor`` / ``Parameter`` as the type argument of ``_rebuild_from_type_v2``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UntrustedContentError(f"The checkpoint calls {self.name}(...) directly, which torch.save never writes; "
                                    "the file was crafted. Nothing was loaded.", globals=[self.name])


def crafted(problem: str) -> FormatError:
    return FormatError(f"The checkpoint is malformed: {problem}. torch.save never writes this, so the file is damaged "
                       "or crafted; nothing was loaded from it. Use a copy from the original source.", problem=problem)




def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                       for v in value):
        raise crafted(f"tensor {what} {value!r} is not a tuple of non-negative integers")
    return tuple(value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> "torch.Tensor":
    import torch

    if not isinstance(storage, torch.storage.TypedStorage):
        raise crafted("a tensor is rebuilt from something that is not a storage")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if not isinstance(storage_offset, int) or storage_offset < 0 or len(size) != len(stride):
        raise crafted(f"tensor offset {storage_offset!r} / size {size} / stride {stride} are inconsistent")
    extent = 0 if 0 in size else storage_offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if extent > storage._size():
        raise crafted(f"a tensor of size {size}, stride {stride} at offset {storage_offset} reaches element {extent} "
                       f"of a storage of {storage._size()}")
    tensor = torch.empty((0,), dtype=storage.dtype)
    return tensor.set_(storage._untyped_storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> "torch.Tensor":
    if backward_hooks:
        raise crafted("a tensor carries backward hooks (code)")
    tensor = _rebuild_tensor(storage, storage_offset, size, stride)
    tensor.requires_grad = bool(requires_grad) and tensor.is_floating_point()
    return tensor


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, state: Any = None) -> Any:
    import torch

    if backward_hooks:
        raise crafted("a parameter carries backward hooks (code)")
    if not isinstance(data, torch.Tensor):
        raise crafted("a parameter is rebuilt from something that is not a tensor")
    return _set_state(torch.nn.Parameter(data, requires_grad=bool(requires_grad)), state)


def _set_state(tensor: Any, state: Any) -> Any:
    """Plain attributes torch keeps on a tensor (e.g. torch.compile's markers); nothing else is accepted."""
    if not state:
        return tensor
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and k.isidentifier() and not k.startswith("__")
            and (v is None or isinstance(v, (str, int, float, bool))) for k, v in state.items()):
        raise crafted("a tensor carries Python state beyond plain attributes")
    for key, value in state.items():
        setattr(tensor, key, value)
    return tensor


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    import torch

    if func not in (_rebuild_tensor_v2, _rebuild_parameter) or not isinstance(new_type, _TypeMarker) \
            or not isinstance(args, tuple):
        raise crafted("a tensor subclass is rebuilt with an unexpected function or type")
    tensor = func(*args)
    if new_type.name.endswith("Parameter") and not isinstance(tensor, torch.nn.Parameter):
        tensor = torch.nn.Parameter(tensor, requires_grad=tensor.requires_grad)
    return _set_state(tensor, state)


def rebuild_standins(referenced: Collection[str]) -> dict[str, Any]:
    """This reader's own names, plus the torch.nn module classes the stream references."""
    import collections

    import torch

    names: dict[str, Any] = {
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2, "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        "torch.Tensor": _TypeMarker("torch.Tensor"), "torch._tensor.Tensor": _TypeMarker("torch.Tensor"),
        "torch.nn.parameter.Parameter": _TypeMarker("torch.nn.parameter.Parameter"),
        "collections.OrderedDict": collections.OrderedDict, "builtins.set": set, "__builtin__.set": set,
        "builtins.frozenset": frozenset, "__builtin__.frozenset": frozenset, "_codecs.encode": _latin1,
        "torch.Size": torch.Size, "torch.device": torch.device,
    }
    names.update({f"torch.{name}": StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()})
    names["torch.storage.UntypedStorage"] = StorageType("UntypedStorage", "uint8")
    names.update({f"torch.{n}": getattr(torch, n) for n in _DTYPE_NAMES if isinstance(getattr(torch, n, None),
                                                                                      torch.dtype)})
    for qualname in referenced:
        module, _, name = qualname.rpartition(".")
        if module.startswith("torch.nn.modules.") and qualname not in names:
            cls = _torch_nn_class(module, name)
            if cls is not None:
                names[qualname] = cls
    return names


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise crafted("an unexpected _codecs.encode call")
    return text.encode("latin1")


def _torch_nn_class(module: str, name: str) -> Any:
    import importlib

    import torch

    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, torch.nn.Module) else None


