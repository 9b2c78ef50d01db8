"""The typed manifest (``modelsafe.json``): what an artifact holds and how to load it.

The manifest is plain JSON with a published schema (``modelsafe/schema/manifest-v1.json``)
and a format version. This module converts between JSON and frozen dataclasses and
rejects anything malformed with a :class:`~modelsafe.errors.FormatError` that names the
offending field. It imports nothing heavy, so ``ms.inspect`` stays framework-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from modelsafe.errors import FormatError

#: The name of the manifest member in every artifact.
MANIFEST_NAME = "modelsafe.json"
#: The format this version writes. Readers for older versions stay in the code.
FORMAT_VERSION = 1
#: Oldest format this version still reads.
MIN_FORMAT_VERSION = 1
FORMAT_NAME = "modelsafe"


@dataclass(frozen=True)
class MemberRecord:
    """Size in bytes and SHA-256 (hex) of one member file."""

    size: int
    sha256: str


@dataclass(frozen=True)
class Component:
    """One saved object (the model, or its preprocessing) and the flavor that reads it.

    ``data`` is the flavor's own JSON (for example the pickle's referenced globals).
    ``members`` lists the member files the component owns.
    """

    flavor: str
    flavor_version: int
    members: tuple[str, ...]
    data: Mapping[str, Any] = field(default_factory=dict)
    type_name: str = ""


@dataclass(frozen=True)
class Manifest:
    """Everything an artifact records. Read with :func:`modelsafe.inspect`."""

    format_version: int
    modelsafe_version: str
    created: str
    components: Mapping[str, Component]
    members: Mapping[str, MemberRecord]
    environment: Mapping[str, Any] = field(default_factory=dict)
    schema: Mapping[str, Any] | None = None
    verification: Mapping[str, Any] | None = None
    code: tuple[Mapping[str, Any], ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] | None = None
    #: What produced the model (``save(provenance=...)``): git commit, datasets, free-form fields.
    provenance: Mapping[str, Any] | None = None
    #: The portable ONNX member (``save(portable="onnx")``): graph, inputs, outputs with their tolerance.
    portable: Mapping[str, Any] | None = None
    #: Not recorded in the artifact: the check of the signature beside it (``P.sig``) that
    #: :func:`modelsafe.inspect` made, a :class:`~modelsafe.signing.report.SignatureReport` (who
    #: signed it, and whether that key is trusted here). None for a manifest read otherwise (load, save).
    signature: Any = field(default=None, compare=False, repr=False)

    @property
    def flavor(self) -> str:
        """The model component's flavor name."""
        return self.components["model"].flavor

    def __str__(self) -> str:
        """What the artifact holds, one fact per line, and who signed it when :func:`modelsafe.inspect`
        read it (``modelsafe inspect`` prints the same, with every member)."""
        from modelsafe.artifact.describe import describe

        return describe(self, max_members=20)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-able data, with ``"signature"`` (the report's ``to_dict()``) when
        :func:`modelsafe.inspect` checked it."""
        data = self._record()
        if self.signature is not None:
            data["signature"] = self.signature.to_dict()
        return data

    def _record(self) -> dict[str, Any]:
        """What ``modelsafe.json`` holds."""
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "modelsafe_version": self.modelsafe_version,
            "created": self.created,
            "components": {
                key: {
                    "flavor": c.flavor,
                    "flavor_version": c.flavor_version,
                    "type": c.type_name,
                    "members": list(c.members),
                    "data": dict(c.data),
                }
                for key, c in self.components.items()
            },
            "members": {
                name: {"size": m.size, "sha256": m.sha256} for name, m in sorted(self.members.items())
            },
            "environment": dict(self.environment),
            "schema": None if self.schema is None else dict(self.schema),
            "verification": None if self.verification is None else dict(self.verification),
            "code": [dict(c) for c in self.code],
            "metadata": dict(self.metadata),
            "source": None if self.source is None else dict(self.source),
            "provenance": None if self.provenance is None else dict(self.provenance),
            **({} if self.portable is None else {"portable": dict(self.portable)}),
        }

    def to_json(self) -> bytes:
        """The bytes of ``modelsafe.json`` (never the signature check, which is not part of the artifact)."""
        return _readable_json(self._record()).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, *, where: str = MANIFEST_NAME) -> "Manifest":
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(
                f"{where} is not valid JSON ({exc}): the manifest is damaged, so nothing in the "
                "artifact can be trusted. Re-export the model from its source.",
                path=where,
            ) from exc
        return cls.from_dict(data, where=where)

    @classmethod
    def from_dict(cls, data: Any, *, where: str = MANIFEST_NAME) -> "Manifest":
        reader = _FieldReader(where)
        reader.require(isinstance(data, dict), "", "a JSON object", data)
        reader.require(data.get("format") == FORMAT_NAME, "format", f"'{FORMAT_NAME}'", data.get("format"))
        version = reader.get(data, "format_version", int)
        check_format_version(version, data.get("modelsafe_version", "unknown"))
        components = {
            key: _component_from_dict(reader, key, raw)
            for key, raw in reader.get(data, "components", dict).items()
        }
        reader.require("model" in components, "components", "a 'model' component", list(components))
        members = {
            name: MemberRecord(
                size=reader.get(raw, "size", int, f"members.{name}"),
                sha256=reader.get(raw, "sha256", str, f"members.{name}"),
            )
            for name, raw in reader.get(data, "members", dict).items()
        }
        return cls(
            format_version=version,
            modelsafe_version=reader.get(data, "modelsafe_version", str),
            created=reader.get(data, "created", str),
            components=components,
            members=members,
            environment=reader.get(data, "environment", dict, default={}),
            schema=reader.get(data, "schema", dict, default=None),
            verification=reader.get(data, "verification", dict, default=None),
            code=tuple(reader.get(data, "code", list, default=[])),
            metadata=reader.get(data, "metadata", dict, default={}),
            source=reader.get(data, "source", dict, default=None),
            provenance=reader.get(data, "provenance", dict, default=None),
            portable=reader.get(data, "portable", dict, default=None),
        )


def check_format_version(version: int, written_by: str) -> None:
    """Raise FormatError unless this modelsafe reads format ``version``."""
    from modelsafe._version import __version__

    if version > FORMAT_VERSION:
        raise FormatError(
            f"The artifact has format version {version} (written by modelsafe {written_by}), "
            f"but this modelsafe {__version__} reads format versions {MIN_FORMAT_VERSION}-{FORMAT_VERSION}: "
            "a newer format may store things this version would misread. "
            "Upgrade with: pip install -U modelsafe",
            expected=FORMAT_VERSION,
            actual=version,
        )
    if version < MIN_FORMAT_VERSION:
        raise FormatError(
            f"The artifact has format version {version}, older than the oldest this modelsafe "
            f"{__version__} reads ({MIN_FORMAT_VERSION}). Load it with the modelsafe {written_by} "
            "that wrote it and save it again.",
            expected=MIN_FORMAT_VERSION,
            actual=version,
        )


def _component_from_dict(reader: "_FieldReader", key: str, raw: Any) -> Component:
    where = f"components.{key}"
    reader.require(isinstance(raw, dict), where, "a JSON object", raw)
    members = reader.get(raw, "members", list, where)
    reader.require(all(isinstance(m, str) for m in members), f"{where}.members", "a list of names", members)
    return Component(
        flavor=reader.get(raw, "flavor", str, where),
        flavor_version=reader.get(raw, "flavor_version", int, where),
        members=tuple(members),
        data=reader.get(raw, "data", dict, where, default={}),
        type_name=reader.get(raw, "type", str, where, default=""),
    )


_MISSING = object()
#: How a manifest field's expected JSON type is named in a message.
_KIND_NAMES = {int: "an integer", str: "a string", dict: "a JSON object", list: "a list", float: "a number",
               bool: "true or false"}


class _FieldReader:
    """Reads typed fields and reports the first malformed one by its dotted path."""

    def __init__(self, where: str) -> None:
        self.where = where

    def require(self, condition: bool, path: str, expected: str, received: Any) -> None:
        if not condition:
            shown = repr(received)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            raise FormatError(
                f"Invalid manifest field '{path or '<root>'}' in {self.where}: expected {expected}. "
                f"Received: {shown}. The manifest is damaged or was not written by modelsafe; "
                "re-export the model from its source.",
                path=path,
                expected=expected,
                actual=received,
            )

    def get(self, data: Mapping[str, Any], key: str, kind: type, prefix: str = "", default: Any = _MISSING) -> Any:
        path = f"{prefix}.{key}" if prefix else key
        value = data.get(key, _MISSING)
        if value is _MISSING or (value is None and default is None):
            self.require(default is not _MISSING, path, _KIND_NAMES.get(kind, kind.__name__), "<missing>")
            return default
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        self.require(ok, path, _KIND_NAMES.get(kind, kind.__name__), value)
        return value


_compact = json.JSONEncoder(allow_nan=False, separators=(", ", ": ")).encode


def _readable_json(value: Any, depth: int = 0) -> str:
    """JSON with one entry per line for the first two levels, each deeper value on one line.

    As readable as an indented dump for the manifest's tables, and encoded by json's C
    encoder (an indented dump runs in pure Python, slow for a forest's long buffer tables).
    """
    if depth >= 2 or not isinstance(value, dict) or not value:
        return _compact(value)
    pad = " " * (depth + 1)
    entries = ",\n".join(f"{pad}{_compact(str(key))}: {_readable_json(item, depth + 1)}" for key, item in value.items())
    return "{\n" + entries + "\n" + " " * depth + "}"
