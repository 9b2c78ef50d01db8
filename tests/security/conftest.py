"""Fixtures of the security tests."""

from __future__ import annotations

import pytest

#: What a payload of the attack corpus would create in the current directory if it ever ran.
CANARY = "MODELSAFE_CANARY_"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, and fail if any payload left a canary there."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not list(tmp_path.glob(f"{CANARY}*")), "a payload ran"
