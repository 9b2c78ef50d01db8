"""Fixtures of the compatibility suite: the old environment (``.venv-old``, built by ``make old-venv``)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OLD_PYTHON = REPO / ".venv-old" / "bin" / "python"
#: The oldest scikit-learn the project supports (1.3.2), for the estimator zoo (``make old-venv`` builds both).
SK13_PYTHON = REPO / ".venv-sklearn13" / "bin" / "python"


def _python(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"{path} is missing: the compatibility suite needs the old environments. "
                    "Build them with `make old-venv` (`make test` does it first).")
    return path


@pytest.fixture(scope="session")
def old_python() -> Path:
    return _python(OLD_PYTHON)


@pytest.fixture(scope="session")
def sklearn13_python() -> Path:
    return _python(SK13_PYTHON)
