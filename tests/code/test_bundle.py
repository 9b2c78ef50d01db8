"""Custom code: bundled at save, refused without trust_code, isolated at load (fresh processes)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

TRAIN_MAIN = """
    import numpy as np
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    import modelsafe as ms

    OFFSET = 2.5
    X = np.random.default_rng(0).normal(size=(200, 3))  # a global the bundle must not capture

    def log_shift(X):
        return np.log1p(np.abs(X)) + OFFSET

    class MyTransformer(BaseEstimator, TransformerMixin):
        def __init__(self, constant_val=5):
            self.constant_val = constant_val

        def fit(self, X, y=None):
            return self

        def transform(self, X):
            X = np.asarray(X)  # a local that shadows the global X
            return X + self.constant_val

    y = (X[:, 0] > 0).astype(int)
    pipe = Pipeline([("custom", MyTransformer(5)), ("shift", FunctionTransformer(log_shift)),
                     ("lr", LogisticRegression())]).fit(X, y)
    ms.save(pipe, "model.msafe", sample=X[:10])
    np.save("X.npy", X)
    np.save("expected.npy", pipe.predict_proba(X))
"""


def _code_member(path: Path, module: str) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.read(f"code/{module}.py").decode()


def test_main_transformer_and_function_in_pipeline_round_trip(fresh, tmp_path):
    fresh.script("train.py", TRAIN_MAIN)
    records = json.loads(zipfile.ZipFile(tmp_path / "model.msafe").read("modelsafe.json"))["code"]
    assert [(r["module"], r["kind"], r["symbols"]) for r in records] == [
        ("__main__", "main", ["MyTransformer", "log_shift"])]
    source = _code_member(tmp_path / "model.msafe", "__main__")
    assert "OFFSET = 2.5" in source and "default_rng" not in source  # the training data global is not bundled
    fresh("""
        import sys, numpy as np, modelsafe as ms
        path_before = list(sys.path)
        try:
            ms.load("model.msafe")
            raise SystemExit("loaded bundled code without trust_code")
        except ms.UntrustedContentError as exc:
            assert exc.modules == ["__main__"], exc.modules
            assert exc.symbols == {"__main__": ["MyTransformer", "log_shift"]}, exc.symbols
            assert "trust_code=True" in str(exc) and "Nothing was imported" in str(exc)
        assert not [m for m in sys.modules if m.startswith("_modelsafe_code_")]
        bundle = ms.load("model.msafe", trust_code=True)
        X = np.load("X.npy")
        assert np.array_equal(bundle.model.predict_proba(X), np.load("expected.npy"))
        assert type(bundle.model[0]).__module__.startswith("_modelsafe_code_")
        assert sys.path == path_before
        assert bundle.verify().ok
    """)


def test_resaving_a_loaded_bundle_keeps_its_code(fresh, tmp_path):
    fresh.script("train.py", TRAIN_MAIN)
    fresh("""
        import modelsafe as ms
        bundle = ms.load("model.msafe", trust_code=True)
        ms.save(bundle.model, "again.msafe", sample=bundle.sample_inputs())
    """)
    fresh("""
        import modelsafe as ms
        assert ms.load("again.msafe", trust_code=True).verify().ok
    """)


FEATURES = """
    import numpy as np
    from sklearn.base import BaseEstimator, TransformerMixin

    SCALE = {scale}

    class Scale(BaseEstimator, TransformerMixin):
        def fit(self, X, y=None):
            return self

        def transform(self, X):
            return np.asarray(X) * SCALE
"""
TRAIN_LOCAL = """
    import numpy as np, modelsafe as ms
    from features import Scale
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    X = np.arange(20.0).reshape(10, 2)
    model = make_pipeline(Scale(), LinearRegression()).fit(X, X.sum(axis=1))
    ms.save(model, "{target}", sample=X[:4])
