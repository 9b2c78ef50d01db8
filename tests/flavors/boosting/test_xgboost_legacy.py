"""Legacy XGBoost pickles: doctor's analysis says which XGBoost wrote them, never unpickling.

The fixtures in tests/fixtures/xgboost were written by real older XGBoost releases
(see make_fixtures.py there); current-version pickles are made here.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")

import modelsafe as ms  # noqa: E402
from modelsafe.flavors import get_flavor  # noqa: E402
from modelsafe.flavors.boosting.xgboost_legacy import diagnose_xgboost_pickle  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "xgboost"
LEGACY = {
    "xgb-1.5.2-classifier.pkl": ("1.5.2", ("xgboost.compat.XGBoostLabelEncoder", "xgboost.core.Booster",
                                           "xgboost.sklearn.XGBClassifier")),
    "xgb-1.7.6-booster.joblib": ("1.7.6", ("xgboost.core.Booster",)),
    "xgb-2.0.3-booster-p2.pkl": ("2.0.3", ("xgboost.core.Booster",)),
}


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_legacy_pickle_names_its_writer_and_the_way_out(name):
    version, objects = LEGACY[name]
    found = diagnose_xgboost_pickle(FIXTURES / name)
    assert found is not None
    assert found.written_by == version and found.objects == objects
    assert found.installed == xgb.__version__ and not found.same_version
    text = str(found)
    assert f"XGBoost {version}" in text and f"XGBoost {xgb.__version__}" in text
    assert f"xgboost=={version}" in text and "save_model('model.json')" in text
    # modelsafe's XGBoost flavor needs XGBoost 1.6+ (UBJSON) where convert runs; 1.5 keeps string labels apart.
    assert ("modelsafe convert" in text) == (version != "1.5.2")
    assert ("classes_" in text) == (version == "1.5.2")
    assert json.loads(json.dumps(found.to_dict()))["written_by"] == version


def test_the_flavor_hook_takes_what_the_scanner_read():
    path = FIXTURES / "xgb-1.5.2-classifier.pkl"
    report = ms.scan(path)
    assert not report.ok  # a pickle of XGBoost classes is never "safe to unpickle"
    flavor = get_flavor("xgboost")
    for summary in (report, report.globals(), None):
        [problem] = flavor.diagnose_file(str(path), summary)
        assert problem.severity == "error" and problem.subject == "xgboost"
        assert "XGBoost 1.5.2" in problem.what and "xgboost==1.5.2" in problem.fix


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_doctor_explains_a_legacy_xgboost_pickle(name, cli):
    version, _ = LEGACY[name]
    report = ms.doctor(FIXTURES / name)
    assert not report.ok
    ours = [p for p in report.problems if p.subject == "xgboost"]
    assert len(ours) == 1 and f"XGBoost {version}" in ours[0].what and "save_model" in ours[0].fix
    proc = cli("doctor", str(FIXTURES / name))
    assert proc.returncode == 1 and f"XGBoost {version}" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("how", ["pickle-p5", "joblib-zlib", "joblib-xz"])
def test_current_version_pickle_is_recognised_as_such(tmp_path, how):
    import joblib

    X = np.random.default_rng(0).normal(size=(40, 3))
    model = xgb.XGBRegressor(n_estimators=2).fit(X, X[:, 0])
    path = tmp_path / "model.bin"
    if how == "pickle-p5":
        path.write_bytes(pickle.dumps(model, protocol=5))
    else:
        joblib.dump(model, path, compress=("zlib" if how == "joblib-zlib" else "xz", 3))
    found = diagnose_xgboost_pickle(path)
    assert found is not None and found.written_by == xgb.__version__ and found.same_version
    assert "xgboost.sklearn.XGBRegressor" in found.objects
    assert "can load here" in found.why


def test_pickle_without_xgboost_gives_nothing(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"weights": np.arange(3)}))
    assert diagnose_xgboost_pickle(path) is None


def test_damaged_booster_bytes_give_no_version(tmp_path):
    data = (FIXTURES / "xgb-2.0.3-booster-p2.pkl").read_bytes()
    cut = data.index(b"version")
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[:cut])
    found = diagnose_xgboost_pickle(path)
    assert found is not None and found.written_by is None
    assert "older than 1.0" in found.problem() and "damaged" in found.problem()


def test_analysis_never_imports_xgboost_or_unpickles(fresh):
    proc = fresh(f"""
        import sys, pickle
        sys.modules["xgboost"] = None          # importing XGBoost would now fail
        def refuse(*a, **k):
            raise AssertionError("the file was unpickled")
        class NoUnpickler(pickle.Unpickler):
            load = refuse
        pickle.load = pickle.loads = refuse
        pickle.Unpickler = NoUnpickler
        from modelsafe.flavors.boosting.xgboost_legacy import diagnose_xgboost_pickle
        found = diagnose_xgboost_pickle({str(FIXTURES / "xgb-1.7.6-booster.joblib")!r})
        print(found.written_by)
    """)
    assert proc.stdout.strip() == "1.7.6"
