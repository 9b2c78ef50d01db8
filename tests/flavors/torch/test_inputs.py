"""Multi-input torch models: a tuple or list of arrays as positional inputs, a dict as keyword inputs.

Saved from a ``__main__`` script (the classes are bundled), loaded and verified in a fresh process.
The first wave stacked ``sample=(a, b)`` into one ``(2, n, ...)`` array (every load then failed
verification, blaming the environment), and crashed with a bare numpy ValueError when the
inputs had different shapes.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

TRAIN = """
import numpy as np, torch, modelsafe as ms

class Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 2), torch.nn.Linear(5, 2)

    def forward(self, a, b):
        return self.a(a) + self.b(b)

class Masked(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, ids, mask):
        return self.lin(ids) * mask

class Pooled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)

    def forward(self, xs):  # one argument: a list of tensors
        return sum(self.lin(x) for x in xs)

torch.manual_seed(0)
rng = np.random.default_rng(0)
A = rng.normal(size=(12, 3)).astype("float32")
B = rng.normal(size=(12, 5)).astype("float32")
np.save("a.npy", A); np.save("b.npy", B)
ms.save(Two(), "tuple.msafe", sample=(A, B))
ms.save(Two(), "list.msafe", sample=[A, B])
ms.save(Two(), "tensors.msafe", sample=(torch.from_numpy(A), torch.from_numpy(B)))
ms.save(Masked(), "kw.msafe", sample={"ids": A, "mask": np.ones((12, 2), "float32")})
ms.save(Pooled(), "pooled.msafe", sample=[A, A * 2])
"""


def test_positional_and_keyword_inputs_replay_in_a_fresh_process(tmp_path, fresh):
    fresh.script("train.py", TRAIN)
    fresh("""
        import numpy as np, torch, modelsafe as ms

        A, B = np.load("a.npy"), np.load("b.npy")
        for name, inputs in (("tuple", (A, B)), ("list", [A, B]),
                             ("tensors", (torch.from_numpy(A), torch.from_numpy(B)))):
            bundle = ms.load(f"{name}.msafe", trust_code=True)
            assert bundle.verify().ok, bundle.verify()
            schema = bundle.manifest.schema
            assert schema["kind"] == "positional" and [s["shape"] for s in schema["inputs"]] == [[None, 3], [None, 5]]
            with torch.no_grad():
                expected = bundle.model(torch.from_numpy(A), torch.from_numpy(B)).numpy()
            assert np.allclose(bundle.predict(inputs), expected), name
            for wrong, fact in (((A, B, B), ("expected", 2)), ((A, B[:, :4]), ("input", 1)), (A, ("expected", 2))):
                try:
                    bundle.predict(wrong)
                    raise SystemExit(f"{name}: {type(wrong)} accepted")
                except ms.SchemaError as exc:
                    assert getattr(exc, fact[0]) == fact[1], (name, exc)

        kw = ms.load("kw.msafe", trust_code=True)
        assert kw.verify().ok and kw.manifest.schema["keys"] == ["ids", "mask"]
        try:
            kw.predict({"ids": A, "maks": np.ones((12, 2), "float32")})
            raise SystemExit("a misspelt keyword accepted")
        except ms.SchemaError as exc:
            assert exc.missing == ["mask"] and "'maks' in the input may be 'mask' misspelt" in str(exc), exc

        pooled = ms.load("pooled.msafe", trust_code=True)  # forward(xs): the list is its one argument
        assert pooled.verify().ok
        assert pooled.predict([A, A * 2]).shape == (12, 1)
    """)


def test_a_sample_that_would_not_replay_is_refused_at_save(tmp_path, fresh):
    # A tuple of plain lists is stored as one array and reads back as a list of lists: a model
    # that tells them apart would fail verification at every load, so the save itself says so.
    out = fresh.script("save.py", """
        import numpy as np, modelsafe as ms

        def tuple_or_not(x):
            return np.array([float(isinstance(x, tuple))])

        try:
            ms.save(tuple_or_not, "m.msafe", sample=([1.0, 2.0], [3.0, 4.0]))
        except ms.SaveError as exc:
            print("refused:", exc)
    """)
    assert "refused: The verification sample does not replay" in out.stdout, out.stdout
    assert "is a tuple but reads back as a list" in out.stdout
    assert not (tmp_path / "m.msafe").exists()
