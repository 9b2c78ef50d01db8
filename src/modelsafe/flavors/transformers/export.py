"""``ms.export(path, folder, to="huggingface")``: a ``save_pretrained`` folder from a verified artifact.

The artifact is loaded with every check of ``ms.load`` (integrity, audit, environment,
verification on the stored sample), then written by transformers' own ``save_pretrained``
(weights as safetensors), so ``AutoModel...from_pretrained(folder)`` and
``AutoTokenizer.from_pretrained(folder)`` (or ``AutoImageProcessor``...) read it. A pipeline
writes its model and preprocessors; a model saved with a tokenizer or processor as
``preprocess`` writes both into the one folder. Custom classes (bundled code) are written
too, but ``from_pretrained`` finds them only where their code is importable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modelsafe.errors import UnsupportedModelError

__all__ = ["export_pretrained"]


def export_pretrained(path: str | os.PathLike[str], destination: str | os.PathLike[str], **options: Any) -> Path:
    """Write the artifact at ``path`` as a ``save_pretrained`` folder at ``destination``; return it.

    ``options`` are ``ms.load``'s keywords (``trust_code=``, ``env=``, ``verify=``...).

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.export("bert.msafe", "bert-hf", to="huggingface")   # doctest: +SKIP
    PosixPath('bert-hf')
    """
    from modelsafe._api import load
    from modelsafe.flavors.transformers.flavor import kind_of

    destination = Path(destination)
    with load(path, **options) as bundle:
        model = bundle.model
        kind = kind_of(model) if bundle.manifest.flavor == "transformers" else None
        if kind not in ("model", "pipeline"):
            raise UnsupportedModelError(
                f"{str(path)!r} holds a {bundle.manifest.flavor} model ({bundle.manifest.components['model'].type_name})"
                ", and only transformers models and pipelines can be written as a Hugging Face save_pretrained "
                "folder. Export it to another format (to='onnx' or 'mlflow').",
                type_name=bundle.manifest.components["model"].type_name)
        destination.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(destination), safe_serialization=True)
        preprocess = bundle.preprocess
        if kind == "model" and preprocess is not None and kind_of(preprocess) == "preprocessor":
            preprocess.save_pretrained(str(destination))
    return destination
