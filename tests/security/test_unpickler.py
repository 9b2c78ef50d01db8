"""The restricted unpickler: audit before anything is built, allowlist, tree validation."""

from __future__ import annotations

import io
import os
import pickle
import pickletools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelsafe.errors import FormatError, UntrustedContentError
from modelsafe.security import (
    audit_pickle,
    classify,
    restricted_loads,
    summarize_pickle,
)


def _payload(target, canary):
    class Exploit:
        def __reduce__(self):
            return target(canary)

    return Exploit()


ATTACKS = {
    "os.system": lambda c: (os.system, (f"touch {c}",)),
    "eval": lambda c: (eval, (f"open({str(c)!r}, 'w')",)),
    "exec": lambda c: (exec, (f"open({str(c)!r}, 'w')",)),
    "subprocess.Popen": lambda c: (__import__("subprocess").Popen, (["touch", str(c)],)),
}


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_reduce_payloads_are_refused_and_never_run(tmp_path, attack, protocol):
    canary = tmp_path / "CANARY"
    data = pickle.dumps(_payload(ATTACKS[attack], canary), protocol=protocol)
    with pytest.raises(UntrustedContentError) as err:
        restricted_loads(data)
    assert err.value.globals and "Nothing was loaded" in str(err.value)
    assert not canary.exists()


def test_getattr_chain_through_numpy_is_refused(tmp_path):
    canary = tmp_path / "CANARY"

    class Chain:
        def __reduce__(self):
            return (getattr, (np.ndarray, "tofile"))

    with pytest.raises(UntrustedContentError) as err:
        restricted_loads(pickle.dumps(Chain(), protocol=4))
    assert err.value.globals == ["builtins.getattr"]
    assert not canary.exists()


def test_stack_global_through_memo_is_resolved():
    # protocol 4: module and name strings are memoized and fetched again with BINGET
    data = pickle.dumps([os.system, os.system, "posix", "system"], protocol=4)
    data = pickletools.optimize(data)
    summary = summarize_pickle(data)
    assert summary.complete and summary.names() == ["posix.system"]
    assert summary.names(invoked=True) == []


def test_referenced_versus_invoked():
    from sklearn.preprocessing import FunctionTransformer

    summary = audit_pickle(pickle.dumps(FunctionTransformer(np.log1p), protocol=5))
    flags = {g.qualname: g.invoked for g in summary.globals}
    assert flags["numpy.log1p"] is False
    assert flags["sklearn.preprocessing._function_transformer.FunctionTransformer"] is True
    with pytest.raises(UntrustedContentError) as err:
        audit_pickle(pickle.dumps(FunctionTransformer(os.system)))
    assert err.value.globals == ["posix.system"]
    assert "referenced as a value" in str(err.value)


def test_trusted_names_and_module_wildcards():
    data = pickle.dumps(io.StringIO, protocol=4)
    with pytest.raises(UntrustedContentError):
        restricted_loads(data)
    assert restricted_loads(data, trusted=["_io.StringIO"]) is io.StringIO
    assert restricted_loads(data, trusted=["_io.*"]) is io.StringIO


