"""The generic ``python`` flavor: a plain callable, or an object with predict/transform,
plus its state (vocabularies, lookup tables, tokenizers built from plain Python types).

Stored like scikit-learn objects: a pickle stream with out-of-band arrays, read only
through the restricted unpickler. Custom code is bundled by :mod:`modelsafe._code`.
"""

from __future__ import annotations

from typing import Any, Mapping

from modelsafe.flavors._base import ComponentSource, ComponentStore, Flavor, LoadOptions, SavedComponent
from modelsafe.flavors._pickled import audit_graph, dump_graph, load_graph


class PythonFlavor(Flavor):
    name = "python"
    version = 1

    def save(self, obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
        return dump_graph(obj, store)

    def audit(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
        audit_graph(source, data, options)

    def load(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
        return load_graph(source, data, options)

    def transform(self, obj: Any, x: Any) -> Any:
        if isinstance(obj, dict):  # a vocabulary or lookup table
            return [obj[item] for item in x] if isinstance(x, (list, tuple)) else obj[x]
        return super().transform(obj, x)
