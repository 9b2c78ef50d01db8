"""The records a scan produces: findings, pickle streams read, and items (files, members) seen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Severity order, worst first.
SEVERITIES = ("critical", "high", "medium")

#: Per finding kind: why it matters and how to fix it (the "what" carries the values).
_WHY_FIX: dict[str, tuple[str, str]] = {
    "dangerous-global": (
        "loading the file calls or hands out a function that runs commands, evaluates code or reaches "
        "files and the network: this is how pickle exploits work",
        "do not load this file; get the model from a trusted source, or re-export it with modelsafe"),
    "unknown-global": (
        "it is not on modelsafe's allowlist, so loading the file would import and possibly call code "
        "nobody has vetted",
        "if you trust the file's source, pass trusted=['<name>'] to modelsafe convert/load; otherwise "
        "do not load it"),
    "denial-of-service": (
        "loading it would build a structure (or allocate memory) far beyond its size, which can stall or crash "
        "the process that loads it",
        "do not load this file; a real model file never does this"),
    "graph-op": (
        "a SavedModel is a TensorFlow program, and this op reads or writes files, calls back into Python or "
        "reaches the network when the model is loaded or called",
        "load it only if you trust its source (ms.load(..., trust_code=True)); otherwise re-export the model "
        "without that op"),
    "torchscript-code": (
        "the archive's TorchScript code calls operators outside torch's own tensor operations: they come from "
        "native libraries or reach files",
        "load it only if you trust its source and know which library provides those operators"),
    "incomplete": (
        "a stream that cannot be read to its end cannot be vouched for: anything may follow",
        "copy the file again from its source; if it stays unreadable, do not load it"),
    "unknown-format": (
        "modelsafe cannot analyse this content, so it cannot say it is safe",
        "convert the model to a format modelsafe reads (pickle, joblib, torch, Keras, npy, safetensors), "
        "or only load it if you trust its source"),
    "persistent-id": (
        "persistent ids hand objects to loader code outside the pickle, which modelsafe cannot see",
        "load it only with the framework loader it was written for, after checking its source"),
    "unsafe-archive": (
        "an archive member that escapes its folder, links elsewhere or repeats a name can overwrite or "
        "expose other files when extracted, or show two readers different content",
        "do not extract or load this archive"),
    "archive-limit": (
        "reading it could exhaust memory or time (a decompression bomb or a flood of members)",
        "do not load this file"),
    "keras-code": (
        "Keras runs this while loading or calling the model, and a file can use it to run any code",
        "do not load the model with safe_mode=False; rebuild the layer in code you control, or load only "
        "if you trust the source"),
    "bundled-code": (
        "bundled source runs when the artifact is loaded with trust_code=True",
        "review the bundled modules (modelsafe inspect lists them) before loading with trust_code=True"),
    "integrity": (
        "the artifact changed after it was saved (corruption or tampering)",
        "copy the artifact again from its source, or re-export the model"),
}


@dataclass(frozen=True)
class Finding:
    """One reason a file is not clean.

    Attributes: ``severity`` (critical, high, medium), ``kind``, ``location`` (member path
    inside the file, nested archives joined with ``!``; empty for the file itself),
    ``offset`` (byte offset in that member, when known), ``subject`` (the global or
    construct), ``message`` (what happened, why it matters, how to fix it).
    """

    severity: str
    kind: str
    location: str
    offset: int | None
    subject: str
    message: str
    #: The first part of ``message`` alone (what happened, with the values).
    what: str = ""

    def describe(self) -> str:
        where = self.location or "(file)"
        at = f" @ byte {self.offset}" if self.offset is not None else ""
        return f"[{self.severity}] {where}{at}: {self.message}"


@dataclass(frozen=True)
class GlobalRecord:
    """A global a stream references, with the scanner's verdict."""

    name: str
    invoked: bool
    verdict: str
    offset: int
    #: The module part of ``name`` (the rest is the qualified name inside it).
    module: str = ""


@dataclass(frozen=True)
class StreamRecord:
    """One pickle stream that was read."""

    location: str
    offset: int
    protocol: int
    opcodes: int
    complete: bool
    globals: tuple[GlobalRecord, ...]
    persistent_ids: int = 0


@dataclass(frozen=True)
class ItemRecord:
    """One file or member that was looked at, and what it turned out to be."""

    location: str
    kind: str
    size: int
    facts: dict[str, Any] = field(default_factory=dict)


def explain(kind: str, subject: str = "") -> tuple[str, str]:
    """(why it matters, how to fix it) for a finding of ``kind`` about ``subject``."""
    why, fix = _WHY_FIX.get(kind, _WHY_FIX["unknown-format"])
    return why, fix.replace("'<name>'", repr(subject) if subject else "'module.name'")


def message(kind: str, what: str, subject: str = "") -> str:
    """The three-part message for a finding of ``kind`` (about ``subject``: a global, a member)."""
    why, fix = explain(kind, subject)
    return f"{what}: {why}. Fix: {fix}."
