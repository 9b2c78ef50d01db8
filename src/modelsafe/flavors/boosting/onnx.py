"""XGBoost and LightGBM models as ONNX graphs, with onnxmltools (``save(..., portable="onnx")``).

The scikit-learn wrappers are converted (classifiers give labels and a probability tensor,
regressors a value per row); the model takes one float matrix, its columns in the recorded
order. onnxmltools reads XGBoost's trees by feature index (``f0``, ``f1``...), so a model fit
on a DataFrame is converted from a copy whose booster forgets the column names (the columns
are matched by name before the graph, by the input guard).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from modelsafe.errors import UnsupportedModelError
from modelsafe.flavors.onnx_graph import OnnxGraph, graph_inputs

__all__ = ["to_onnx"]

#: The highest opset onnxmltools' tree converters write.
TARGET_OPSET = 15


def to_onnx(library: str, kind: str, obj: Any, schema: Mapping[str, Any] | None) -> OnnxGraph:
    """``obj`` (an XGBoost or LightGBM model of ``kind``) as an ONNX graph fed one float matrix."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    if kind not in ("classifier", "regressor"):
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        raise UnsupportedModelError(
            f"{name} is a {kind}: modelsafe converts {library}'s scikit-learn classifiers and regressors to ONNX "
            f"(onnxmltools), not raw boosters or rankers. Train and save the wrapper ({library}.XGBClassifier, "
            "LGBMRegressor...), or save without portable=.", type_name=name, kind=kind)
    indexed = _indexed_features(obj) if library == "xgboost" else obj
    inputs = graph_inputs(schema, per_column=False)
    initial = [(inputs[0].name, FloatTensorType(list(inputs[0].shape)))]
    if library == "xgboost":
        model = onnxmltools.convert_xgboost(indexed, initial_types=initial, target_opset=TARGET_OPSET)
    else:
        extra = {"zipmap": False} if kind == "classifier" else {}
        model = onnxmltools.convert_lightgbm(obj, initial_types=initial, target_opset=TARGET_OPSET, **extra)
    names = [o.name for o in model.graph.output]
    outputs = {"predict": names[0]}
    if kind == "classifier":
        outputs["predict_proba"] = names[1]
    classes = getattr(obj, "classes_", None) if kind == "classifier" else None
    return OnnxGraph(model=model, inputs=inputs, outputs=outputs, converter=f"onnxmltools {onnxmltools.__version__}",
                     classes=None if classes is None else [c.item() if hasattr(c, "item") else c for c in classes])


def _indexed_features(obj: Any) -> Any:
    """A copy of the XGBoost wrapper whose booster names its features by index, as onnxmltools reads them."""
    if getattr(obj, "enable_categorical", False):
        raise UnsupportedModelError(
            "The XGBoost model was trained with enable_categorical=True: ONNX's tree ensembles have no categorical "
            "splits, so it cannot be converted. One-hot encode the categories before the model, or save without "
            "portable=.", type_name=f"{type(obj).__module__}.{type(obj).__qualname__}")
    clone = copy.deepcopy(obj)
    booster = clone.get_booster()
    booster.feature_names = None
    booster.feature_types = None
    return clone
