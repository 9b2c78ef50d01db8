"""Reading a ``save_pretrained`` folder for ``ms.convert``: nothing in it runs, nothing is downloaded.

* Classes: the config's ``model_type`` names its config class and ``architectures[0]`` the model
  class, each looked up among transformers' own (:mod:`.classes`). A folder whose classes come
  from its own Python files (``auto_map``, ``trust_remote_code``) is refused: that code would run.
* Weights: safetensors files (one, or the shards of an index) through ``safetensors``; pickled
  ``pytorch_model.bin`` files only through the restricted ``torch.save`` reader that
  ``ms.convert`` passes in (``read_checkpoint``: modelsafe's one door for unpickling, after the
  folder's scan refused anything a plain state dict does not need), and only when what it
  holds is a mapping of names to tensors.
* The model is built by ``from_pretrained(None, config=..., state_dict=...)``, so transformers
  places, renames and ties the weights as it does for the folder itself; a weight the model
  needs but the folder lacks stops the conversion (it would be random).
* The tokenizer, processor or image processor, and the generation config, are read from the
  folder's JSON and vocabulary files with ``local_files_only=True``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

from modelsafe.errors import (
    ArchitectureMismatchError,
    FormatError,
    UntrustedContentError,
)
from modelsafe.flavors.transformers.classes import resolve_class
from modelsafe.flavors.transformers.folder import PretrainedFolder, read_folder
from modelsafe.flavors.transformers.hub import import_transformers, offline

__all__ = ["read_pretrained"]


def read_pretrained(path: str | Path, *, trusted: Collection[str] = (),
                    read_checkpoint: Callable[..., Any] | None = None) -> tuple[Any, Any]:
    """``(model, preprocess or None)`` from the ``save_pretrained`` folder at ``path`` (see the module docstring)."""
    folder = read_folder(path)
    if folder is None:
        raise FormatError(f"{str(path)!r} is not a save_pretrained folder (a config.json and model weights). Nothing "
                          "was read.", path=str(path))
    _refuse_remote_code(folder)
    transformers = import_transformers()
    with offline():
        config_cls = _config_class(transformers, folder)
        model_cls = resolve_class(["transformers", _architecture(folder)], "model", None)
        config = config_cls.from_pretrained(str(folder.path), local_files_only=True)
        state = _state_dict(folder, trusted, read_checkpoint)
        model = _build(transformers, model_cls, config, state, folder)
        if folder.generation_config and model.can_generate():
            model.generation_config = transformers.GenerationConfig.from_pretrained(str(folder.path),
                                                                                    local_files_only=True)
        return model.eval(), _preprocessor(transformers, folder)


def _refuse_remote_code(folder: PretrainedFolder) -> None:
    if not (folder.remote_code or folder.code_files):
        return
    names = sorted(folder.remote_code.values()) or list(folder.code_files)
    raise UntrustedContentError(
        f"{str(folder.path)!r} needs trust_remote_code: its classes come from Python code ({', '.join(names)}), not "
        "from transformers. Converting it would run that code, so nothing was read. If you trust it, load the model "
        "yourself with trust_remote_code=True and ms.save it: its classes are bundled, and loading them again "
        "needs trust_code=True.", globals=names, path=str(folder.path))


def _config_class(transformers: Any, folder: PretrainedFolder) -> Any:
    model_type = folder.config.get("model_type")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    name = CONFIG_MAPPING_NAMES.get(str(model_type))
    if name is None:
        raise FormatError(
            f"config.json of {str(folder.path)!r} has model_type {model_type!r}, which transformers "
            f"{transformers.__version__} does not know (saved with {folder.config.get('transformers_version')}). "
            "Install the transformers version the folder was saved with.", path=str(folder.path),
            model_type=str(model_type))
    return resolve_class(["transformers", name], "config", None)


def _architecture(folder: PretrainedFolder) -> str:
    if not folder.architectures:
        raise FormatError(
            f"config.json of {str(folder.path)!r} names no model class ('architectures'), so the head the weights "
            "belong to is unknown. Load it with its class (e.g. BertForSequenceClassification.from_pretrained) and "
            "ms.save the model.", path=str(folder.path))
    return folder.architectures[0]


def _state_dict(folder: PretrainedFolder, trusted: Collection[str],
                read_checkpoint: Callable[..., Any] | None) -> dict[str, Any]:
    if folder.missing:
        raise FormatError(f"{str(folder.path)!r} lacks weight files its index names: {', '.join(folder.missing)}. "
                          "The model would be incomplete. Copy the folder again completely.",
                          path=str(folder.path), missing=list(folder.missing))
    state: dict[str, Any] = {}
    if folder.safetensors:
        from safetensors.torch import load_file

        for name in folder.safetensors:
            state.update(load_file(str(folder.path / name)))
        return state
    if read_checkpoint is None:
        raise FormatError(f"{str(folder.path)!r} holds pickled weights ({', '.join(folder.bins)}) and no reader for "
                          "them was given. Use ms.convert, which reads them without running anything.")
    for name in folder.bins:
        state.update(_plain_state(read_checkpoint(folder.path / name, trusted=tuple(trusted)), name))
    return state


def _plain_state(obj: Any, name: str) -> Mapping[str, Any]:
    import torch

    odd = [f"{k!r}: {type(v).__name__}" for k, v in (obj.items() if isinstance(obj, Mapping) else ())
           if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if not isinstance(obj, Mapping) or odd:
        what = ", ".join(odd[:5]) if isinstance(obj, Mapping) else type(obj).__name__
        raise UntrustedContentError(
            f"{name} holds {what}, not only named tensors: a weights file of a save_pretrained folder is a plain state "
            "dict, and anything else in it was not written by save_pretrained. Nothing was built from it. Use a copy "
            "from the original source.", globals=[], member=name)
    return obj


def _build(transformers: Any, cls: Any, config: Any, state: dict[str, Any], folder: PretrainedFolder) -> Any:
    from packaging.version import Version

    dtype_key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    model, info = cls.from_pretrained(None, config=config, state_dict=state, output_loading_info=True,
                                      local_files_only=True, **{dtype_key: "auto"})
    missing, mismatched = list(info.get("missing_keys", ())), list(info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise ArchitectureMismatchError(
            f"The weights in {str(folder.path)!r} do not fill {cls.__name__} built from its config: "
            f"{len(missing)} missing ({', '.join(missing[:5])}), {len(mismatched)} of another shape "
            f"({', '.join(str(m[0]) for m in mismatched[:5])}). Those weights would be random, so the converted "
            "model would not predict what the original does. Check that config.json belongs to these weights.",
            missing=missing, unexpected=list(info.get("unexpected_keys", ())),
            mismatched={str(m[0]): (tuple(m[1]), tuple(m[2])) for m in mismatched})
    if info.get("unexpected_keys"):
        warnings.warn(f"{len(info['unexpected_keys'])} weight(s) in {str(folder.path)!r} are not used by "
                      f"{cls.__name__} and were dropped: {', '.join(list(info['unexpected_keys'])[:5])}.",
                      UserWarning, stacklevel=4)
    return model


def _preprocessor(transformers: Any, folder: PretrainedFolder) -> Any:
    """The folder's tokenizer, processor or image processor (None without one); only transformers' own classes."""
    source = str(folder.path)
    kwargs = {"local_files_only": True, "trust_remote_code": False}
    if folder.tokenizer and folder.processor:
        return transformers.AutoProcessor.from_pretrained(source, **kwargs)
    if folder.tokenizer:
        return transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    if folder.processor:
        if any("image_processor_type" in key for key in _keys(folder.path / "preprocessor_config.json")):
            return transformers.AutoImageProcessor.from_pretrained(source, **kwargs)
        return transformers.AutoFeatureExtractor.from_pretrained(source, **kwargs)
    return None


def _keys(path: Path) -> list[str]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return list(data) if isinstance(data, dict) else []
