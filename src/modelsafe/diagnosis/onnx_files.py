"""``doctor`` of ONNX content: an ``.onnx`` file, or a modelsafe artifact with a portable ONNX member.

What the scan found (:mod:`modelsafe.security._onnx`: external data outside the model's folder,
custom-op domains) as specific problems; a missing onnxruntime; an external-data file that is
not beside the model; and, for an artifact whose framework is not installed here, that its
portable member still runs (``load(runtime="onnx")``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe._reports import Problem

if TYPE_CHECKING:
    from modelsafe.security.scanner import ScanReport

__all__ = ["onnx_checks"]

_HINT = "pip install 'modelsafe[onnx]'"


def onnx_checks(path: Path, report: ScanReport, facts: dict[str, Any]) -> list[Problem]:
    from modelsafe.security._onnx import WHY_FIX

    graphs = [item for item in report.items if item.kind == "onnx"]
    problems = []
    for finding in report.findings:
        if finding.kind.startswith("onnx-"):
            _, why, fix = WHY_FIX[finding.kind.removeprefix("onnx-")]
            problems.append(Problem(what=f"{finding.what} (in {finding.location or path.name})", why=why,
                                    fix=fix.replace("'<domain>'", repr(finding.subject)), subject=finding.subject))
    if graphs and importlib.util.find_spec("onnxruntime") is None:
        problems.append(Problem(
            what="the ONNX model needs onnxruntime, which is not installed here",
            why="modelsafe runs ONNX graphs with onnxruntime; without it nothing can be predicted from this file",
            fix=f"install it: {_HINT} (or pip install onnxruntime)", subject="onnxruntime"))
    if report.kind == "onnx" and path.is_file():
        for location in graphs[0].facts.get("external_data", ()):
            if location and not (path.parent / location).is_file() and not any(p.subject == location for p in problems):
                problems.append(Problem(
                    what=f"the ONNX model keeps tensors in {location!r}, which is not beside it in {path.parent}",
                    why="the runtime reads those tensors from that file when the model is loaded, and fails without it",
                    fix=f"copy {location!r} from where the model came from into {path.parent}", subject=location))
    problems += _portable_fallback(path, report)
    return problems


def _portable_fallback(path: Path, report: ScanReport) -> list[Problem]:
    """An artifact whose framework is missing here, but whose portable member runs."""
    if not (report.kind.startswith("zip:modelsafe") or report.kind == "modelsafe-directory"):
        return []
    from modelsafe.artifact.reader import manifest_of
    from modelsafe.errors import ModelsafeError
    from modelsafe.flavors import REGISTRY

    try:
        manifest = manifest_of(path, None)
    except ModelsafeError:
        return []  # the artifact's own checks report it
    spec = REGISTRY.get(manifest.flavor)
    missing = [m for m in (spec.requires if spec else ()) if importlib.util.find_spec(m) is None]
    if not manifest.portable or not missing:
        return []
    return [Problem(
        what=f"the {manifest.flavor} model needs {', '.join(missing)}, which is not installed here, but the artifact "
             f"has a portable ONNX member ({manifest.portable.get('converter', 'onnx')})",
        why="the member was checked at save against the model's outputs on the verification sample and runs on "
            "onnxruntime alone",
        fix=f"load it with ms.load({str(path)!r}, runtime='onnx') (or runtime='auto'), or install {spec.hint if spec else ''}",
        severity="warning", subject="portable")]