"""


def _train_local(fresh, folder: Path, scale: int, target: Path) -> None:
    import textwrap

    folder.mkdir()
    (folder / "features.py").write_text(textwrap.dedent(FEATURES.format(scale=scale)))
    fresh.script("train.py", TRAIN_LOCAL.format(target=target), cwd=folder)


def test_two_artifacts_bundling_different_features_py_coexist(fresh, tmp_path):
    _train_local(fresh, tmp_path / "a", 1, tmp_path / "a.msafe")
    _train_local(fresh, tmp_path / "b", 100, tmp_path / "b.msafe")
    assert ms_code(tmp_path / "a.msafe") == [("features", "local")]
    fresh("""
        import sys, modelsafe as ms
        a = ms.load("a.msafe", trust_code=True)
        b = ms.load("b.msafe", trust_code=True)
        assert a.model[0].transform([[1.0, 1.0]]).tolist() == [[1.0, 1.0]]
        assert b.model[0].transform([[1.0, 1.0]]).tolist() == [[100.0, 100.0]]
        assert type(a.model[0]).__module__ != type(b.model[0]).__module__
        assert "features" not in sys.modules
        assert a.verify().ok and b.verify().ok
    """)


def ms_code(path: Path) -> list[tuple[str, str]]:
    import modelsafe as ms

    return [(r["module"], r["kind"]) for r in ms.inspect(path).code]


def test_importable_local_module_is_used_without_trust_and_changes_are_reported(fresh, tmp_path):
    folder = tmp_path / "project"
    _train_local(fresh, folder, 3, folder / "model.msafe")
    fresh("""
        import warnings, modelsafe as ms
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            bundle = ms.load("model.msafe")      # features.py is importable here: no trust needed
        assert type(bundle.model[0]).__module__ == "features"
    """, cwd=folder)
    (folder / "features.py").write_text((folder / "features.py").read_text().replace("SCALE = 3", "SCALE = 4"))
    proc = fresh("""
        import warnings, modelsafe as ms
        from modelsafe.code.gate import CodeChangedWarning
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                ms.load("model.msafe")
                raise SystemExit("a changed local module went unnoticed")
            except ms.VerificationError as exc:
                assert exc.report.code_changes == ("features",) and "code of features changed" in str(exc)
                print("verification failed as it should")
        changed = [w for w in seen if issubclass(w.category, CodeChangedWarning)]
        assert changed and "features" in str(changed[0].message), [str(w.message) for w in seen]
        bundle = ms.load("model.msafe", code="bundled", trust_code=True)   # the saved copy predicts as saved
        assert type(bundle.model[0]).__module__.startswith("_modelsafe_code_")
    """, cwd=folder)
    assert "verification failed as it should" in proc.stdout


def test_code_current_needs_an_importable_module(fresh, tmp_path):
    _train_local(fresh, tmp_path / "a", 1, tmp_path / "a.msafe")
    fresh("""
        import modelsafe as ms
        try:
            ms.load("a.msafe", code="current")
            raise SystemExit("loaded without the module")
        except ms.EnvironmentMismatchError as exc:
            assert exc.modules == ["features"] and "not importable here" in str(exc)
    """)


def test_main_code_using_a_local_module_bundles_both(fresh, tmp_path):
    (tmp_path / "helpers.py").write_text("def scale(x):\n    return x * 2\n")
    fresh.script("train.py", """
        import numpy as np, modelsafe as ms
        from helpers import scale
        from sklearn.linear_model import LinearRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer

        def doubled(X):
            return scale(np.asarray(X))

        X = np.arange(12.0).reshape(6, 2)
        ms.save(make_pipeline(FunctionTransformer(doubled), LinearRegression()).fit(X, X[:, 0]), "m.msafe", sample=X)
    """)
    assert ms_code(tmp_path / "m.msafe") == [("helpers", "local"), ("__main__", "main")]
    serve = tmp_path / "serve"
    serve.mkdir()
    fresh("""
        import modelsafe as ms
        assert ms.load("../m.msafe", trust_code=True).verify().ok
    """, cwd=serve)


NOTEBOOK_CELL = """
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

