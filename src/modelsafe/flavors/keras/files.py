"""Opening ``.keras`` files with Keras: the loader, its failures explained, and quiet warnings.

Shared by the flavor's load and by the save-time reload check (:mod:`.save`).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

from modelsafe.errors import EnvironmentMismatchError, FlavorError

__all__ = ["framework_versions", "load_keras_file", "load_failure", "short", "quiet_warnings"]


def framework_versions() -> dict[str, Any]:
    """Keras version and backend, and TensorFlow's version when it is loaded."""
    import keras

    tf = sys.modules.get("tensorflow")
    return {"keras_version": keras.__version__, "backend": keras.config.backend(),
            "tensorflow_version": getattr(tf, "__version__", None)}


def load_keras_file(path: Path, *, custom_objects: dict[str, Any], compile: bool, trusted: bool,
                    saved_versions: Mapping[str, Any] | None, where: str, raw: bool = False) -> Any:
    """``keras.saving.load_model`` with safe_mode off only when the caller trusted Lambda code."""
    import keras

    try:
        return keras.saving.load_model(path, custom_objects=custom_objects, compile=compile, safe_mode=not trusted)
    except Exception as exc:
        if raw:
            raise
        raise load_failure(exc, saved_versions or {}, where) from exc


def load_failure(exc: BaseException, saved: Mapping[str, Any], where: str) -> Exception:
    """A modelsafe error explaining why Keras could not rebuild a saved model."""
    current = framework_versions()
    old, new = saved.get("keras_version"), current["keras_version"]
    if old and old != new:
        return EnvironmentMismatchError(
            f"Keras {new} could not rebuild {where}, which Keras {old} wrote ({type(exc).__name__}: {short(exc)}). "
            "Layers and their configs change between Keras versions. Install the saving version with "
            f"pip install 'keras=={old}', or re-export the model with Keras {new}.",
            saved=old, current=new, packages=["keras"])
    return FlavorError(
        f"Keras {new} could not rebuild {where} ({type(exc).__name__}: {short(exc)}). The model may need custom "
        "code that changed since saving. Run `modelsafe doctor` on the artifact, or re-export the model.",
        reason=str(exc))


def short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
