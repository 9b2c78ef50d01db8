"""One thread for the boosting libraries while a verification sample replays, reaching calls made by others.

A few sample rows cost less than handing them to a pool of OpenMP threads (on a busy
machine each parallel region also waits for every thread to be scheduled). These
settings reach any call, so they also hold for a model embedded in a Pipeline, which the
Pipeline calls itself; the model's own ``n_jobs`` / ``nthread`` / ``num_threads`` are not
changed, and the previous setting comes back when the replay ends.

* XGBoost sizes each parallel region by OpenMP's thread count of the calling thread:
  :func:`openmp_one_thread` lowers it with threadpoolctl, for this thread only.
* LightGBM sets OpenMP's count itself from ``num_threads`` at each call; its C API caps
  that count in the whole process (``LGBM_SetMaxThreads``): :func:`lightgbm_one_thread`.
  Another thread running LightGBM meanwhile runs on one thread for those milliseconds,
  and computes the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Any, Iterator

__all__ = ["lightgbm_one_thread", "openmp_one_thread"]

_lock = threading.Lock()
_controller: Any = None
#: Replays inside lightgbm_one_thread, and LightGBM's cap before the first of them.
_lightgbm = {"depth": 0, "previous": -1}


def openmp_one_thread() -> contextlib.AbstractContextManager[Any]:
    """One OpenMP thread for this thread's parallel regions (every OpenMP runtime loaded when first used)."""
    global _controller
    with _lock:
        if _controller is None:  # looking through the loaded libraries costs milliseconds: once per process
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="openmp")


@contextlib.contextmanager
def lightgbm_one_thread() -> Iterator[None]:
    """LightGBM capped at one thread in this process, as long as any replay runs inside this context."""
    import lightgbm.basic

    lib = getattr(lightgbm.basic, "_LIB", None)
    get, put = (getattr(lib, name, None) for name in ("LGBM_GetMaxThreads", "LGBM_SetMaxThreads"))
    if get is None or put is None:  # a LightGBM without the cap: its threads as configured
        yield
        return
    with _lock:
        if _lightgbm["depth"] == 0:
            found = ctypes.c_int(-1)  # -1: LightGBM's default (no cap)
            get(ctypes.byref(found))
            _lightgbm["previous"] = found.value
            put(ctypes.c_int(1))
        _lightgbm["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _lightgbm["depth"] -= 1
            if _lightgbm["depth"] == 0:
                put(ctypes.c_int(_lightgbm["previous"]))
