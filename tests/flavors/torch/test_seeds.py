"""The seeds' PyTorch examples, rewritten with modelsafe: trained in a ``__main__`` script, loaded fresh.

Seed 003: a state-dict round trip of ``SimpleNet`` and a text classifier whose tokenizer
must travel with it. Seed 004: ``MyModel``, a custom layer with ``__getstate__``, and a
checkpoint holding the optimizer state. (torchtext's ``basic_english`` tokenizer is
replaced by the same lower-case split, as torchtext is not installed.)
"""

from __future__ import annotations

import json
import textwrap

import pytest

pytest.importorskip("torch")

TRAIN = '''
import torch
import torch.nn as nn
import torch.optim as optim
import modelsafe as ms


class SimpleNet(nn.Module):                        # seed 003, example 1
    def __init__(self):
        super(SimpleNet, self).__init__()
        self.fc1 = nn.Linear(10, 5)
        self.fc2 = nn.Linear(5, 2)

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


vocab = ['<pad>', '<unk>', 'hello', 'world']     # seed 003, example 3
vocab_map = {vocab[i]: i for i in range(len(vocab))}


def tokenize_texts(texts):
    ids = [[vocab_map.get(tok, 1) for tok in text.lower().split()] for text in texts]
    width = max(len(row) for row in ids)
    return torch.tensor([row + [0] * (width - len(row)) for row in ids]).long()


class TextClassifier(nn.Module):
    def __init__(self, vocab_size, embedding_dim, hidden_dim, output_dim):
        super(TextClassifier, self).__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.fc1 = nn.Linear(embedding_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.embedding(x)
        x = x.mean(dim=1)
        x = self.relu(self.fc1(x))
        return self.fc2(x)


class CustomLayer(nn.Module):                      # seed 004, example 3
    def __init__(self, in_features, out_features):
        super(CustomLayer, self).__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.linear(x)

    def __getstate__(self):
        return self.__dict__.copy()

    def __setstate__(self, state):
        self.__dict__.update(state)


class MyModelCustom(nn.Module):
    def __init__(self):
        super(MyModelCustom, self).__init__()
        self.custom = CustomLayer(10, 5)
        self.linear = nn.Linear(5, 1)

    def forward(self, x):
        return self.linear(self.custom(x))


torch.manual_seed(0)
model = SimpleNet()
optimizer = optim.Adam(model.parameters())
x = torch.randn(1, 10)
y = torch.randn(1, 2)
for _ in range(10):
    optimizer.zero_grad()
    loss = nn.MSELoss()(model(x), y)
    loss.backward()
    optimizer.step()
ms.save(model, "simple_model.msafe", sample=torch.randn(4, 10))
ms.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()},
        "model_optimizer.msafe")

text_model = TextClassifier(vocab_size=len(vocab), embedding_dim=16, hidden_dim=32, output_dim=2)
ms.save(text_model, "text_model.msafe", sample=["hello world", "world hello hello"], preprocess=tokenize_texts)

ms.save(MyModelCustom(), "model_custom.msafe", sample=torch.randn(3, 10))
'''

LOAD = '''
import json, torch, torch.nn as nn, torch.optim as optim, modelsafe as ms

simple = ms.load("simple_model.msafe", trust_code=True)
text = ms.load("text_model.msafe", trust_code=True)
custom = ms.load("model_custom.msafe", trust_code=True)
checkpoint = ms.load("model_optimizer.msafe").model

model_loaded = type(simple.model)()                 # the seed's pattern: load the state into a new instance
model_loaded.load_state_dict(checkpoint["model_state_dict"])
optimizer_loaded = optim.Adam(model_loaded.parameters())
optimizer_loaded.load_state_dict(checkpoint["optimizer_state_dict"])
probe = torch.randn(2, 10)
out = {
    "simple": [type(simple.model).__name__, simple.model.training, simple.verify().ok],
    "same_weights": bool(torch.equal(model_loaded(probe), simple.model(probe))),
    "optimizer_steps": float(optimizer_loaded.state_dict()["state"][0]["step"]),
    "text": [type(text.model).__name__, text.verify().ok, list(text.predict(["hello universe"]).shape)],
    "custom": [type(custom.model.custom).__name__, custom.verify().ok],
}
print("@@" + json.dumps(out))
'''


def test_seed_examples_rewritten_with_modelsafe(tmp_path, fresh):
    (tmp_path / "train.py").write_text(textwrap.dedent(TRAIN))
    fresh("import runpy; runpy.run_path('train.py', run_name='__main__')")
    proc = fresh(LOAD)
    out = json.loads([line for line in proc.stdout.splitlines() if line.startswith("@@")][-1][2:])
    assert out == {"simple": ["SimpleNet", False, True], "same_weights": True, "optimizer_steps": 10.0,
                   "text": ["TextClassifier", True, [1, 2]], "custom": ["CustomLayer", True]}


def test_seed_state_dict_into_a_changed_class_fails_clearly(tmp_path, fresh):
    # Seed 003: "If the architecture of SimpleNet changed ... load_state_dict will throw an error".
    (tmp_path / "nets.py").write_text(textwrap.dedent('''
        import torch, torch.nn as nn

        class SimpleNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(10, 5)
                self.fc2 = nn.Linear(5, 2)

            def forward(self, x):
                return self.fc2(torch.relu(self.fc1(x)))
    '''))
    fresh("""
        import torch, modelsafe as ms
        from nets import SimpleNet
        ms.save(SimpleNet(), "simple.msafe", sample=torch.randn(3, 10))
    """)
    nets = (tmp_path / "nets.py").read_text().replace("nn.Linear(5, 2)", "nn.Linear(5, 3)")
    (tmp_path / "nets.py").write_text(nets)
    proc = fresh("""
        import warnings, modelsafe as ms
        warnings.simplefilter("ignore")
        try:
            ms.load("simple.msafe")
        except ms.ArchitectureMismatchError as exc:
            print("@@", exc.mismatched)
            print(exc)
    """)
    assert "@@ {'fc2.weight': ((2, 5), (3, 5)), 'fc2.bias': ((2,), (3,))}" in proc.stdout
    assert "Local module(s) whose source changed since the model was saved: nets." in proc.stdout
