"""Tokenizers, processors, image processors and feature extractors, as their ``save_pretrained`` files.

Saving calls the object's own ``save_pretrained`` into a private temporary folder and stores
every file it wrote as a member under ``files/``: a fast tokenizer gives ``tokenizer.json``
plus ``tokenizer_config.json`` and ``special_tokens_map.json`` (``legacy_format=False``: no
slow-tokenizer files); a slow tokenizer gives its vocabulary (``vocab.txt``) or its
sentencepiece model (``spiece.model``), stored as data; image processors and feature
extractors give their JSON config. Only text, JSON and sentencepiece model files are
accepted (nothing that could hold pickle or code); anything else stops the save.

Loading writes the members (already checked against their hashes) into a new private
temporary folder, builds the recorded class with ``from_pretrained(folder,
local_files_only=True)`` while the hub's offline switches are held, and removes the folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from modelsafe.errors import FormatError, SaveError
from modelsafe.flavors._base import (
    ComponentSource,
    ComponentStore,
    LoadOptions,
    SavedComponent,
)
from modelsafe.flavors.transformers.classes import (
    BASES,
    audit_class,
    class_path,
    custom_refs,
    derives_from,
    resolve_class,
)
from modelsafe.flavors.transformers.folder import DATA_SUFFIXES
from modelsafe.flavors.transformers.hub import offline

__all__ = ["ROLES", "audit_preprocessor", "load_preprocessor", "role_of", "save_preprocessor", "transform"]

#: Roles in the order they are tested (a processor holds a tokenizer; test it first).
ROLES = ("processor", "tokenizer", "image_processor", "feature_extractor")
FILES = "files"
#: transformers' "no maximum length" (``VERY_LARGE_INTEGER``, 1e30) and anything near it.
_UNBOUNDED = 10**29


def role_of(obj: Any) -> str | None:
    """``"tokenizer"``, ``"processor"``, ``"image_processor"``, ``"feature_extractor"``, or None."""
    return next((role for role in ROLES if derives_from(obj, BASES[role])), None)


def _allowed(relname: str) -> bool:
    path = PurePosixPath(relname)
    return (not path.is_absolute() and ".." not in path.parts and relname == path.as_posix()
            and path.suffix.lower() in DATA_SUFFIXES)


def save_preprocessor(obj: Any, store: ComponentStore, role: str) -> SavedComponent:
    """Store ``obj``'s ``save_pretrained`` files under ``store``; return the component's record."""
    path = class_path(obj)
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="modelsafe-hf-save-") as tmp:
        if role == "tokenizer" and getattr(obj, "is_fast", False):
            obj.save_pretrained(tmp, legacy_format=False)
        else:
            obj.save_pretrained(tmp)
        written = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        refused = [p.relative_to(tmp).as_posix() for p in written if not _allowed(p.relative_to(tmp).as_posix())]
        if refused:
            raise SaveError(
                f"{'.'.join(path)}.save_pretrained wrote {', '.join(refused)}, which is neither text, JSON nor a "
                "sentencepiece model. modelsafe stores only files that cannot hold pickle or code, so this "
                f"{role.replace('_', ' ')} cannot be stored. Save one built from plain vocabulary files.",
                files=refused, role=role)
        for file in written:
            rel = file.relative_to(tmp).as_posix()
            files[rel] = store.write(f"{FILES}/{rel}", file.read_bytes())
    modules = {"transformers"}
    if role in ("tokenizer", "processor"):
        modules.add("tokenizers")
    if any(name.endswith(".model") for name in files):
        modules.add("sentencepiece")
    if role in ("image_processor", "processor"):
        modules.add("PIL")
    refs = custom_refs([path])
    data = {"kind": "preprocessor", "role": role, "class": path, "files": files}
    return SavedComponent(data=data, modules=modules | {m for m, _ in refs}, type_name=".".join(path), refs=refs)


def audit_preprocessor(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
    """Check the role, the class path and every file name; import nothing from the artifact."""
    role, files = data.get("role"), data.get("files")
    if role not in ROLES:
        raise FormatError(f"Unknown preprocessor role {role!r}: the artifact was written by a newer modelsafe. "
                          "Upgrade with: pip install -U modelsafe", role=role)
    audit_class(data.get("class"), role, options)
    if not isinstance(files, dict) or not files:
        raise FormatError(f"The {role.replace('_', ' ')} lists no files; the manifest was damaged or edited. "
                          "Re-export the model from its source.", role=role)
    for rel, member in files.items():
        if not (isinstance(rel, str) and _allowed(rel) and member == f"{FILES}/{rel}" and source.has(member)):
            raise FormatError(
                f"The {role.replace('_', ' ')} names the file {rel!r} (member {member!r}), which is not a text, JSON "
                "or sentencepiece file of this component. modelsafe never writes this, so the manifest was edited; "
                "nothing was read. Re-export the model from its source.", role=role, file=str(rel))


def load_preprocessor(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
    """Rebuild the preprocessor from its files, in a private folder, with the hub's offline switches held."""
    role = data["role"]
    with offline(), tempfile.TemporaryDirectory(prefix="modelsafe-hf-load-") as tmp:
        cls = resolve_class(data["class"], role, options)
        for rel, member in data["files"].items():
            target = Path(tmp, *PurePosixPath(rel).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.view(member))
        return cls.from_pretrained(tmp, local_files_only=True)


def transform(obj: Any, x: Any) -> Any:
    """Apply the preprocessor to raw input: texts, images or audio, in a batch, as torch tensors."""
    role = role_of(obj)
    if role == "tokenizer":
        texts = [x] if isinstance(x, str) else list(x)
        # Truncate to the tokenizer's own limit; one without a limit (a fresh tokenizer) keeps every token.
        bounded = int(getattr(obj, "model_max_length", 0) or 0) < _UNBOUNDED
        return obj(texts, padding=True, truncation=bounded, return_tensors="pt")
    if role == "processor":
        if isinstance(x, Mapping):
            return obj(**x, return_tensors="pt")
        if isinstance(x, str) or (isinstance(x, (list, tuple)) and x and all(isinstance(t, str) for t in x)):
            return obj(text=[x] if isinstance(x, str) else list(x), padding=True, return_tensors="pt")
        return obj(images=x, return_tensors="pt")
    if role == "image_processor":
        return obj(images=x, return_tensors="pt")
    kwargs = {"sampling_rate": obj.sampling_rate} if getattr(obj, "sampling_rate", None) else {}
    return obj(list(x) if getattr(x, "ndim", 1) > 1 else x, return_tensors="pt", **kwargs)
