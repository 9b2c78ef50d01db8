"""``load(runtime="auto")``'s one warning when the portable member runs instead of the native model."""

from __future__ import annotations

import warnings
from typing import Any

from modelsafe.portable import RuntimeFallbackWarning

__all__ = ["warn_fallback"]


def warn_fallback(path: Any, native: BaseException, env_report: Any = None, *, stacklevel: int = 2) -> None:
    """Say why the native load was refused, and that the ONNX member (verified) runs instead; with how the
    runtime's environment differs from the one at save, if it does (one warning, not two)."""
    reason = str(native).split("\n", 1)[0]
    differs = env_report is not None and env_report.notable()
    runtime = f" The runtime's environment differs from the one at save: {env_report.summary()}." if differs else ""
    warnings.warn(
        f"{str(path)!r} runs on its portable ONNX member (onnxruntime), not natively: {type(native).__name__}: "
        f"{reason} The member passed every check and predicts the stored sample within its recorded tolerance; "
        f"bundle.runtime is 'onnx'.{runtime} To run natively, fix the cause above (`modelsafe env` lists the saved "
        "versions).", RuntimeFallbackWarning, stacklevel=stacklevel + 1)
