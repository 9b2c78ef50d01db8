"""Environment fingerprint: only relevant packages, levels, and the three modes."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelsafe.checks.environment import (
    EnvironmentWarning,
    Level,
    capture_environment,
    check_environment,
    compare_environments,
    distribution_for_module,
    is_local_module,
    version_level,
    warn_environment,
)
from modelsafe.errors import EnvironmentMismatchError


@pytest.mark.parametrize("saved,current,level,direction", [
    ("1.3.2", "1.3.2", Level.SAME, ""),
    ("2.13.0", "2.13.0+cpu", Level.SAME, ""),
    ("1.3.2", "1.3.5", Level.PATCH, "newer"),
    ("1.3.2", "1.5.0", Level.MINOR, "newer"),
    ("1.5.0", "1.3.2", Level.MINOR, "older"),
    ("1.26.4", "2.1.0", Level.MAJOR, "newer"),
    ("1.3", "1.3.0", Level.SAME, ""),
    ("1.3.2", None, Level.MISSING, ""),
])
def test_levels(saved, current, level, direction):
    assert version_level(saved, current) == (level, direction)


versions = st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30)).map(lambda t: ".".join(map(str, t)))


@given(versions, versions)
def test_level_properties(a, b):
    level, direction = version_level(a, b)
    back, back_direction = version_level(b, a)
    assert level == back
    assert (level is Level.SAME) == (a == b)
    assert {direction, back_direction} == ({""} if a == b else {"newer", "older"})


def test_only_relevant_packages_are_recorded():
    env = capture_environment(["sklearn.ensemble._forest", "sklearn.pipeline", "numpy", "collections", "__main__"])
    assert set(env["packages"]) == {"scikit-learn", "numpy"}
    assert env["requirements"] == sorted(env["requirements"]) and "numpy==" in env["requirements"][0]
    assert env["python"]["implementation"] and env["platform"]["machine"]
    json.dumps(env)


def test_module_lookup():
    assert distribution_for_module("sklearn.tree._tree")[0] == "scikit-learn"
    assert distribution_for_module("os.path") is None
    assert distribution_for_module("__main__") is None
    assert not is_local_module("numpy") and not is_local_module("json")


def test_local_module_detected(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert is_local_module("mymodels")


def _older(env, package, version):
    saved = copy.deepcopy(env)
    saved["packages"][package]["version"] = version
    return saved


def test_modes():
    env = capture_environment(["sklearn", "numpy"])
    assert compare_environments(env).ok
    saved = _older(_older(env, "scikit-learn", "0.24.2"), "numpy", "1.0.0")
    with pytest.raises(EnvironmentMismatchError) as err:
        check_environment(saved, "strict")
    assert set(err.value.packages) == {"scikit-learn", "numpy"}
    assert "pip install 'scikit-learn==0.24.2'" in str(err.value)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        report = check_environment(saved, "warn")  # load warns later, once the model has loaded
        assert seen == []
        warn_environment(report)
    assert len(seen) == 1 and issubclass(seen[0].category, EnvironmentWarning)
    assert "scikit-learn 0.24.2" in str(seen[0].message) and not report.ok
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        check_environment(saved, "ignore")
    assert seen == []
    with pytest.raises(ValueError, match="Invalid `env`"):
        check_environment(saved, "loud")


def test_missing_package_and_python_difference():
    env = capture_environment(["sklearn"])
    saved = copy.deepcopy(env)
    saved["packages"]["not-a-real-dist"] = {"version": "1.0.0", "modules": ["nope"]}
    saved["python"]["version"] = "3.9.1"
    report = compare_environments(saved)
    levels = {d.package: d.level for d in report.differences}
    assert levels["not-a-real-dist"] is Level.MISSING and levels["python"] is Level.MINOR
    text = str(report)
    assert "not installed" in text and "pip install 'not-a-real-dist==1.0.0'" in text
    json.dumps(report.to_dict())


def _saved_with(path, **versions):
    """Rewrite a folder artifact's manifest as if saved with other package versions."""
    manifest = path / "modelsafe.json"
    data = json.loads(manifest.read_text())
    for dist, version in versions.items():
        data["environment"]["packages"][dist.replace("_", "-")]["version"] = version
    manifest.write_text(json.dumps(data))


@pytest.fixture
def tree_artifact(tmp_path):
    import numpy as np
    from sklearn.tree import DecisionTreeClassifier

    import modelsafe as ms

    X = np.random.default_rng(0).normal(size=(60, 3))
    ms.save(DecisionTreeClassifier(random_state=0).fit(X, X[:, 0] > 0), tmp_path / "m", sample=X[:8])
    return tmp_path / "m"


def test_load_warns_once_after_a_successful_load(tree_artifact):
    import modelsafe as ms

    _saved_with(tree_artifact, scikit_learn="1.4.2")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ms.load(tree_artifact)
    env_warnings = [w for w in seen if issubclass(w.category, EnvironmentWarning)]
    assert len(env_warnings) == 1 and "scikit-learn 1.4.2 ->" in str(env_warnings[0].message)
    assert not [w for w in seen if "Trying to unpickle estimator" in str(w.message)]


def test_failed_load_gives_one_error_naming_the_versions_and_no_warning(tree_artifact):
    import numpy as np

    import modelsafe as ms

    _saved_with(tree_artifact, scikit_learn="1.4.2")
    # The model no longer predicts what it did at save (as when a library changed behaviour).
    predict = tree_artifact / "sample/outputs/predict.npy"
    np.save(predict, ~np.load(predict))
    _rehash(tree_artifact, "sample/outputs/predict.npy")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ms.VerificationError) as err:
            ms.load(tree_artifact)
    assert not [w for w in seen if issubclass(w.category, EnvironmentWarning)]
    assert "the environment differs from the one the model was saved in: scikit-learn 1.4.2 ->" in str(err.value)


def _rehash(path, member):
    import hashlib

    manifest = path / "modelsafe.json"
    data = json.loads(manifest.read_text())
    raw = (path / member).read_bytes()
    data["members"][member] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    manifest.write_text(json.dumps(data))
