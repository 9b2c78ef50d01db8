"""Preprocessing saved with the model, as one unit; verified on raw input (fresh processes)."""

from __future__ import annotations

import numpy as np
import pytest

import modelsafe as ms


def test_scaler_saved_with_the_model(tmp_path, fresh):
    # The seed's scaler example: trained on scaled input; predictions on raw input must
    # go through the same scaler, and the pair is one artifact.
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import MinMaxScaler

    X_train = np.array([[100, 200], [300, 400], [500, 600], [150, 250], [450, 500]], dtype=float)
    y_train = np.array([0, 1, 0, 0, 1])
    scaler = MinMaxScaler().fit(X_train)
    model = LogisticRegression().fit(scaler.transform(X_train), y_train)
    manifest = ms.save(model, tmp_path / "m.msafe", preprocess=scaler, sample=X_train)
    assert manifest.components["preprocess"].flavor == "sklearn"
    X_new = np.array([[200, 300], [400, 500]], dtype=float)
    np.save(tmp_path / "new.npy", X_new)
    np.save(tmp_path / "expected.npy", model.predict_proba(scaler.transform(X_new)))
    fresh("""
        import numpy as np, modelsafe as ms
        bundle = ms.load("m.msafe")
        X_new = np.load("new.npy")
        assert np.array_equal(bundle.model.predict_proba(bundle.preprocess.transform(X_new)), np.load("expected.npy"))
        assert (bundle.predict(X_new) == bundle.model.predict(bundle.preprocess.transform(X_new))).all()
        # the sample was recorded on raw input: a different scaler is caught by verification
        from sklearn.preprocessing import StandardScaler
        bundle.preprocess = StandardScaler().fit(X_new)
        report = bundle.verify()
        assert not report.ok, report
    """)


def test_plain_function_preprocess_from_main(tmp_path, fresh):
    # The seed's joblib example: a custom_preprocess function applied outside the model.
    fresh.script("train.py", """
        import numpy as np, modelsafe as ms
        from sklearn.linear_model import LogisticRegression

        def custom_preprocess(X):
            return np.asarray(X) + 1

        X = np.array([[1, 2], [3, 4], [5, 6], [2, 1]], dtype=float)
        y = np.array([0, 1, 0, 1])
        model = LogisticRegression().fit(custom_preprocess(X), y)
        ms.save(model, "m.msafe", preprocess=custom_preprocess, sample=X)
        np.save("expected.npy", model.predict_proba(custom_preprocess(np.array([[7.0, 8.0]]))))
    """)
    assert ms.inspect(tmp_path / "m.msafe").components["preprocess"].flavor == "python"
    fresh("""
        import numpy as np, modelsafe as ms
        bundle = ms.load("m.msafe", trust_code=True)
        raw = np.array([[7.0, 8.0]])
        assert np.array_equal(bundle.model.predict_proba(bundle.preprocess(raw)), np.load("expected.npy"))
        assert bundle.predict(raw).tolist() == bundle.model.predict(raw + 1).tolist()
    """)


def test_tokenizer_and_vocabulary_chain(tmp_path, fresh):
    # The seed's text example: tokenizer + vocabulary with an unknown token, saved with the model.
    fresh.script("train.py", """
        import numpy as np, modelsafe as ms

        VOCAB = {"<pad>": 0, "<unk>": 1, "hello": 2, "world": 3}

        def tokenize(texts):
            return [t.lower().split() for t in texts]

        class BagOfIds:
            def __init__(self, size):
                self.weights = np.arange(size, dtype=float)

            def predict(self, ids):
                return np.array([self.weights[row].sum() for row in ids])

        model = BagOfIds(len(VOCAB))
        texts = ["hello world", "hello universe"]
        ms.save(model, "m.msafe", preprocess=[tokenize, VOCAB], sample=texts)
    """)
    fresh("""
        import modelsafe as ms
        bundle = ms.load("m.msafe", trust_code=True)
        assert bundle.predict(["hello world", "world universe"]).tolist() == [5.0, 4.0]   # universe -> <unk>
        assert bundle.verify().ok
        try:
            bundle.predict("hello world")
            raise SystemExit("a bare string was accepted")
        except ms.SchemaError as exc:
            assert "Wrap it in a list" in str(exc)
    """)


def test_vocabulary_without_unknown_entry_names_the_token():
    from modelsafe.flavors.python import PythonFlavor

    with pytest.raises(ms.SchemaError, match="Token 'universe' is not in the saved vocabulary"):
        PythonFlavor().transform({"hello": 1}, ["hello", "universe"])
