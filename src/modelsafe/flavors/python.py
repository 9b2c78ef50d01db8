"""The generic ``python`` flavor: a plain callable, or an object with predict/transform,
plus its state (vocabularies, lookup tables, tokenizers built from plain Python types).

Stored like scikit-learn objects: a pickle stream with out-of-band arrays, read only
through the restricted unpickler. Custom code is bundled by :mod:`modelsafe.code.bundle`.
"""

from __future__ import annotations

from typing import Any

from modelsafe.errors import SchemaError
from modelsafe.flavors._pickled import GraphFlavor


class PythonFlavor(GraphFlavor):
    name = "python"
    version = 1

    def transform(self, obj: Any, x: Any) -> Any:
        """Apply a preprocessing step: a callable, a transformer, a vocabulary, or a list of those."""
        if isinstance(obj, dict):
            return _lookup(obj, x)
        if isinstance(obj, (list, tuple)) and obj and all(_is_step(s) for s in obj):
            for step in obj:  # a chain: tokenizer -> vocabulary -> ...
                x = self.transform(step, x)
            return x
        return super().transform(obj, x)


_UNKNOWN_KEYS = ("<unk>", "[UNK]", "<UNK>", "UNK")


def _is_step(obj: Any) -> bool:
    return isinstance(obj, dict) or callable(obj) or hasattr(obj, "transform")


def _lookup(vocabulary: dict[Any, Any], x: Any) -> Any:
    """Map tokens (or lists of tokens) through a vocabulary, using its unknown-token entry if any."""
    unknown = next((vocabulary[k] for k in _UNKNOWN_KEYS if k in vocabulary), None)

    def one(token: Any) -> Any:
        if token in vocabulary:
            return vocabulary[token]
        if unknown is None:
            raise SchemaError(
                f"Token {token!r} is not in the saved vocabulary ({len(vocabulary)} entries), which has no unknown-token "
                f"entry ({', '.join(_UNKNOWN_KEYS)}). Add one to the vocabulary before saving, or clean the input.",
                expected="a token of the vocabulary", actual=token)
        return unknown

    if isinstance(x, (list, tuple)):
        return [_lookup(vocabulary, item) if isinstance(item, (list, tuple)) else one(item) for item in x]
    return one(x)
