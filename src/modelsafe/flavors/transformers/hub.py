"""No hub: importing transformers for PyTorch only, and the offline switches held during a load.

Loading never asks the Hugging Face Hub for anything: every ``from_pretrained`` this flavor
calls reads a private temporary folder with ``local_files_only=True``. On top of that,
:func:`offline` holds the hub's offline switches (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``,
``HF_DATASETS_OFFLINE`` and ``huggingface_hub.constants.HF_HUB_OFFLINE``) for the duration,
so code inside transformers that would look something up behaves as it does without a
network, even where a network exists. Everything is restored afterwards.

:func:`import_transformers` imports transformers with ``USE_TF=0`` and ``USE_FLAX=0`` set for
the duration of the import when the caller has not chosen: this flavor handles PyTorch
models, and transformers would otherwise import TensorFlow (seconds) whenever it is installed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any, Iterator

__all__ = ["OFFLINE_VARIABLES", "import_transformers", "offline"]

#: The variables the hub libraries read to stay offline.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_LOCK = threading.RLock()
_depth = 0
_saved: dict[str, str | None] = {}
_saved_constant: Any = None


def import_transformers() -> Any:
    """``import transformers``, without TensorFlow or Flax unless the caller asked for them."""
    if "transformers" in sys.modules:
        return sys.modules["transformers"]
    with _LOCK:
        chosen = {name: os.environ.get(name) for name in ("USE_TF", "USE_FLAX")}
        for name, value in chosen.items():
            if value is None:
                os.environ[name] = "0"
        try:
            import transformers
        finally:
            for name, value in chosen.items():
                if value is None:
                    os.environ.pop(name, None)
    return transformers


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Hold the hub's offline switches while the block runs (re-entrant; restored on exit)."""
    global _depth, _saved_constant
    with _LOCK:
        if _depth == 0:
            _saved.clear()
            _saved.update({name: os.environ.get(name) for name in OFFLINE_VARIABLES})
            os.environ.update({name: "1" for name in OFFLINE_VARIABLES})
            constants = _hub_constants()
            _saved_constant = getattr(constants, "HF_HUB_OFFLINE", None) if constants is not None else None
            if constants is not None:
                constants.HF_HUB_OFFLINE = True
        _depth += 1
    try:
        yield
    finally:
        with _LOCK:
            _depth -= 1
            if _depth == 0:
                for name, value in _saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
                constants = _hub_constants()
                if constants is not None and _saved_constant is not None:
                    constants.HF_HUB_OFFLINE = _saved_constant


def _hub_constants() -> Any:
    """``huggingface_hub.constants`` (its switch is read at call time), or None when not installed."""
    try:
        import huggingface_hub.constants as constants
    except ImportError:  # pragma: no cover - transformers requires huggingface_hub
        return None
    return constants
