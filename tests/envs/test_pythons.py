"""Finding the recorded Python: the running interpreter, else ``python3.X`` on PATH (each one run and checked),
else an installed uv-managed Python; a launcher that lies about its version or does not run is not taken."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

import modelsafe as ms
from modelsafe.envs import pythons


def _path_with(tmp_path: Path, name: str, target: str | None) -> str:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    link = folder / name
    if target is None:  # a launcher that fails, as a pyenv shim without that version does
        link.write_text("#!/bin/sh\necho 'pyenv: python3.11: command not found' >&2\nexit 127\n")
        link.chmod(0o755)
    else:
        link.symlink_to(target)
    return str(folder)


def _another_running_python(monkeypatch) -> None:
    """This process as if it ran Python 3.99: only the running interpreter's own answer changes."""
    fake = types.SimpleNamespace(version_info=(3, 99, 0), executable=sys.executable)
    monkeypatch.setattr(pythons, "sys", fake)


def test_python_on_path_is_run_and_taken(tmp_path, monkeypatch):
    _another_running_python(monkeypatch)
    monkeypatch.setenv("PATH", _path_with(tmp_path, "python3.11", sys.executable) + os.pathsep + "/usr/bin:/bin")
    found = pythons.find_python("3.11")
    assert (found.source, found.version, found.path.name) == ("PATH", "3.11", "python3.11")


def test_a_launcher_of_another_version_or_one_that_fails_is_not_taken(tmp_path, monkeypatch):
    monkeypatch.setattr(pythons, "uv_binary", lambda: None)
    monkeypatch.setenv("PATH", _path_with(tmp_path, "python3.12", sys.executable) + os.pathsep + "/bin")
    with pytest.raises(ms.EnvironmentBuildError) as info:
        pythons.find_python("3.12")
    assert info.value.reason == "python" and "is CPython 3.11" in str(info.value)
    assert "uv python install 3.12" in str(info.value)
    _another_running_python(monkeypatch)
    monkeypatch.setenv("PATH", _path_with(tmp_path, "python3.11", None) + os.pathsep + "/bin")
    with pytest.raises(ms.EnvironmentBuildError) as info:
        pythons.find_python("3.11")
    assert "did not run (exit 127: pyenv: python3.11: command not found)" in str(info.value)


def test_no_uv_managed_python_is_said_among_what_was_tried(tmp_path, monkeypatch):
    if pythons.uv_binary() is None:
        pytest.fail("uv is a dependency of modelsafe[envs]: it must be installed in the test environment")
    monkeypatch.setenv("PATH", str(tmp_path))  # no python3.X anywhere on PATH
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "uv-pythons"))  # and no uv-managed one
    with pytest.raises(ms.EnvironmentBuildError) as info:
        pythons.find_python("3.10")
    assert info.value.tried[-2:] == ["no python3.10 on PATH", "no uv-managed Python 3.10 is installed"]


def test_an_installed_uv_managed_python_is_found_and_taken(tmp_path, monkeypatch):
    """Nothing can be downloaded here, so the installation uv finds is laid out by hand as uv lays out its own
    (``<install dir>/cpython-<version>-<os>-<arch>-<libc>/bin/python3.X``), around this very interpreter; uv's
    ``python find --managed-python`` then finds it, and it is run and checked like any other."""
    import platform

    if pythons.uv_binary() is None:
        pytest.fail("uv is a dependency of modelsafe[envs]: it must be installed in the test environment")
    _another_running_python(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no python3.X anywhere on PATH
    version, minor = platform.python_version(), f"{sys.version_info[0]}.{sys.version_info[1]}"
    managed = tmp_path / "uv-pythons"
    bin_dir = managed / f"cpython-{version}-linux-{platform.machine()}-gnu" / "bin"
    bin_dir.mkdir(parents=True)
    for name in (f"python{minor}", "python3", "python"):
        (bin_dir / name).symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(managed))
    found = pythons.find_python(minor)
    assert (found.source, found.version) == ("uv", minor)
    assert found.path.parent == bin_dir
