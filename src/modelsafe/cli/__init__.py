"""The ``modelsafe`` command line: parse, call the public API, render, map errors to exit codes.

Exit codes: 0 all good; 1 a check failed (unsafe content, verification failed, integrity,
environment mismatch under ``--strict``); 2 usage error or unreadable input. No traceback
unless ``-v``. The group and what commands share are in :mod:`._app`; each module beside it
registers its commands on the group when imported here.
"""

from __future__ import annotations

from modelsafe.cli import artifacts  # noqa: F401 - registers inspect, verify, env, scan, doctor, convert
from modelsafe.cli import batch  # noqa: F401 - registers predict
from modelsafe.cli import export  # noqa: F401 - registers export
from modelsafe.cli import serve  # noqa: F401 - registers serve
from modelsafe.cli import signing  # noqa: F401 - registers keygen, sign
from modelsafe.cli._app import EXIT_FAILED, EXIT_OK, EXIT_USAGE, cli, main

__all__ = ["cli", "main", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]