class Clip(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.clip(X, -1, 1)
"""


def test_notebook_cell_class_is_bundled(fresh, tmp_path):
    # IPython compiles each cell under a pseudo file name kept in linecache; inspect.getsource
    # cannot find classes there on Python 3.11, so modelsafe finds them through their methods.
    fresh.script("notebook.py", f"""
        import linecache, __main__
        cell = {NOTEBOOK_CELL!r}
        name = "<ipython-input-7-0123abcd>"
        linecache.cache[name] = (len(cell), None, cell.splitlines(True), name)
        exec(compile(cell, name, "exec"), __main__.__dict__)

        import numpy as np, modelsafe as ms
        from sklearn.linear_model import LinearRegression
        from sklearn.pipeline import make_pipeline
        X = np.linspace(-3, 3, 40).reshape(20, 2)
        ms.save(make_pipeline(Clip(), LinearRegression()).fit(X, X[:, 1]), "nb.msafe", sample=X)
    """)
    assert "class Clip" in _code_member(tmp_path / "nb.msafe", "__main__")
    fresh("""
        import modelsafe as ms
        assert ms.load("nb.msafe", trust_code=True).verify().ok
    """)


def test_explicit_code_paths_are_bundled(fresh, tmp_path):
    (tmp_path / "extra_features.py").write_text("VERSION = 2\n")
    fresh.script("train.py", """
        import numpy as np, modelsafe as ms
        from sklearn.linear_model import LinearRegression
        X = np.arange(8.0).reshape(4, 2)
        ms.save(LinearRegression().fit(X, X[:, 0]), "m.msafe", code=["extra_features.py"])
    """)
    assert ms_code(tmp_path / "m.msafe") == [("extra_features", "local")]
    assert _code_member(tmp_path / "m.msafe", "extra_features") == "VERSION = 2\n"


@pytest.mark.parametrize("body, where, words", [
    ("FunctionTransformer(lambda x: x + 1)", "steps[0][1].func", "lambda functions cannot be saved"),
    ("FunctionTransformer(make_closure(2))", "steps[0][1].func", "nested functions (closures) cannot be saved"),
    ("FunctionTransformer(uses_connection)", "__main__.conn", "used by uses_connection"),
])
def test_unsavable_code_stops_the_save_naming_where_it_sits(fresh, tmp_path, body, where, words):
    proc = fresh.script("train.py", f"""
        import os, sqlite3, numpy as np, modelsafe as ms
        from sklearn.linear_model import LinearRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer

        conn = sqlite3.connect(":memory:")

        def make_closure(k):
            def inner(x):
                return x * k
            return inner

        def uses_connection(x):
            conn.execute("select 1")
            return x

        X = np.arange(8.0).reshape(4, 2)
        model = make_pipeline({body}, LinearRegression()).fit(X, X[:, 0])
        try:
            ms.save(model, "m.msafe")
        except ms.UnsavableObjectError as exc:
            print(repr(exc.problems))
            print(exc)
        print("files:", sorted(os.listdir(".")))
    """)
    assert where in proc.stdout and words in proc.stdout, proc.stdout
    assert "files: ['train.py']" in proc.stdout


def test_code_typed_at_an_interactive_prompt_is_refused_at_save(fresh):
    proc = fresh("""
        import numpy as np, modelsafe as ms
        from sklearn.base import BaseEstimator, TransformerMixin
        from sklearn.pipeline import make_pipeline
        from sklearn.linear_model import LinearRegression

        class Typed(BaseEstimator, TransformerMixin):
            def fit(self, X, y=None):
                return self
            def transform(self, X):
                return X

        X = np.arange(8.0).reshape(4, 2)
        try:
            ms.save(make_pipeline(Typed(), LinearRegression()).fit(X, X[:, 0]), "m.msafe")
        except ms.UnsavableObjectError as exc:
            print(exc.problems)
    """)
    assert "__main__.Typed" in proc.stdout and "cannot be recovered" in proc.stdout


CONSTANTS_MAIN = """
    import re
    import numpy as np
    import modelsafe as ms

    TOKEN = re.compile(r"(?P<n>\\d+)\\s*(kg|g)", re.IGNORECASE | re.VERBOSE)
    WEIGHTS = np.array([[0.5, -1.0], [-2.0, 0.25]], dtype=np.float32)
    LABELS = np.array(["light", "heavy"])
    SCALE = np.float64(2.5)

    class Parser:
        def predict(self, texts):
            grams = [float(m["n"]) * (1000 if m.group(2).lower() == "kg" else 1) for m in map(TOKEN.search, texts)]
            feats = np.stack([np.log1p(grams), np.ones(len(grams))], axis=1).astype(np.float32) @ WEIGHTS
            return LABELS[(feats[:, 0] * SCALE > 3).astype(int)]

    texts = ["3 kg", "12 G", "700 g", "1KG"]
    ms.save(Parser(), "parser.msafe", sample=texts)
    print(Parser().predict(texts).tolist())
"""


def test_module_constants_patterns_and_small_arrays_are_bundled(fresh, tmp_path):
    saved = fresh.script("train.py", CONSTANTS_MAIN).stdout.strip()
    record = json.loads(zipfile.ZipFile(tmp_path / "parser.msafe").read("modelsafe.json"))["code"][0]
    assert sorted(record["arrays"]) == ["LABELS", "SCALE", "WEIGHTS"]
    assert record["arrays"]["WEIGHTS"] == "code/__main__/WEIGHTS.npy"
    source = _code_member(tmp_path / "parser.msafe", "__main__")
    assert "TOKEN = _modelsafe_re.compile('(?P<n>\\\\d+)\\\\s*(kg|g)', 98)" in source  # IGNORECASE|VERBOSE|UNICODE
    assert "WEIGHTS = __modelsafe_arrays__['WEIGHTS']" in source and "SCALE = __modelsafe_arrays__['SCALE'][()]" in source
    out = fresh("""
        import numpy as np, modelsafe as ms
        bundle = ms.load("parser.msafe", trust_code=True)
        assert bundle.verify().ok
        mod = type(bundle.model).__module__
        import sys, re
        ns = vars(sys.modules[mod])
        assert ns["TOKEN"] == re.compile(r"(?P<n>\\d+)\\s*(kg|g)", re.I | re.X)
        assert ns["WEIGHTS"].dtype == np.float32 and type(ns["SCALE"]) is np.float64
        ms.save(bundle.model, "again.msafe", sample=["3 kg", "12 G", "700 g", "1KG"])  # saved again: arrays too
        print(bundle.predict(["3 kg", "12 G", "700 g", "1KG"]).tolist())
    """).stdout.strip()
    assert out == saved and "'light'" in saved and "'heavy'" in saved  # the constants decide, the same way
    again = fresh("""
        import modelsafe as ms
        print(ms.load("again.msafe", trust_code=True).predict(["3 kg", "12 G", "700 g", "1KG"]).tolist())
    """).stdout.strip()
    assert again == saved


@pytest.mark.parametrize("constant, words", [
    ("np.zeros(200_000)", "it is 1.5 MiB, more than the 1 MiB a bundled constant may have"),
    ("np.array([{}, None], dtype=object)", "it holds Python objects (dtype object), which .npy stores only by pickling"),
])
def test_a_constant_that_cannot_be_bundled_is_named_with_the_reason(fresh, tmp_path, constant, words):
    proc = fresh.script("train.py", f"""
        import os, numpy as np, modelsafe as ms

        TABLE = {constant}

        def score(x):
            return np.asarray(x) * len(TABLE)

        try:
            ms.save(score, "m.msafe", sample=np.ones(3))
        except ms.UnsavableObjectError as exc:
            print(exc.problems)
        print("files:", sorted(os.listdir(".")))
    """)
    assert "('__main__.TABLE', 'numpy.ndarray', 'used by score, but " + words in proc.stdout, proc.stdout
    assert "pass it to the saved object as an attribute" in proc.stdout and "files: ['train.py']" in proc.stdout
