"""Input-guard warnings collected per request, safely across threads.

``warnings.catch_warnings`` swaps process-wide state, so two requests predicted on two
threads would see (or lose) each other's warnings. Instead the server routes warnings
through one hook, installed at start-up, that hands a warning raised inside
:func:`collect` to that thread's list, and shows every other warning as before
(Python 3.10 to 3.13 keep ``warnings._showwarnmsg``, the hook's place).
:class:`~modelsafe.checks.ranges.InputWarning` is shown every time it is raised (not once
per place in the code), since each request deserves its own.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["install", "collect"]

_local = threading.local()
_lock = threading.Lock()
_installed = False


def install() -> None:
    """Route warnings through the per-thread collector (once per process).

    The hook is ``warnings._showwarnmsg``, which every warning goes through (the C
    implementation of ``warnings.warn`` calls it too) and which ``catch_warnings`` leaves
    in place, so a library that catches warnings around its own code does not unhook it.
    """
    global _installed
    from modelsafe.checks.ranges import InputWarning

    with _lock:
        if _installed:
            return
        shown = warnings._showwarnmsg  # type: ignore[attr-defined]

        def show(message: Any) -> None:
            sink = getattr(_local, "sink", None)
            if sink is not None:
                sink.append(str(message.message))
                return
            shown(message)

        warnings._showwarnmsg = show  # type: ignore[attr-defined]
        warnings.filterwarnings("always", category=InputWarning)
        _installed = True


@contextmanager
def collect() -> Iterator[list[str]]:
    """The warnings raised on this thread inside the block, as their messages."""
    previous = getattr(_local, "sink", None)
    sink: list[str] = []
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = previous