def test_recorded_globals_must_match_the_manifest():
    data = pickle.dumps(np.log1p)
    with pytest.raises(UntrustedContentError, match="does not record"):
        audit_pickle(data, recorded=["numpy.exp"])


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_truncated_streams_never_load(protocol):
    data = pickle.dumps({"a": [1, 2.5, "x" * 40], "b": np.arange(4)}, protocol=protocol)
    for cut in range(1, len(data)):
        summary = summarize_pickle(data[:cut])
        assert not summary.complete
        with pytest.raises(FormatError):
            restricted_loads(data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_reader(raw):
    summary = summarize_pickle(raw)
    if not summary.complete:
        assert summary.problems


def test_large_payload_is_streamed_in_bounded_memory():
    import tracemalloc

    data = pickle.dumps(b"\0" * (200 << 20), protocol=5)
    tracemalloc.start()
    try:
        summary = summarize_pickle(io.BytesIO(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del data
    assert summary.complete and peak < 20 << 20


def test_classify():
    assert classify("posix", "system") == "dangerous"
    assert classify("builtins", "eval") == "dangerous"
    assert classify("numpy", "load") == "dangerous"
    assert classify("sklearn.linear_model._logistic", "LogisticRegression") == "safe"
    assert classify("numpy._core.multiarray", "_reconstruct") == "safe"
    assert classify("mypackage", "Thing") == "unknown"


def _tree_pickle():
    from sklearn.tree import DecisionTreeClassifier

    X = np.random.default_rng(0).normal(size=(50, 3))
    model = DecisionTreeClassifier(random_state=0).fit(X, (X[:, 0] > 0).astype(int))
    return model, X


@pytest.fixture(params=["native", "numpy"])
def tree_check(request, monkeypatch):
    """Run a tree test with the C check (modelsafe._native) and with the numpy fallback."""
    from modelsafe.security import _validators

    if request.param == "numpy":  # as installed without a C compiler
        monkeypatch.setattr(_validators, "_native_check", lambda: None)
    else:
        assert _validators._native_check() is not None  # `make test` builds the C module
    return request.param


def _with_tree_state(model, change):
    state = model.tree_.__getstate__()
    nodes = state["nodes"].copy()
    change(nodes)
    state["nodes"] = nodes
    model.tree_.__setstate__(state)  # the real Tree accepts it: that is the danger
    return pickle.dumps(model, protocol=5)


def test_valid_trees_load_without_trust(tree_check):
    model, X = _tree_pickle()
    loaded = restricted_loads(pickle.dumps(model, protocol=5))
    assert (loaded.predict(X) == model.predict(X)).all()
    assert type(pickle.loads(pickle.dumps(loaded.tree_))).__name__ == "Tree"


@pytest.mark.parametrize("corruption,needle", [
    (lambda n: n["left_child"].__setitem__(0, 10_000), "child indices"),
    (lambda n: n["right_child"].__setitem__(0, 0), "child indices"),
    (lambda n: n["feature"].__setitem__(0, 7), "feature 7"),
    (lambda n: n["left_child"].__setitem__(0, -1), "exactly one child"),
])
def test_malformed_trees_are_refused(corruption, needle, tree_check):
    model, _ = _tree_pickle()
    data = _with_tree_state(model, corruption)
    with pytest.raises(UntrustedContentError, match=needle):
        restricted_loads(data)


def _tree_is_safe(nodes, n_features: int) -> bool:
    """The rule, node by node in plain Python: what check_tree_state computes in a few numpy passes."""
    count = len(nodes)
    for i, (left, right, feature) in enumerate(zip(nodes["left_child"], nodes["right_child"], nodes["feature"])):
        if left == -1 or right == -1:
            if (left, right) != (-1, -1):
                return False
        elif not (i < left < count and i < right < count and 0 <= feature < n_features):
            return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["left_child", "right_child", "feature"]), st.integers(0, 10_000),
                          st.sampled_from([-(2 ** 40), -5, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 50, 2 ** 40])),
                max_size=3))
def test_tree_checks_agree_with_the_plain_rule(tree_check, edits):
    from modelsafe.security._validators import check_tree_state

    model, _ = _tree_pickle()
    state = model.tree_.__getstate__()
    nodes = state["nodes"].copy()
    for field, index, value in edits:
        nodes[field][index % len(nodes)] = value
    state = {**state, "nodes": nodes}
    n_features = model.tree_.n_features
    try:
        check_tree_state(state, n_features, model.tree_.n_outputs, int(model.tree_.n_classes.max()))
    except UntrustedContentError:
        assert not _tree_is_safe(nodes, n_features)
    else:
        assert _tree_is_safe(nodes, n_features)


def test_no_unpickling_outside_security_package():
    """The one-door rule: only modelsafe.security calls pickle's loaders."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "src" / "modelsafe"
    pattern = re.compile(r"\b(pickle|joblib|cloudpickle|dill)\.loads?\(|torch\.load\(|Unpickler\(")
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "security" not in p.parts and pattern.search(p.read_text())]
    assert offenders == []
