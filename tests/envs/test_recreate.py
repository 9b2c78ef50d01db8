"""ms.recreate_env against the real package index: exact versions, the cache, the lock, interrupted builds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import modelsafe as ms
from modelsafe.checks.environment import Level
from modelsafe.envs import cache

from .conftest import OLD_VERSIONS, copy_wheels, run


def _installed(python: str, names: list[str]) -> dict[str, str]:
    code = f"import importlib.metadata as m, json; print(json.dumps({{n: m.version(n) for n in {names!r}}}))"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(proc.stdout)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for folder in ("envs", "wheels") if (root / folder).is_dir()
                  for p in (root / folder).iterdir())


def test_an_artifact_saved_in_the_old_environment_is_refused_here_under_strict(saved_in_old):
    with pytest.raises(ms.EnvironmentMismatchError) as caught:
        ms.load(saved_in_old / "pipeline.msafe", env="strict")
    assert {"numpy", "pandas", "scikit-learn"} <= set(caught.value.packages)


def test_recreate_builds_exactly_the_recorded_versions(old_env, saved_in_old):
    recorded = json.loads((saved_in_old / "versions.json").read_text())
    assert recorded == OLD_VERSIONS
    assert old_env.ok
    assert {d.package: d.level for d in old_env.differences} == {
        "python": Level.SAME, "numpy": Level.SAME, "pandas": Level.SAME, "scikit-learn": Level.SAME}
    assert {d.package: d.current for d in old_env.differences if d.package != "python"} == OLD_VERSIONS
    assert _installed(old_env.python, list(OLD_VERSIONS)) == OLD_VERSIONS  # what the environment really holds
    assert old_env.requirements == ("numpy==1.26.4", "pandas==2.1.4", "scikit-learn==1.4.2")
    assert old_env.installer == "uv"  # installer="auto" takes uv (modelsafe[envs] installs it); pip is the fallback
    assert cache.EnvFolder(Path(old_env.location)).record()["pins"] == list(old_env.requirements)
    assert isinstance(old_env, ms.EnvReport) and old_env.to_dict()["location"] == old_env.location
    assert "recreated environment: " + old_env.location in str(old_env)


def test_the_cache_is_reused_by_a_second_call_and_a_second_artifact_and_nothing_is_created(old_env, saved_in_old,
                                                                                         envs_root):
    before = _tree(envs_root)
    again = ms.recreate_env(saved_in_old / "pipeline.msafe")
    other = ms.recreate_env(saved_in_old / "forest.msafe")  # another model, the same requirements
    assert again.reused and other.reused
    assert again.location == other.location == old_env.location
    assert again.build_seconds < 5  # a lookup (the self-check's load is ready_seconds; no timing is asserted there)
    assert _tree(envs_root) == before


def test_two_concurrent_calls_build_the_environment_once(saved_in_old, old_env, envs_root, tmp_path):
    fresh_root = tmp_path / "cache"
    copy_wheels(envs_root, fresh_root)
    code = textwrap.dedent(f"""
        import json, modelsafe as ms
        report = ms.recreate_env({str(saved_in_old / 'pipeline.msafe')!r})
        print(json.dumps({{"reused": report.reused, "location": report.location, "ok": report.ok}}))
    """)
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "MODELSAFE_ENVS_DIR": str(fresh_root)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["reused"] for r in results) == [False, True]
    assert results[0]["location"] == results[1]["location"] and all(r["ok"] for r in results)
    assert [p.name for p in (fresh_root / "envs").iterdir()] == [Path(results[0]["location"]).name]


def test_an_interrupted_build_is_never_used_and_the_next_call_builds_it_again(saved_in_old, old_env, envs_root,
                                                                             tmp_path):
    fresh_root = tmp_path / "cache"
    copy_wheels(envs_root, fresh_root)
    artifact = saved_in_old / "pipeline.msafe"
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "MODELSAFE_ENVS_DIR": str(fresh_root)}
    proc = subprocess.Popen([sys.executable, "-c", f"import modelsafe as ms; ms.recreate_env({str(artifact)!r})"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    markers: list[Path] = []
    while not markers and time.monotonic() < deadline and proc.poll() is None:
        markers = list((fresh_root / "envs").glob(f"*/{cache.BUILDING}")) if (fresh_root / "envs").is_dir() else []
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the build and its installer, mid-way
    proc.wait()
    assert markers, "the build never started"
    folder = cache.EnvFolder(markers[0].parent)
    assert folder.interrupted() and folder.record() is None

    with pytest.raises(ms.EnvironmentBuildError) as caught:  # never used: naming it explicitly is refused too
        ms.load(artifact, isolate=str(folder.path))
    assert caught.value.reason == "destination"

    report = run(sys.executable, f"""
        import json, modelsafe as ms
        r = ms.recreate_env({str(artifact)!r})
        print(json.dumps({{"reused": r.reused, "location": r.location, "ok": r.ok}}))
    """, tmp_path, env={"MODELSAFE_ENVS_DIR": str(fresh_root)})
    result = json.loads(report.stdout.strip().splitlines()[-1])
    assert result == {"reused": False, "location": str(folder.path), "ok": True}
    assert folder.record() is not None and not folder.interrupted()


def test_a_destination_folder_is_built_once_and_an_unrelated_folder_is_left_alone(saved_in_old, old_env, tmp_path):
    target = tmp_path / "env"
    first = ms.recreate_env(saved_in_old / "pipeline.msafe", target)
    second = ms.recreate_env(saved_in_old / "forest.msafe", target)
    assert (first.reused, second.reused) == (False, True) and first.location == str(target)
    assert (target / "modelsafe-requirements.txt").read_text().splitlines()[-3:] == list(first.requirements)

    stranger = tmp_path / "mine"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    with pytest.raises(ms.EnvironmentBuildError) as caught:
        ms.recreate_env(saved_in_old / "pipeline.msafe", stranger)
    assert caught.value.reason == "destination" and (stranger / "notes.txt").read_text() == "keep me"


def test_the_pip_installer_builds_the_same_environment(main_env, saved_in_main):
    assert main_env.installer == "pip" and main_env.ok and not main_env.reused
    assert all(d.level is Level.SAME for d in main_env.differences)
    versions = {d.package: d.current for d in main_env.differences if d.package != "python"}
    assert _installed(main_env.python, list(versions)) == versions
    assert _installed(main_env.python, ["pip"])["pip"]  # a venv + pip environment


def test_the_command_line_recreates_and_reports_where(old_env, saved_in_old, cli, tmp_path):
    proc = cli("env", str(saved_in_old / "pipeline.msafe"), "--recreate", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] is True and {d["level"] for d in data["differences"]} == {"same"}
    # The same folder as this process's, unless the source tree changed since (a new modelsafe: a new environment).
    assert cache.EnvFolder(Path(data["location"])).record()["pins"] == list(old_env.requirements)
    assert data["reused"] is (data["location"] == old_env.location)

    two = cli("env", str(saved_in_old / "pipeline.msafe"), str(saved_in_old / "forest.msafe"), "--recreate",
              str(tmp_path / "one"))
    assert two.returncode == 2 and "builds one environment, and 2 artifacts were given" in two.stderr
    assert not (tmp_path / "one").exists()
