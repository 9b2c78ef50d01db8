"""Running code in one environment of the compatibility suite or the other (imports no test framework)."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path


def run(python: Path, code: str, cwd: Path, *, check: bool = True, timeout: int = 1200) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) with ``python`` in ``cwd``, without this process's PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(python), "-c", textwrap.dedent(code)], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{python} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
