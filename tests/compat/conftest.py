"""Fixtures of the compatibility suite: the old environment (``.venv-old``, built by ``make old-venv``)."""

from __future__ import annotations

from pathlib import Path

import pytest

OLD_PYTHON = Path(__file__).resolve().parents[2] / ".venv-old" / "bin" / "python"


@pytest.fixture(scope="session")
def old_python() -> Path:
    if not OLD_PYTHON.is_file():
        pytest.fail(f"{OLD_PYTHON} is missing: the compatibility suite needs the old environment. "
                    "Build it with `make old-venv` (`make test` does it first).")
    return OLD_PYTHON
