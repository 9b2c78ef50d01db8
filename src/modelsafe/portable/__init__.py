"""A portable ONNX member: the model still predicts where its framework cannot be loaded.

``ms.save(model, path, sample=X, portable="onnx")`` converts the model with its flavor's
converter (skl2onnx, onnxmltools, torch.onnx, Keras' export), runs the graph with
onnxruntime on the verification sample, and stores it as ``portable/model.onnx`` only when
its labels match exactly and its scores within a tolerance derived from float32 precision
(recorded in the manifest's ``portable`` record with the largest difference seen).
``portable="try-onnx"`` saves the native artifact with one warning when the model cannot
be converted.

``ms.load(path, runtime="onnx")`` runs that member with onnxruntime and never imports the
model's framework; ``runtime="auto"`` loads natively and falls back to the member, with one
:class:`RuntimeFallbackWarning`, when the native load is refused for environment reasons.
Every check of ``load`` still runs: integrity, the graph's audit (:mod:`modelsafe.security._onnx`:
external data inside the artifact only, standard operator domains unless trusted), the
environment of the runtime, and verification against the recorded tolerance.

The parts: :mod:`.save` (conversion and the check at save), :mod:`.feeds` (input to the
graph), :mod:`.runtime` (the onnxruntime-backed model), :mod:`.load` (the load steps' work),
:mod:`.export` (``ms.export(..., to="onnx")``).
"""

from __future__ import annotations

__all__ = ["GRAPH", "HINT", "PREFIX", "PortableWarning", "RuntimeFallbackWarning"]

#: Members of the portable component live under this prefix.
PREFIX = "portable"
#: The ONNX graph's member (under :data:`PREFIX`).
GRAPH = "model.onnx"
#: How to install what the portable member needs.
HINT = "pip install 'modelsafe[onnx]'"


class PortableWarning(UserWarning):
    """``save(portable="try-onnx")`` stored no ONNX member: the message names the step that could not be converted."""


class RuntimeFallbackWarning(UserWarning):
    """``load(runtime="auto")`` could not load the model natively and runs its ONNX member: the message says why."""
