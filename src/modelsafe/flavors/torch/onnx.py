"""PyTorch modules as ONNX graphs, with ``torch.onnx.export``'s dynamo exporter (``save(..., portable="onnx")``).

The module is traced on the verification sample (converted as ``predict`` converts input:
floats in the module's dtype), with the batch dimension of every input dynamic. The graph's
inputs are named ``x`` (one input), ``input_0``, ``input_1``... (positional inputs) or by
their keys (keyword inputs); its outputs are named as modelsafe records them (``predict``,
``predict.0``, ``predict.logits``...), in the order the module returns them.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from modelsafe.errors import UnsupportedModelError
from modelsafe.flavors.onnx_graph import GraphInput, OnnxGraph

__all__ = ["to_onnx"]

#: The opset of the graphs written (onnxruntime >= 1.14 runs it).
OPSET = 18


def to_onnx(obj: Any, schema: Mapping[str, Any] | None, sample: Any) -> OnnxGraph:
    import torch

    from modelsafe.flavors.torch.args import unwrap
    from modelsafe.flavors.torch.run import (
        eval_mode,
        flatten_outputs,
        model_inputs,
        to_numpy,
    )

    if not isinstance(obj, torch.nn.Module):
        raise UnsupportedModelError(
            f"{type(obj).__module__}.{type(obj).__qualname__} holds weights only: there is no module to export to "
            "ONNX. Save the nn.Module itself with portable='onnx'.", type_name=type(obj).__qualname__)
    model = unwrap(obj)[0]
    if sample is None:
        raise UnsupportedModelError("A torch module is exported to ONNX by tracing it on the sample: pass sample=.",
                                    type_name=type(model).__qualname__)
    args, kwargs = model_inputs(model, sample)
    args = tuple(_two_rows(a) for a in args)
    kwargs = {k: _two_rows(v) for k, v in kwargs.items()}
    names = ["x"] if len(args) == 1 and not kwargs else [f"input_{i}" for i in range(len(args))]
    names += list(kwargs)
    with eval_mode(model), torch.inference_mode():
        recorded = list(flatten_outputs(to_numpy(model(*args, **kwargs))))
    batch = torch.export.Dim("batch")
    dynamic: Any = tuple({0: batch} for _ in args)
    if kwargs:
        dynamic = {**{p: {0: batch} for p in _positional_names(model, len(args))}, **{k: {0: batch} for k in kwargs}}
    with eval_mode(model), _quiet():
        program = torch.onnx.export(model, args, kwargs=kwargs or None, dynamo=True, input_names=names,
                                    output_names=recorded, dynamic_shapes=dynamic, opset_version=OPSET,
                                    verbose=False, optimize=True, report=False)
    tensors = [*args, *kwargs.values()]
    inputs = tuple(_graph_input(name, tensor, i if len(args) > 1 and i < len(args) else None,
                                name if name in kwargs else None)
                   for i, (name, tensor) in enumerate(zip(names, tensors)))
    return OnnxGraph(model=program.model_proto, inputs=inputs, outputs={name: name for name in recorded},
                     converter=f"torch.onnx (dynamo) {torch.__version__}")


def _two_rows(value: Any) -> Any:
    """A batch of one row is repeated: the exporter specializes a dynamic dimension traced at size 1."""
    import torch

    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1:
        return torch.cat([value, value])
    return value


def _positional_names(model: Any, count: int) -> list[str]:
    import inspect

    parameters = [p.name for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return parameters[:count]


def _graph_input(name: str, tensor: Any, position: int | None, key: str | None) -> GraphInput:
    dtype = str(tensor.dtype).removeprefix("torch.")
    return GraphInput(name, dtype, (None, *(int(n) for n in tensor.shape[1:])), position=position, key=key)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter logs its progress (and optional torchvision ops) at INFO and WARNING; keep errors only
    (and no deprecation notices)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # the exporter's own deprecation notices, nothing a user can act on
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")  # axis-name notes
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
