"""Unknown keyword arguments are refused by every verb, naming them, with a "did you mean"."""

from __future__ import annotations

import keyword
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import modelsafe as ms
from modelsafe._keywords import check_keywords


@pytest.fixture
def fitted(classification_data):
    from sklearn.linear_model import LogisticRegression

    X, y = classification_data
    return LogisticRegression().fit(X, y), X


@pytest.fixture
def artifact(tmp_path, fitted):
    model, X = fitted
    path = tmp_path / "m.msafe"
    ms.save(model, path, sample=X[:8])
    return path


def test_save_names_every_unknown_keyword_and_writes_nothing(tmp_path, fitted):
    model, X = fitted
    with pytest.raises(TypeError) as info:  # the example of the issue: a misspelled option gives no safety
        ms.save(model, tmp_path / "m.msafe", sing="me", totally_bogus=3)
    error = info.value
    assert isinstance(error, ms.UnknownKeywordError) and isinstance(error, ms.ModelsafeError)
    assert error.verb == "save" and error.keywords == ["sing", "totally_bogus"]
    assert str(error).startswith("save() got unexpected keyword arguments 'sing', 'totally_bogus'. ")
    assert "a misspelled safety option would give no safety" in str(error) and "training_data" in error.accepted
    assert not list(tmp_path.iterdir())


def test_a_close_misspelling_gets_a_suggestion(tmp_path, fitted):
    model, X = fitted
    with pytest.raises(ms.UnknownKeywordError, match=r"did you mean 'training_data' instead of 'trainig_data'\?"):
        ms.save(model, tmp_path / "m.msafe", sample=X[:4], trainig_data=X)
    with pytest.raises(ms.UnknownKeywordError) as info:
        ms.save(model, tmp_path / "m.msafe", overwrit=True)
    assert info.value.suggestions == {"overwrit": "overwrite"}
    ms.save(model, tmp_path / "m.msafe", sample=X[:4], training_data=X)  # spelled right, accepted


def test_an_option_of_another_flavor_is_refused_naming_that_flavor(tmp_path, fitted):
    model, X = fitted
    with pytest.raises(ms.UnknownKeywordError) as info:
        ms.save(model, tmp_path / "m.msafe", init_args={"n": 3})
    assert info.value.owners == {"init_args": "torch"} and info.value.suggestions == {}
    assert ("save() got 'init_args', an option of the torch flavor, but the sklearn flavor is used here, which "
            "does not read it") in str(info.value)
    assert "Remove it, or check that this is the model you meant." in str(info.value)


def test_flavor_options_are_accepted_by_their_flavor(tmp_path, fresh):
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    ms.save(net, tmp_path / "net.msafe", sample=torch.randn(4, 3), init_args=None)
    fresh("""
        import modelsafe as ms
        assert ms.load("net.msafe", mmap=False).verify().ok
        try:
            ms.load("net.msafe", compile=True)
        except ms.UnknownKeywordError as exc:
            assert exc.owners == {"compile": "keras"}, exc.owners
            assert "but the torch flavor is used here" in str(exc), exc
        else:
            raise AssertionError("compile= was accepted for a torch model")
    """)


def test_load_refuses_before_reading_any_member(artifact, fresh):
    proc = fresh(f"""
        import sys, modelsafe as ms
        try:
            ms.load({str(artifact)!r}, signatur="require", trusted_key=["k.pem"], bogus=1)
        except TypeError as exc:
            print(type(exc).__name__, exc.keywords, exc.suggestions["trusted_key"])
        print("sklearn" in sys.modules)
    """)
    assert proc.stdout.splitlines() == ["UnknownKeywordError ['signatur', 'trusted_key', 'bogus'] trusted_keys",
                                        "False"]


def test_load_reads_the_options_of_embedded_components(tmp_path, fresh):
    fresh.script("train.py", """
        import torch, modelsafe as ms

        class Scorer:
            def __init__(self):
                self.net = torch.nn.Linear(3, 1)

            def predict(self, x):
                with torch.no_grad():
                    return self.net(torch.as_tensor(x, dtype=torch.float32)).numpy()

        ms.save(Scorer(), "scorer.msafe", sample=torch.randn(4, 3).numpy())
    """)
    assert [e["flavor"] for e in ms.inspect(tmp_path / "scorer.msafe").components["model"].data["embedded"]] == [
        "torch"]
    fresh("""
        import modelsafe as ms
        assert ms.load("scorer.msafe", trust_code=True, mmap=False).verify().ok
        try:
            ms.load("scorer.msafe", trust_code=True, safe_mode=False)
        except ms.UnknownKeywordError as exc:
            assert exc.owners == {"safe_mode": "keras"} and "the python flavor is used" in str(exc), exc
        else:
            raise AssertionError("safe_mode= was accepted for a python model")
    """)


