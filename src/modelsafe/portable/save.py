"""``save(..., portable="onnx"|"try-onnx")``: convert the model, check the graph on the sample, store it.

The model's flavor converts it (:meth:`~modelsafe.flavors._base.Flavor.to_onnx`); the graph is
audited as ``load`` will audit it; onnxruntime runs it on the verification sample through the
same input guard ``predict`` uses; every output modelsafe recorded for verification is
compared: labels and integers exactly, scores within :func:`onnx_tolerance`. Only a graph that
passes is written (``portable/model.onnx``, and ``portable/model.onnx.data`` for a graph too
large for one protobuf message), with its record for the manifest.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from modelsafe.errors import (
    FlavorNotInstalledError,
    ModelsafeError,
    SaveError,
    UnsupportedModelError,
)
from modelsafe.flavors._base import ComponentStore, Flavor
from modelsafe.flavors.onnx_graph import OnnxGraph
from modelsafe.portable import GRAPH, HINT, PortableWarning
from modelsafe.portable.runtime import OnnxModel, OnnxRunner, create_session

__all__ = ["CHOICES", "EXTERNAL_DATA_ABOVE", "onnx_tolerance", "save_portable"]

CHOICES = ("onnx", "try-onnx")
#: float32 keeps 24 significant bits. A converted graph computes in float32 where the native
#: model may use float64, and sums in another order: the tolerance leaves it 10 of those bits.
FLOAT32_RTOL = 2.0**10 * float(np.finfo(np.float32).eps)
#: Graphs larger than this keep their tensors in an external-data member (protobuf stops at 2 GiB).
EXTERNAL_DATA_ABOVE = 1 << 30
EXTERNAL_DATA = GRAPH + ".data"

Replay = Callable[[OnnxModel, OnnxRunner], Callable[[Any], dict[str, Any]]]


def onnx_tolerance(expected: np.ndarray) -> dict[str, float] | None:
    """The tolerance of a graph's output against the native ``expected`` (None: compared exactly).

    ``rtol`` is :data:`FLOAT32_RTOL` (2**10 float32 epsilons, about 1.2e-4); ``atol`` is the same
    fraction of the output's largest magnitude (at least 1), so values near zero in an output of
    large ones are held to the precision float32 gives that output.
    """
    if expected.dtype.kind not in "fc":
        return None
    finite = np.abs(expected[np.isfinite(expected)]) if expected.size else np.zeros(0)
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return {"rtol": FLOAT32_RTOL, "atol": FLOAT32_RTOL * scale}


def save_portable(mode: str, obj: Any, flavor: Flavor, schema: Mapping[str, Any] | None, inputs: Any,
                  recorded: Mapping[str, np.ndarray] | None, store: ComponentStore, replay: Replay,
                  has_preprocess: bool) -> dict[str, Any] | None:
    """Convert, check and write the portable member; its manifest record, or None (``try-onnx`` that failed)."""
    try:
        if has_preprocess:
            raise SaveError(
                "portable= converts the model alone, and this artifact also has preprocess=: an ONNX graph of the "
                "model would get raw input. Put the preprocessing in the model (a scikit-learn Pipeline, layers of "
                "the network) to convert both, or save without portable=.", step="preprocess")
        if recorded is None:
            raise SaveError(
                "portable= needs sample=: the ONNX graph's input signature comes from the sample's schema, and the "
                "graph is checked on it against the model before it is stored. Pass a few input rows.",
                step="sample")
        graph = _convert(obj, flavor, schema, inputs)
        return _check_and_write(graph, recorded, inputs, store, replay)
    except SaveError as exc:
        if mode == "onnx":
            raise
        warnings.warn(f"portable='try-onnx': saved without an ONNX member: {exc}", PortableWarning, stacklevel=4)
        return None


def _convert(obj: Any, flavor: Flavor, schema: Mapping[str, Any] | None, inputs: Any) -> OnnxGraph:
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    try:
        return flavor.to_onnx(obj, schema, inputs)
    except ImportError as exc:
        raise SaveError(
            f"Converting the {flavor.name} model to ONNX needs {getattr(exc, 'name', None) or exc}, which is not "
            f"installed here. Install the converters with: {HINT}", step="convert", type_name=kind) from exc
    except UnsupportedModelError as exc:
        raise SaveError(f"The model could not be converted to ONNX: {exc}", step=getattr(exc, "step", "convert"),
                        type_name=getattr(exc, "type_name", kind)) from exc
    except ModelsafeError:
        raise
    except Exception as exc:
        raise SaveError(
            f"The {flavor.name} model ({kind}) could not be converted to ONNX: {type(exc).__name__}: {exc}. The "
            "converter does not support something in it; simplify that part, or save without portable=.",
            step="convert", type_name=kind) from exc


def _check_and_write(graph: OnnxGraph, recorded: Mapping[str, np.ndarray], inputs: Any, store: ComponentStore,
                     replay: Replay) -> dict[str, Any]:
    from modelsafe.checks.environment import capture_environment
    from modelsafe.portable.load import audit_graph

    missing = [name for name in recorded if name not in graph.outputs]
    if missing:
        raise SaveError(
            f"The ONNX graph gives {', '.join(graph.outputs)} but the model's {', '.join(missing)} was recorded for "
            "verification too, so the graph could not be checked against it. Save without portable=.",
            step="outputs", outputs=missing)
    members, facts = _serialize(graph.model)
    audit_graph(members[GRAPH], facts, {k: v for k, v in members.items() if k != GRAPH}, trusted=())
    outputs = {name: {"graph": graph.outputs[name], "dtype": str(value.dtype),
                      "shape": [None, *value.shape[1:]]} for name, value in recorded.items()}
    external = {k: v for k, v in members.items() if k != GRAPH}
    try:
        model = OnnxModel(create_session(members[GRAPH], external), graph.inputs, outputs, graph.classes)
        actual = replay(model, OnnxRunner())(inputs)
    except FlavorNotInstalledError as exc:
        raise SaveError(f"The graph could not be checked: {exc}", step="run") from exc
    except ModelsafeError:
        raise
    except Exception as exc:
        raise SaveError(f"onnxruntime failed on the verification sample with the converted graph "
                        f"({graph.converter}): {type(exc).__name__}: {exc}. Save without portable=.",
                        step="run") from exc
    _compare(recorded, actual, outputs, graph.converter)
    for name, data in members.items():
        store.write(name, data)
    return {"format": "onnx", "graph": GRAPH, "external_data": sorted(external), "converter": graph.converter,
            "producer": facts.producer, "opsets": facts.opsets, "inputs": [i.to_dict() for i in graph.inputs],
            "outputs": outputs, "classes": graph.classes, "rows": _rows(inputs),
            "environment": capture_environment(["onnxruntime", "numpy"])}


def _compare(recorded: Mapping[str, np.ndarray], actual: Mapping[str, Any], outputs: dict[str, dict[str, Any]],
             converter: str) -> None:
    from modelsafe.checks.verify import compare_output

    failed = []
    for name, expected in recorded.items():
        tolerance = onnx_tolerance(expected)
        check = compare_output(name, expected, actual[name], tolerance)
        outputs[name]["tolerance"] = tolerance
        if tolerance is not None and check.ok:
            diff = np.abs(np.asarray(actual[name], dtype=np.float64) - expected.astype(np.float64))
            outputs[name]["max_difference"] = float(np.nanmax(diff)) if diff.size else 0.0
        if not check.ok:
            failed.append(check)
    if failed:
        worst = failed[0]
        raise SaveError(
            f"The ONNX graph ({converter}) predicts differently from the model on the verification sample, so it "
            "was not stored:\n" + "\n".join(c.describe() for c in failed) + "\nA portable member must predict what "
            "the model predicts. Common causes: float32 thresholds in tree models flipping a split for values near "
            "it, an unsupported option of an estimator. Save without portable=, or change the model so that the "
            "converter supports it.", step="verify", output=worst.output, max_difference=worst.max_difference,
            position=worst.position, outputs=[c.output for c in failed])


def _serialize(model: Any) -> tuple[dict[str, bytes], Any]:
    """The graph's member bytes (``model.onnx``, and ``model.onnx.data`` for a large graph) and its facts."""
    from modelsafe.security._onnx import read_model

    if model.ByteSize() <= EXTERNAL_DATA_ABOVE:
        data = model.SerializeToString()
        return {GRAPH: data}, read_model(data)
    import tempfile
    from pathlib import Path

    import onnx

    with tempfile.TemporaryDirectory(prefix="modelsafe-onnx-") as folder:
        path = Path(folder) / GRAPH
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=EXTERNAL_DATA, size_threshold=1024)
        members = {GRAPH: path.read_bytes()}
        if (Path(folder) / EXTERNAL_DATA).is_file():  # a graph whose tensors are all small keeps them inline
            members[EXTERNAL_DATA] = (Path(folder) / EXTERNAL_DATA).read_bytes()
    return members, read_model(members[GRAPH])


def _rows(x: Any) -> int:
    if isinstance(x, dict):
        return max((_rows(v) for v in x.values()), default=0)
    if isinstance(x, (list, tuple)):
        return max((_rows(v) for v in x), default=0)
    return len(x) if hasattr(x, "__len__") else 1
