"""Running a torch model for modelsafe: devices, inputs, eval mode and numpy outputs."""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from modelsafe.errors import FlavorError

if TYPE_CHECKING:
    import torch


class DeviceChangedWarning(UserWarning):
    """The model was saved on another device (e.g. a GPU) than the one it is loaded on."""


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _module_device(model: Any) -> "torch.device":
    import torch

    for tensor in _tensors_of(model):
        return tensor.device
    return torch.device("cpu")


def _tensors_of(model: Any) -> Iterator["torch.Tensor"]:
    yield from model.parameters()
    yield from (b for b in model.buffers() if b is not None)


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run ``model`` in eval mode, restoring its mode afterwards (dropout off for reference outputs)."""
    training = getattr(model, "training", False)
    try:
        if training:
            model.eval()
    except NotImplementedError:  # exported programs have no train/eval switch
        training = False
    try:
        yield
    finally:
        if training:
            model.train()


def resolve_device(requested: Any, saved: str | None = None) -> str:
    """The device to load on: None -> CPU; "auto" -> best available; else the one asked for, if present."""
    import torch

    if requested is None or str(requested) == "auto":
        device = _best_device() if requested is not None else "cpu"
    else:
        try:
            parsed = torch.device(str(requested))
        except (RuntimeError, TypeError) as exc:
            raise FlavorError(f"Invalid device {requested!r} ({exc}). Use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.",
                              device=str(requested)) from None
        if parsed.type == "meta":
            raise FlavorError("device='meta' holds no data, so the loaded model would have no weights. Use 'cpu', "
                              "'cuda', 'cuda:N', 'mps' or 'auto'.", device="meta")
        _check_available(parsed)
        device = str(parsed)
    if saved and not saved.startswith(device.split(":")[0]):
        hint = "device='auto' or device='cuda'" if torch.cuda.is_available() else "a machine with that device"
        warnings.warn(f"The model was saved on {saved} and is loaded on {device}"
                      f"{' (device=None means CPU)' if requested is None else ''}. Its outputs are verified on this "
                      f"device; to load it on {saved.split(':')[0]}, use {hint}.", DeviceChangedWarning, stacklevel=5)
    return device


def _best_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _check_available(device: "torch.device") -> None:
    import torch

    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise FlavorError(
                f"device={str(device)!r} was asked, but this machine has {count} CUDA device(s) (torch "
                f"{torch.__version__}, CUDA {torch.version.cuda or 'not built in'}). The model cannot be placed there. "
                "Use device='auto' (the best available) or device='cpu'.", device=str(device))
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise FlavorError("device='mps' was asked, but Apple's MPS backend is not available here. Use "
                              "device='auto' or device='cpu'.", device="mps")


def model_inputs(model: Any, x: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword inputs for ``model``: numpy or tensors, on its device, floats in its dtype."""
    import numpy as np
    import torch

    device, float_dtype = torch.device("cpu"), None
    for tensor in _tensors_of(model):
        device = tensor.device
        if tensor.is_floating_point():
            float_dtype = tensor.dtype
            break

    def one(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject or value.dtype.kind in "USM":
                raise FlavorError(f"A torch model takes numbers, but got an array of {value.dtype}. Convert the "
                                  "input to numbers first (a tokenizer or encoder as preprocess=...).")
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and float_dtype is not None and value.dtype != float_dtype:
                value = value.to(float_dtype)
            return value.to(device)
        return value

    if isinstance(x, Mapping):
        return (), {str(k): one(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        items = [one(v) for v in x]
        if _spreads(model, x):
            return tuple(items), {}
        return (type(x)(*items) if hasattr(x, "_fields") else type(x)(items),), {}  # one argument, as given
    return (one(x),), {}


def _spreads(model: Any, x: tuple[Any, ...] | list[Any]) -> bool:
    """Whether a tuple or list of arrays is ``forward``'s positional arguments, not its one argument.

    A tuple is, unless it has several items and ``forward`` takes exactly one argument; a list (which
    may be one argument holding several tensors, ``forward(xs)``) is when every item is an array and
    ``forward`` takes more than one argument.
    """
    import inspect

    try:
        parameters = inspect.signature(getattr(model, "forward", model)).parameters.values()
    except (TypeError, ValueError):
        return isinstance(x, tuple)
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if isinstance(x, tuple):
        return len(positional) != 1 or len(x) == 1
    return len(positional) > 1 and all(hasattr(v, "shape") for v in x)


def _call(model: Any, x: Any) -> Any:
    args, kwargs = model_inputs(model, x)
    return model(*args, **kwargs)


def _run(obj: Any, x: Any) -> Any:
    import torch

    if not callable(obj):
        raise FlavorError(
            f"This artifact holds weights only ({_type_name(obj)}): there is no model to run. Load them into your "
            "model with model.load_state_dict(bundle.model), or save the module itself to get predictions.")
    with eval_mode(obj), torch.inference_mode():  # outputs are what the loaded (eval) model gives
        return _call(obj, x)


def to_numpy(value: Any) -> Any:
    """Tensors (also inside tuples, lists and dicts) as numpy arrays on the CPU."""
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(value, Mapping):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_numpy(v) for v in value) if isinstance(value, tuple) and not hasattr(value, "_fields") \
            else [to_numpy(v) for v in value]
    return value


def flatten_outputs(value: Any, name: str = "predict") -> dict[str, Any]:
    """``{"predict": array}``, or one entry per element of tuple/dict outputs (``predict.0``, ``predict.logits``)."""
    import numpy as np

    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten_outputs(item, f"{name}.{key}"))
        return out
    if isinstance(value, (list, tuple)) and value and not all(np.isscalar(v) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten_outputs(item, f"{name}.{i}"))
        return out
    return {name: np.asarray(value)}