def test_internal_keywords_of_the_cli_still_work(artifact):
    seen = []
    bundle = ms.load(artifact, progress=seen.append, hash_cache=False)
    assert bundle.verify().ok and sum(seen) > 0


@pytest.mark.parametrize("call, verb, suggestion", [
    (lambda p: ms.verify(p, trust_cod=True), "load", "trust_code"),
    (lambda p: ms.inspect(p, storage_option={}), "inspect", "storage_options"),
    (lambda p: ms.check_env(p, storage_option={}), "check_env", "storage_options"),
    (lambda p: ms.scan(p, storage_option={}), "scan", "storage_options"),
    (lambda p: ms.doctor(p, targets=[]), "doctor", "target"),
    (lambda p: ms.Checkpointer(p.parent / "ck", monitr="loss"), "Checkpointer", "monitor"),
    (lambda p: ms.Checkpointer(p.parent / "ck").restore(model=None, whcih="best"), "Checkpointer.restore", "which"),
    (lambda p: ms.sign(p, key=None, pasword="x"), "sign", "password"),
    (lambda p: ms.verify_signature(p, trusted_key=[]), "verify_signature", "trusted_keys"),
    (lambda p: ms.Checkpointer(p.parent / "ck").save(1, model=None, metrix={}), "Checkpointer.save", "metrics"),
    (lambda p: ms.predict_file(p, p.parent / "in.csv", p.parent / "out.csv", trsuted=[]), "predict_file", "trusted"),
    (lambda p: ms.recreate_env(p, p.parent / "env", trust_cod=True), "recreate_env", "trust_code"),
    (lambda p: ms.export(p, p.parent / "m.onnx", to="onnx", trsuted=[]), "export", "trusted"),
    (lambda p: ms.export(p, p.parent / "docker", to="docker", trsuted=[]), "export", "trusted"),
    (lambda p: ms.export(p, p.parent / "mlflow", to="mlflow", trsuted=[]), "load", "trusted"),
])
def test_every_verb_refuses_with_a_suggestion(artifact, call, verb, suggestion):
    with pytest.raises(ms.UnknownKeywordError) as info:
        call(artifact)
    assert info.value.verb == verb and list(info.value.suggestions.values()) == [suggestion]
    assert str(info.value).startswith(f"{verb}() got unexpected keyword argument ")


def test_convert_refuses_before_reading_the_file(tmp_path, fitted):
    model, X = fitted
    with open(tmp_path / "legacy.pkl", "wb") as f:
        pickle.dump(model, f)
    with pytest.raises(ms.UnknownKeywordError, match=r"convert\(\) got unexpected keyword argument 'trust_cod' "
                                                     r"\(did you mean 'trust_code' instead of 'trust_cod'\?\)"):
        ms.convert(tmp_path / "legacy.pkl", tmp_path / "out.msafe", trust_cod=True)
    with pytest.raises(ms.UnknownKeywordError, match="an option of the torch flavor, but the sklearn flavor"):
        ms.convert(tmp_path / "legacy.pkl", tmp_path / "out.msafe", init_args={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["legacy.pkl"]
    assert ms.convert(tmp_path / "legacy.pkl", tmp_path / "out.msafe", sample=X[:4],
                      metadata={"from": "tests"}).metadata == {"from": "tests"}


_names = st.from_regex(r"[a-z_][a-z0-9_]{0,14}", fullmatch=True).filter(lambda s: not keyword.iskeyword(s))


@settings(max_examples=200, deadline=None)
@given(accepted=st.sets(_names, max_size=8), given_=st.lists(_names, max_size=6, unique=True))
def test_check_keywords_refuses_exactly_the_unknown_names(accepted, given_):
    unknown = [name for name in given_ if name not in accepted]
    try:
        check_keywords("verb", given_, accepted)
    except ms.UnknownKeywordError as exc:
        assert unknown and exc.keywords == unknown and set(exc.suggestions) == set(unknown)
        assert all(s is None or s in accepted for s in exc.suggestions.values())
        assert all(repr(name) in str(exc) for name in unknown)
        assert exc.accepted == sorted(accepted)
    else:
        assert not unknown


def test_dir_lists_only_public_names():
    names = dir(ms)
    assert set(ms.__all__) <= set(names) and "errors" in names
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib"} & set(names)
    assert all(not n.startswith("_") or n == "__version__" for n in names)
