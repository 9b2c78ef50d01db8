"""scikit-learn models as ONNX graphs, with skl2onnx (``save(..., portable="onnx")``).

A DataFrame fed to a ColumnTransformer (or holding text) becomes one ONNX input per column,
named as the column, as skl2onnx matches a ColumnTransformer's selections; otherwise the
model takes one float matrix. Classifiers give their labels and a probability tensor (no
ZipMap), so the outputs line up with ``predict`` and ``predict_proba``.

Every estimator in the model's graph is looked up in skl2onnx's registry first, so a step
without a converter (a custom transformer from ``__main__``) is named by its place and class
before anything is converted; skl2onnx's ``update_registered_converter`` adds one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from modelsafe.errors import UnsupportedModelError
from modelsafe.flavors.onnx_graph import GraphInput, OnnxGraph, graph_inputs

if TYPE_CHECKING:
    import numpy as np

__all__ = ["to_onnx"]

#: Opsets of the graphs written: supported by every onnxruntime since 1.14.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def to_onnx(obj: Any, schema: Mapping[str, Any] | None, sample: Any) -> OnnxGraph:
    import skl2onnx
    from sklearn.base import is_classifier

    missing = [(where, cls) for where, cls in _estimators(obj) if not _has_converter(cls)]
    if missing:
        where, cls = missing[0]
        name = f"{cls.__module__}.{cls.__qualname__}"
        raise UnsupportedModelError(
            f"{where} ({name}) has no ONNX converter: skl2onnx converts scikit-learn's own estimators, and "
            f"{cls.__qualname__} is not one of them{' (it is defined in __main__)' if cls.__module__ == '__main__' else ''}"
            ". Register a converter for it with skl2onnx.update_registered_converter(...) before ms.save (see the "
            "README, 'A portable ONNX member'), or save without portable=.",
            type_name=name, step=where, steps=[f"{w} ({c.__module__}.{c.__qualname__})" for w, c in missing])
    inputs = graph_inputs(schema, per_column=_reads_columns(obj, schema))
    classifier = is_classifier(obj)
    options = {id(obj): {"zipmap": False}} if classifier else None
    model = skl2onnx.convert_sklearn(
        obj, initial_types=[(i.name, _tensor_type(i)) for i in inputs], options=options,
        target_opset=TARGET_OPSET, custom_conversion_functions=_int_flag_converters(obj))
    names = [o.name for o in model.graph.output]
    if hasattr(obj, "predict"):
        outputs = {"predict": names[0]}
        if classifier and len(names) > 1:
            outputs["predict_proba"] = names[1]
    else:
        outputs = {"transform": names[0]}
    classes = getattr(obj, "classes_", None)
    return OnnxGraph(model=model, inputs=inputs, outputs=outputs, converter=f"skl2onnx {skl2onnx.__version__}",
                     classes=None if classes is None else _labels(classes))


def _estimators(obj: Any, where: str = "the model") -> Iterator[tuple[str, type]]:
    """Every estimator in the graph of ``obj`` (Pipeline steps, ColumnTransformer and FeatureUnion parts)."""
    steps = getattr(obj, "steps", None)
    parts = getattr(obj, "transformers_", None) or getattr(obj, "transformer_list", None)
    if isinstance(steps, list):
        for name, step in steps:
            yield from _estimators(step, f"step {name!r}")
        return
    if isinstance(parts, list):
        for part in parts:
            if not isinstance(part[1], str):  # "drop" and "passthrough" are no estimators
                yield from _estimators(part[1], f"{where}, part {part[0]!r}")
        return
    yield where, type(obj)


def _has_converter(cls: type) -> bool:
    from skl2onnx._supported_operators import sklearn_operator_name_map

    return cls in sklearn_operator_name_map


def _reads_columns(obj: Any, schema: Mapping[str, Any] | None) -> bool:
    """Whether a DataFrame goes in as one input per column (a ColumnTransformer first, or text columns)."""
    if not schema or schema.get("kind") != "dataframe":
        return False
    if any(c.get("family") not in ("float", "int", "uint", "bool") for c in schema.get("columns", ())):
        return True
    first = obj
    while isinstance(getattr(first, "steps", None), list):
        first = first.steps[0][1]
    return type(first).__name__ == "ColumnTransformer"


def _tensor_type(graph_input: GraphInput) -> Any:
    from skl2onnx.common import data_types

    types = {"float32": data_types.FloatTensorType, "float64": data_types.DoubleTensorType,
             "int64": data_types.Int64TensorType, "bool": data_types.BooleanTensorType,
             "str": data_types.StringTensorType}
    return types[graph_input.dtype](list(graph_input.shape))


def _int_flag_converters(obj: Any) -> dict[type, Any]:
    """skl2onnx's own converters for the estimators in ``obj``, given a container that turns Python and numpy
    bools in list attributes into ints.

    Some converters (HistGradientBoosting's trees) pass ``False`` in an integer attribute, which
    protobuf 7 refuses ("Expected an int, got a boolean"); the values are unchanged.
    """
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import get_converter

    converters: dict[type, Any] = {}
    for _, cls in _estimators(obj):
        original = get_converter(sklearn_operator_name_map[cls])

        def convert(scope: Any, operator: Any, container: Any, original: Any = original) -> Any:
            return original(scope, operator, _IntFlags(container))

        converters[cls] = convert
    return converters


class _IntFlags:
    """A converter's container whose ``add_node`` gets ints where the converter passed bools in a list."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, *args: Any, **attrs: Any) -> Any:
        import numpy as np

        for key, value in attrs.items():
            if isinstance(value, list) and any(isinstance(v, (bool, np.bool_)) for v in value):
                attrs[key] = [int(v) if isinstance(v, (bool, np.bool_)) else v for v in value]
        return self._container.add_node(*args, **attrs)


def _labels(classes: np.ndarray) -> list[Any]:
    return [c.item() if hasattr(c, "item") else c for c in classes]
