"""The verification sample replays without worker pools, and the model's own settings stay as they are.

Timings are not asserted (bench/bench_replay.py measures them): each test records, from inside
the model while the sample replays, which joblib backend, how many torch threads and which
LightGBM call options were in force, at save and at load in a fresh process.
"""

from __future__ import annotations

import json

TRAIN_SKLEARN = """
    import json, joblib, numpy as np, modelsafe as ms
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline

    SEEN = []

    class Spy(BaseEstimator, TransformerMixin):
        def fit(self, X, y=None):
            return self

        def transform(self, X):
            SEEN.append(type(joblib.parallel.get_active_backend()[0]).__name__)
            return X

    X = np.random.default_rng(0).normal(size=(300, 4))
    model = make_pipeline(Spy(), RandomForestClassifier(20, random_state=0, n_jobs=2)).fit(X, X[:, 0] > 0)
    SEEN.clear()
    ms.save(model, "rf.msafe", sample=X[:16])
    at_save = list(SEEN)
    SEEN.clear()
    model.predict(X[:16])
    print(json.dumps({"save": at_save, "direct": SEEN, "n_jobs": model[-1].n_jobs}))
"""


def test_scikit_learn_replays_on_joblibs_sequential_backend(fresh, tmp_path):
    saved = json.loads(fresh.script("train.py", TRAIN_SKLEARN).stdout.strip().splitlines()[-1])
    assert set(saved["save"]) == {"SequentialBackend"} and saved["direct"] != ["SequentialBackend"]
    assert saved["n_jobs"] == 2
    loaded = json.loads(fresh("""
        import json, sys, modelsafe as ms
        bundle = ms.load("rf.msafe", trust_code=True)          # load replays the sample
        spy = sys.modules[type(bundle.model[0]).__module__]
        at_load = list(spy.SEEN)
        spy.SEEN.clear()
        bundle.predict(bundle.sample_inputs())                   # the user's own call: the model's settings
        print(json.dumps({"load": at_load, "predict": spy.SEEN, "n_jobs": bundle.model[-1].n_jobs}))
    """).stdout.strip().splitlines()[-1])
    assert set(loaded["load"]) == {"SequentialBackend"} and loaded["predict"] != ["SequentialBackend"]
    assert loaded["n_jobs"] == 2  # the model's own setting is untouched


def test_torch_replays_on_one_intra_op_thread_and_restores_the_count(fresh, tmp_path):
    out = fresh.script("train.py", """
        import json, torch, modelsafe as ms

        SEEN = []

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(4, 2)

            def forward(self, x):
                SEEN.append(torch.get_num_threads())
                return self.fc(x)

        torch.set_num_threads(2)
        ms.save(Net(), "net.msafe", sample=torch.randn(8, 4))
        print(json.dumps({"save": sorted(set(SEEN)), "after": torch.get_num_threads()}))
    """).stdout.strip().splitlines()[-1]
    assert json.loads(out) == {"save": [1], "after": 2}
    loaded = fresh("""
        import json, sys, torch, modelsafe as ms
        torch.set_num_threads(2)
        bundle = ms.load("net.msafe", trust_code=True)
        seen = sys.modules[type(bundle.model).__module__].SEEN
        at_load = sorted(set(seen))
        seen.clear()
        bundle.predict(torch.randn(3, 4).numpy())
        print(json.dumps({"load": at_load, "after": torch.get_num_threads(), "predict": seen}))
    """).stdout.strip().splitlines()[-1]
    assert json.loads(loaded) == {"load": [1], "after": 2, "predict": [2]}


def test_lightgbm_replays_with_one_thread_per_call(fresh, tmp_path):
    out = fresh("""
        import json, lightgbm, numpy as np, modelsafe as ms
        from modelsafe.flavors import get_flavor

        calls = []
        real = lightgbm.Booster.predict

        def spy(self, data, *args, **kwargs):
            calls.append(kwargs.get("num_threads"))
            return real(self, data, *args, **kwargs)

        lightgbm.Booster.predict = spy
        X = np.random.default_rng(0).normal(size=(300, 4))
        model = lightgbm.LGBMClassifier(n_estimators=10, n_jobs=2, verbose=-1).fit(X, X[:, 0] > 0)
        calls.clear()
        ms.save(model, "lgb.msafe", sample=X[:16])
        at_save = list(calls)
        calls.clear()
        bundle = ms.load("lgb.msafe")
        at_load = list(calls)
        calls.clear()
        bundle.predict(X[:16])
        print(json.dumps({"save": at_save, "load": at_load, "predict": calls, "n_jobs": bundle.model.n_jobs,
                          "outside": get_flavor("lightgbm").call_options()}))
    """).stdout.strip().splitlines()[-1]
    # the wrapper passes its own n_jobs as num_threads; the replay passes 1 instead, per call
    assert json.loads(out) == {"save": [1, 1], "load": [1, 1], "predict": [2], "n_jobs": 2, "outside": {}}


EMBEDDED = """
    import ctypes, json, sys, lightgbm, threadpoolctl, xgboost, numpy as np, modelsafe as ms

    SEEN = {"lightgbm": [], "xgboost": []}

    def lightgbm_cap():
        found = ctypes.c_int()
        lightgbm.basic._LIB.LGBM_GetMaxThreads(ctypes.byref(found))
        return found.value

    def openmp_threads():
        return sorted({i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp"})

    def spy(cls, name, library, probe):
        real = getattr(cls, name)

        def call(self, *args, **kwargs):
            SEEN[library].append(probe())
            return real(self, *args, **kwargs)

        setattr(cls, name, call)

    spy(lightgbm.Booster, "predict", "lightgbm", lightgbm_cap)
    spy(xgboost.Booster, "inplace_predict", "xgboost", openmp_threads)
    spy(xgboost.Booster, "predict", "xgboost", openmp_threads)

    def seen():
        found = {k: sorted(set(map(str, v))) for k, v in SEEN.items()}
        for v in SEEN.values():
            v.clear()
        return found
"""


