"""scikit-learn flavor: estimators, Pipelines, ColumnTransformers, FeatureUnions.

scikit-learn has no native format, so the object graph is stored as a pickle stream
with its arrays out of band (see :mod:`modelsafe.flavors._pickled`), read back only
through the restricted unpickler. Decision-tree node arrays are validated on load.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Mapping

from modelsafe.errors import SaveError
from modelsafe.flavors._base import (
    ComponentSource,
    ComponentStore,
    LoadOptions,
    SavedComponent,
)
from modelsafe.flavors._pickled import GraphFlavor

#: Methods whose outputs are recorded for verification, when the estimator has them.
_EXTRA_OUTPUTS = ("predict_proba",)


class SklearnFlavor(GraphFlavor):
    name = "sklearn"
    version = 1

    def save(self, obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
        saved = super().save(obj, store, options)
        saved.modules.add("sklearn")
        return saved

    def load(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
        # scikit-learn warns once per estimator when versions differ; modelsafe's own check has
        # compared the environment already and re-verifies the sample, so its warning stands alone.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Trying to unpickle estimator")
            return super().load(source, data, options)

    def graph_replay_context(self, obj: Any) -> contextlib.AbstractContextManager[None]:
        """joblib's sequential backend: an estimator with ``n_jobs`` starts no threads for a few rows
        (scikit-learn's Parallel follows joblib's configuration); ``n_jobs`` itself is untouched."""
        import joblib

        return joblib.parallel_config(backend="sequential")

    def to_onnx(self, obj: Any, schema: Mapping[str, Any] | None, sample: Any) -> Any:
        """The model as an ONNX graph, by skl2onnx (see :mod:`modelsafe.flavors.sklearn.onnx`)."""
        from modelsafe.flavors.sklearn.onnx import to_onnx

        return to_onnx(obj, schema, sample)

    def outputs(self, obj: Any, x: Any) -> dict[str, Any]:
        if not hasattr(obj, "predict"):
            if not hasattr(obj, "transform"):
                raise SaveError(
                    f"{type(obj).__name__} has neither predict nor transform, so a verification sample "
                    "cannot be replayed after loading. Save it with sample=None.",
                )
            return {"transform": obj.transform(x)}
        outputs = {"predict": obj.predict(x)}
        for method in _EXTRA_OUTPUTS:
            if hasattr(obj, method) and hasattr(obj, "predict"):
                try:
                    outputs[method] = getattr(obj, method)(x)
                except (AttributeError, NotImplementedError, ValueError):
                    continue  # e.g. SVC(probability=False): the method exists but cannot run
        return outputs
