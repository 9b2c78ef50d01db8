"""The requirement set read from a recorded environment: exact pins, PyTorch kept on the CPU, the cache key."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import modelsafe as ms
from modelsafe.envs.installers import choose
from modelsafe.envs.requirements import requirements_of


def _recorded(packages: dict[str, str], *, python: str = "3.11.7", cuda: str | None = None) -> dict:
    return {"python": {"version": python, "implementation": "CPython"},
            "platform": {"system": "Linux", "machine": "x86_64"},
            "packages": {name: {"version": version, "modules": []} for name, version in packages.items()},
            "devices": {"torch_cuda": cuda} if cuda is not None else {}}


def test_pins_are_the_recorded_versions_sorted_without_modelsafe():
    found = requirements_of(_recorded({"scikit-learn": "1.4.2", "numpy": "1.26.4", "modelsafe": "0.0.9"}), "ms 1")
    assert found.pins == ("numpy==1.26.4", "scikit-learn==1.4.2") and found.python == "3.11"
    assert found.needs_pip == () and choose("auto", found) == "uv"


def test_a_local_torch_build_is_pinned_exactly_and_installed_with_pip():
    found = requirements_of(_recorded({"torch": "2.13.0+cpu", "numpy": "2.4.6"}), "ms 1")
    assert found.pins == ("numpy==2.4.6", "torch==2.13.0+cpu")
    assert found.local_builds == ("torch",) and choose("auto", found) == "pip"


def test_a_plain_torch_pin_from_a_cpu_environment_becomes_the_cpu_build_and_a_cuda_one_stays():
    assert requirements_of(_recorded({"torch": "2.13.0"}), "ms").pins == ("torch==2.13.0+cpu",)
    assert requirements_of(_recorded({"torch": "2.13.0"}, cuda="12.1"), "ms").pins == ("torch==2.13.0",)


def test_the_cpu_pin_resolves_to_this_machines_cpu_build_with_pip_and_pulls_no_cuda(tmp_path):
    """What ``installer="pip"`` does with the pin, up to the download: the local CPU wheel, no nvidia-* packages."""
    pins = requirements_of(_recorded({"torch": "2.13.0"}), "ms").pins
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), *pins], check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    installs = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    assert installs["torch"] == "2.13.0+cpu"
    assert not [name for name in installs if name.startswith("nvidia") or name == "triton"]


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9\-]{0,10}", fullmatch=True),
                       st.from_regex(r"[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True), max_size=6))
def test_the_key_depends_on_the_pins_and_not_on_their_order(packages):
    forward = requirements_of(_recorded(packages), "ms 1")
    backward = requirements_of(_recorded(dict(reversed(list(packages.items())))), "ms 1")
    assert forward.key == backward.key
    assert forward.key != requirements_of(_recorded(packages), "ms 2").key  # another modelsafe
    assert forward.key != requirements_of(_recorded(packages, python="3.12.1"), "ms 1").key


def test_an_environment_that_records_nothing_cannot_be_recreated():
    with pytest.raises(ms.FormatError, match="records no environment"):
        requirements_of({}, "ms", "old.msafe")
    with pytest.raises(ms.EnvironmentBuildError, match="not a version an index can serve") as caught:
        requirements_of(_recorded({"mine": "local-build"}), "ms", "x.msafe")
    assert caught.value.package == "mine"
