"""``ms.export``: write an artifact's model in another tool's format (ONNX, MLflow, Docker, Hugging Face).

Each target lives with the capability that knows the format, found by a *string* import path
(as the flavor registry does), so this module imports none of them. Every export loads the
artifact with all of ``load``'s checks first (or reads only what the target needs after the
same checks), so nothing unverified leaves through an export.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["export", "EXPORTERS"]

#: Target name -> ("module:function", extra to install). The function takes
#: ``(path, destination, **options)`` and returns the path it wrote.
EXPORTERS: dict[str, tuple[str, str]] = {
    "huggingface": ("modelsafe.flavors.transformers.export:export_pretrained", "transformers"),
    "onnx": ("modelsafe.portable.export:export_onnx", "onnx"),
    "mlflow": ("modelsafe.integrations.mlflow_export:export_mlflow", "mlflow"),
    "docker": ("modelsafe.envs.docker:export_docker", "envs"),
}


def export(path: str | os.PathLike[str], destination: str | os.PathLike[str], *, to: str, **options: Any) -> Path:
    """Write the model of the artifact at ``path`` to ``destination`` in the format ``to``.

    Parameters
    ----------
    path
        The artifact.
    destination
        Where to write (a file or a folder, as the target's format has it).
    to
        The target format: one of ``EXPORTERS`` (``"onnx"``, ``"mlflow"``, ``"docker"``,
        ``"huggingface"``, as the installed capabilities provide).
    **options
        Options of that target, and ``load``'s keywords (``trust_code=``, ``env=``...).

    Returns
    -------
    pathlib.Path
        What was written.

    Raises
    ------
    ValueError
        ``to`` names no known target.

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.export("/tmp/doc-model.msafe", "/tmp/doc-model-mlflow", to="mlflow")   # doctest: +SKIP
    PosixPath('/tmp/doc-model-mlflow')
    """
    exporter = _exporter(to)
    return Path(exporter(path, destination, **options))


def _exporter(to: str) -> Callable[..., Any]:
    target = EXPORTERS.get(to)
    if target is None:
        known = ", ".join(repr(name) for name in sorted(EXPORTERS)) or "none"
        raise ValueError(f"Invalid `to`: expected one of {known}. Received: to={to!r}")
    module_name, function = target[0].split(":")
    return getattr(importlib.import_module(module_name), function)
