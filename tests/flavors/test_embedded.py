"""Objects of native-format frameworks inside a pickled graph are saved by their own flavor."""

from __future__ import annotations

import modelsafe as ms


def test_custom_torch_module_inside_a_scikit_learn_estimator(fresh, tmp_path):
    # The module's own class comes from the script (not torch), but it derives from nn.Module:
    # it goes through the PyTorch flavor (safetensors), never into the pickle stream.
    fresh.script("train.py", """
        import numpy as np, torch, modelsafe as ms
        from sklearn.base import BaseEstimator, RegressorMixin

        class Net(torch.nn.Module):
            def __init__(self, n=3):
                super().__init__()
                self.lin = torch.nn.Linear(n, 1)

            def forward(self, x):
                return self.lin(x)

        class TorchRegressor(BaseEstimator, RegressorMixin):
            def __init__(self, n=3):
                self.n = n

            def fit(self, X, y):
                torch.manual_seed(0)
                self.net_ = Net(self.n)
                return self

            def predict(self, X):
                with torch.no_grad():
                    return self.net_(torch.as_tensor(X, dtype=torch.float32)).numpy().ravel()

        X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
        ms.save(TorchRegressor().fit(X, X[:, 0]), "wrapped.msafe", sample=X[:5])
    """)
    manifest = ms.inspect(tmp_path / "wrapped.msafe")
    assert [e["flavor"] for e in manifest.components["model"].data["embedded"]] == ["torch"]
    assert any(m.endswith(".safetensors") for m in manifest.members)
    fresh("""
        import modelsafe as ms
        bundle = ms.load("wrapped.msafe", trust_code=True)
        assert type(bundle.model.net_).__name__ == "Net" and not bundle.model.net_.training
        assert bundle.verify().ok
    """)
