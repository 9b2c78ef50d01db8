"""Environments that cannot be built: each failure named, with the package and what to do, and nothing half-built used.

The artifacts are real ones whose recorded environment says what an artifact saved elsewhere
would: another Python, a version the index never had, a version without a wheel for this
platform. The index is the real one, or a closed port on the loopback for "no network".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import modelsafe as ms
from modelsafe.envs import cache

from .conftest import copy_wheels, edited_copy


@pytest.fixture(scope="module")
def tiny(saved_in_main: Path) -> Path:
    return saved_in_main / "pipeline.msafe"


@pytest.fixture(scope="module")
def modelsafe_wheel(envs_root: Path) -> Path:
    """This modelsafe's wheel, built (once) while the index is reachable: the network tests are about the packages."""
    from modelsafe.envs.source import running_modelsafe

    return running_modelsafe().wheel(Path(sys.executable), f"{sys.version_info[0]}.{sys.version_info[1]}", "uv")


def _nothing_usable(root: Path) -> None:
    """No environment under ``root`` is marked finished after a failed build."""
    for folder in (root / "envs").glob("*") if (root / "envs").is_dir() else ():
        assert cache.EnvFolder(folder).record() is None, folder


def test_a_python_not_on_this_machine_is_named_with_how_to_install_it(tiny, tmp_path, monkeypatch, envs_root):
    artifact = edited_copy(tiny, tmp_path, python="3.12.1")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # this machine's Debian has python3.11 only
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "no-managed-pythons"))
    before = sorted((envs_root / "envs").iterdir()) if (envs_root / "envs").is_dir() else []
    with pytest.raises(ms.EnvironmentBuildError) as caught:
        ms.recreate_env(artifact)
    error = caught.value
    assert error.reason == "python" and error.python == "3.12"
    assert "saved with CPython 3.12" in str(error) and "uv python install 3.12" in str(error)
    assert any("python3.12" in line for line in error.tried)
    after = sorted((envs_root / "envs").iterdir()) if (envs_root / "envs").is_dir() else []
    assert after == before  # nothing was started


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_version_the_index_does_not_have_is_named(tiny, tmp_path, monkeypatch, envs_root, installer):
    artifact = edited_copy(tiny, tmp_path, packages={"numpy": "2.4.6", "scikit-learn": "1.4.99"})
    root = tmp_path / "cache"
    copy_wheels(envs_root, root)
    monkeypatch.setenv("MODELSAFE_ENVS_DIR", str(root))
    with pytest.raises(ms.EnvironmentBuildError) as caught:
        ms.recreate_env(artifact, installer=installer)
    error = caught.value
    assert (error.reason, error.package, error.version, error.installer) == ("version-missing", "scikit-learn",
                                                                             "1.4.99", installer)
    assert "needs scikit-learn==1.4.99, and the package index has no such version" in str(error)
    assert "re-save it" in str(error)
    _nothing_usable(root)


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_version_without_a_wheel_for_this_platform_is_named(tiny, tmp_path, monkeypatch, envs_root, installer):
    artifact = edited_copy(tiny, tmp_path, packages={"numpy": "1.26.4", "scikit-learn": "0.24.2"})  # CPython <= 3.9
    root = tmp_path / "cache"
    copy_wheels(envs_root, root)
    monkeypatch.setenv("MODELSAFE_ENVS_DIR", str(root))
    with pytest.raises(ms.EnvironmentBuildError) as caught:
        ms.recreate_env(artifact, installer=installer)
    error = caught.value
    assert (error.reason, error.package, error.version) == ("no-wheel", "scikit-learn", "0.24.2")
    assert "scikit-learn==0.24.2 has no wheel for CPython 3.11" in str(error)
    _nothing_usable(root)


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_version_this_modelsafe_cannot_run_with_is_named(tiny, tmp_path, monkeypatch, envs_root, installer):
    artifact = edited_copy(tiny, tmp_path, packages={"numpy": "1.23.5"})  # modelsafe needs numpy >= 1.24
    root = tmp_path / "cache"
    copy_wheels(envs_root, root)
    monkeypatch.setenv("MODELSAFE_ENVS_DIR", str(root))
    with pytest.raises(ms.EnvironmentBuildError) as caught:
        ms.recreate_env(artifact, installer=installer)
    error = caught.value
    assert error.reason == "modelsafe", str(error)  # the installer's output is in the message when it is not
    assert (error.package, error.version) == ("numpy", "1.23.5")
    assert "records numpy==1.23.5, and this modelsafe needs numpy" in str(error) and "1.24" in error.needs, \
        error.output
    _nothing_usable(root)


def test_no_network_to_the_index_is_named(tiny, tmp_path, monkeypatch, envs_root, modelsafe_wheel):
    artifact = edited_copy(tiny, tmp_path, packages={"numpy": "2.4.6", "scikit-learn": "1.8.0"})
    root = tmp_path / "cache"
    copy_wheels(envs_root, root)
    monkeypatch.setenv("MODELSAFE_ENVS_DIR", str(root))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-uv-cache"))  # nothing cached to fall back on
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.1:9/simple")  # a closed port on the loopback
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    with pytest.raises(ms.EnvironmentBuildError) as caught:
        ms.recreate_env(artifact, installer="uv")
    error = caught.value
    assert error.reason == "network" and error.installer == "uv"
    assert "could not reach the package index" in str(error) and "scikit-learn==1.8.0" in str(error)
    _nothing_usable(root)


def test_no_network_with_pip_is_named(tiny, tmp_path, monkeypatch, envs_root, modelsafe_wheel):
    artifact = edited_copy(tiny, tmp_path, packages={"numpy": "2.4.6", "scikit-learn": "1.8.0"})
    root = tmp_path / "cache"
    copy_wheels(envs_root, root)
    monkeypatch.setenv("MODELSAFE_ENVS_DIR", str(root))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no folders of wheels, no extra indexes
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(ms.EnvironmentBuildError) as caught:
        ms.recreate_env(artifact, installer="pip")
    assert caught.value.reason == "network" and caught.value.installer == "pip"
    _nothing_usable(root)


def test_a_constraint_in_pips_configuration_is_named(tiny, tmp_path, monkeypatch, envs_root):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("scikit-learn<1.5\n")  # as /etc/xdg/pip caps torch on this machine
    root = tmp_path / "cache"
    copy_wheels(envs_root, root)
    monkeypatch.setenv("MODELSAFE_ENVS_DIR", str(root))
    monkeypatch.setenv("PIP_CONSTRAINT", str(constraints))
    with pytest.raises(ms.EnvironmentBuildError) as caught:
        ms.recreate_env(tiny, installer="pip")
    error = caught.value
    assert (error.reason, error.package) == ("constraint", "scikit-learn")
    assert "constrains scikit-learn<1.5" in str(error) and "pip config list" in str(error)
    _nothing_usable(root)


def test_an_unknown_installer_is_a_usage_error(tiny):
    with pytest.raises(ValueError, match="Invalid `installer`: expected one of 'auto', 'uv', 'pip'"):
        ms.recreate_env(tiny, installer="conda")


def test_the_command_line_says_what_failed_and_exits_1(tiny, tmp_path, cli, monkeypatch):
    artifact = edited_copy(tiny, tmp_path, python="3.12.1")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "none"))
    proc = cli("env", str(artifact), "--recreate")
    assert proc.returncode == 1
    assert "EnvironmentBuildError" in proc.stdout and "uv python install 3.12" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