#: Two OpenMP threads in the fresh processes whatever this process's environment says (a Dask nanny or a user
#: may have set OMP_NUM_THREADS=1 here), so that the replay's single thread is seen to differ from the model's.
TWO_OPENMP_THREADS = {"OMP_NUM_THREADS": "2"}


def test_models_embedded_in_a_pipeline_replay_inside_their_flavors_context(fresh, tmp_path):
    saved = json.loads(fresh(EMBEDDED + """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.random.default_rng(0).normal(size=(400, 5))
    y = X[:, 0] + X[:, 1] > 0
    models = {"lightgbm": lightgbm.LGBMClassifier(n_estimators=20, n_jobs=2, verbose=-1),
              "xgboost": xgboost.XGBClassifier(n_estimators=20, n_jobs=2)}
    out = {"before": {"cap": lightgbm_cap(), "openmp": openmp_threads()}}
    for name, model in models.items():
        pipe = make_pipeline(StandardScaler(), model).fit(X, y)
        np.save(f"{name}-proba.npy", pipe.predict_proba(X))
        seen()
        ms.save(pipe, f"{name}.msafe", sample=X[:16])
        out[name] = seen()[name]
    out["after"] = {"cap": lightgbm_cap(), "openmp": openmp_threads()}
    np.save("X.npy", X)
    print(json.dumps(out))
    """, env=TWO_OPENMP_THREADS).stdout.strip().splitlines()[-1])
    before = saved["before"]
    assert before["cap"] == -1 and before["openmp"] != [1]  # LightGBM's default, and more than one OpenMP thread
    assert saved["lightgbm"] == ["1"]  # the replay at save ran under LightGBM's cap
    assert saved["xgboost"] == ["[1]"]  # and on one OpenMP thread
    assert saved["after"] == before  # both back as they were
    loaded = json.loads(fresh(EMBEDDED + """
    X = np.load("X.npy")
    out = {}
    for name in ("lightgbm", "xgboost"):
        seen()
        bundle = ms.load(f"{name}.msafe")                     # load replays the sample
        at_load = seen()[name]
        proba = bundle.predict_proba(X)                        # the user's own call: the model's settings
        out[name] = {"load": at_load, "predict": seen()[name], "n_jobs": bundle.model[-1].n_jobs,
                     "same": bool(np.array_equal(proba, np.load(f"{name}-proba.npy"))),
                     "verified": bundle.verify().ok}
    print(json.dumps(out))
    """, env=TWO_OPENMP_THREADS).stdout.strip().splitlines()[-1])
    assert loaded["lightgbm"] == {"load": ["1"], "predict": ["-1"], "n_jobs": 2, "same": True, "verified": True}
    assert loaded["xgboost"]["load"] == ["[1]"] and loaded["xgboost"]["predict"] == [str(before["openmp"])]
    assert {k: loaded["xgboost"][k] for k in ("n_jobs", "same", "verified")} == {"n_jobs": 2, "same": True,
                                                                                  "verified": True}


def test_xgboost_models_replay_on_one_openmp_thread(fresh, tmp_path):
    """The xgboost flavor itself (a scikit-learn wrapper and a bare Booster, saved natively): the replay at save
    and at load runs on one OpenMP thread, the user's own predictions on the model's, and nothing stays lowered."""
    out = json.loads(fresh(EMBEDDED + """
    X = np.random.default_rng(0).normal(size=(400, 5))
    y = X[:, 0] + X[:, 1] > 0
    wrapper = xgboost.XGBClassifier(n_estimators=20, n_jobs=2).fit(X, y)
    booster = xgboost.train({"objective": "binary:logistic", "nthread": 2}, xgboost.DMatrix(X, label=y), 10)
    out = {"before": openmp_threads()}
    for name, model in (("wrapper", wrapper), ("booster", booster)):
        seen()
        ms.save(model, f"{name}.msafe", sample=X[:16])
        at_save = seen()["xgboost"]
        bundle = ms.load(f"{name}.msafe")
        at_load = seen()["xgboost"]
        bundle.predict(X[:16])
        out[name] = {"save": at_save, "load": at_load, "predict": seen()["xgboost"], "flavor": bundle.manifest.flavor}
    out["after"] = openmp_threads()
    print(json.dumps(out))
    """, env=TWO_OPENMP_THREADS).stdout.strip().splitlines()[-1])
    before = out["before"]
    assert before != [1] and out["after"] == before
    for name in ("wrapper", "booster"):
        assert out[name] == {"save": ["[1]"], "load": ["[1]"], "predict": [str(before)], "flavor": "xgboost"}, name


def test_a_graph_remembers_its_embedded_components_as_long_as_it_lives():
    import gc

    from modelsafe.flavors import _embedded

    class Root:
        pass

    root, model = Root(), object()
    _embedded.remember(root, [("lightgbm", model)])
    assert _embedded.components_of(root) == (("lightgbm", model),)
    _embedded.remember(root, [])  # saved again without one
    assert _embedded.components_of(root) == ()
    _embedded.remember(root, [("xgboost", model)])
    key = id(root)
    del root
    gc.collect()
    assert key not in _embedded._FOUND
    plain = {"model": model}  # takes no weak reference: not remembered, replays with the pools
    _embedded.remember(plain, [("xgboost", model)])
    assert _embedded.components_of(plain) == ()
