"""ONNX model files: what a graph reaches outside itself, read without onnx or onnxruntime.

An ONNX file is a protobuf ``ModelProto``. Two of its features reach beyond the graph:

* **external data**: a tensor's bytes may live in another file, named by a ``location`` that
  the runtime resolves against the model's folder. A location that is absolute or climbs out
  with ``..`` makes the runtime read any file the process can (``/etc/passwd``, a key) into a
  tensor, and predictions can leak it. Such a location is refused: it must be a plain
  relative path inside the model's folder (inside the artifact, for a modelsafe member).
* **custom-op domains**: a node whose domain is not ONNX's own (``""``/``ai.onnx``,
  ``ai.onnx.ml``, ``ai.onnx.preview.training``) nor a function defined in the model runs an
  operator from a native library registered with the runtime. Refused unless trusted.

The file is parsed by protobuf (``google.protobuf``, which onnxruntime depends on) with a
descriptor of only the fields these checks read, built here, so neither ``onnx`` nor a
runtime is needed. :func:`scan_onnx` is the scanner's reader; :func:`read_model` and
:func:`refusals` are what ``load(runtime="onnx")`` audits with.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from modelsafe.security._findings import Finding, ItemRecord

__all__ = [
    "STANDARD_DOMAINS",
    "OnnxFacts",
    "OnnxUnreadable",
    "looks_like_onnx",
    "read_model",
    "refusals",
    "scan_onnx",
    "unsafe_location",
]

#: Operator domains of the ONNX standard ("" and "ai.onnx" are the same one).
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"})
#: protobuf cannot parse a message of 2 GiB or more (larger models keep their tensors in external data).
MAX_MODEL = (2 << 30) - 1
_PACKAGE = "modelsafe_onnx_subset"
_OPTIONAL, _REPEATED = 1, 3
_TYPES = {"int64": 3, "int32": 5, "string": 9}
#: message -> (field, number, type or message, repeated): the fields of onnx.proto these checks read.
_FIELDS: dict[str, list[tuple[str, int, str, bool]]] = {
    "ModelProto": [("ir_version", 1, "int64", False), ("producer_name", 2, "string", False),
                   ("producer_version", 3, "string", False), ("graph", 7, "GraphProto", False),
                   ("opset_import", 8, "OperatorSetIdProto", True), ("training_info", 20, "TrainingInfoProto", True),
                   ("functions", 25, "FunctionProto", True)],
    "OperatorSetIdProto": [("domain", 1, "string", False), ("version", 2, "int64", False)],
    "TrainingInfoProto": [("initialization", 1, "GraphProto", False), ("algorithm", 2, "GraphProto", False)],
    "GraphProto": [("node", 1, "NodeProto", True), ("name", 2, "string", False),
                   ("initializer", 5, "TensorProto", True), ("input", 11, "ValueInfoProto", True),
                   ("output", 12, "ValueInfoProto", True), ("sparse_initializer", 15, "SparseTensorProto", True)],
    "ValueInfoProto": [("name", 1, "string", False)],
    "NodeProto": [("name", 3, "string", False), ("op_type", 4, "string", False),
                  ("attribute", 5, "AttributeProto", True), ("domain", 7, "string", False),
                  ("overload", 8, "string", False)],
    "AttributeProto": [("name", 1, "string", False), ("t", 5, "TensorProto", False), ("g", 6, "GraphProto", False),
                       ("tensors", 10, "TensorProto", True), ("graphs", 11, "GraphProto", True),
                       ("sparse_tensor", 22, "SparseTensorProto", False),
                       ("sparse_tensors", 23, "SparseTensorProto", True)],
    "TensorProto": [("name", 8, "string", False), ("external_data", 13, "StringStringEntryProto", True),
                    ("data_location", 14, "int32", False)],
    "StringStringEntryProto": [("key", 1, "string", False), ("value", 2, "string", False)],
    "SparseTensorProto": [("values", 1, "TensorProto", False), ("indices", 2, "TensorProto", False)],
    "FunctionProto": [("name", 1, "string", False), ("node", 7, "NodeProto", True),
                      ("opset_import", 9, "OperatorSetIdProto", True), ("domain", 10, "string", False),
                      ("attribute_proto", 11, "AttributeProto", True), ("overload", 13, "string", False)],
}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class OnnxUnreadable(Exception):
    """The content is not an ONNX model protobuf can read."""


@dataclass(frozen=True)
class OnnxFacts:
    """What an ONNX model declares and references.

    ``domains`` maps every operator domain a node uses (outside the model's own functions) to
    the nodes that use it (listed for non-standard domains only); ``external`` maps every
    external-data location to its tensors.
    """

    ir_version: int
    producer: str
    opsets: dict[str, int]
    domains: dict[str, list[str]]
    external: dict[str, list[str]]
    inputs: list[str]
    outputs: list[str]
    functions: list[str] = field(default_factory=list)

    def custom_domains(self, trusted: Iterable[str] = ()) -> dict[str, list[str]]:
        """The non-standard domains nodes use, that are not in ``trusted``."""
        allowed = STANDARD_DOMAINS | set(trusted)
        return {d: places for d, places in self.domains.items() if d not in allowed}


def looks_like_onnx(head: bytes) -> bool:
    """Whether ``head`` starts as a ModelProto does: field 1 (``ir_version``, a small varint) first."""
    return len(head) >= 4 and head[0] == 0x08 and 1 <= head[1] <= 32 and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)


def read_model(data: bytes | memoryview) -> OnnxFacts:
    """The facts of the ONNX model in ``data`` (OnnxUnreadable when protobuf cannot read it as one)."""
    from google.protobuf.message import DecodeError

    if len(data) > MAX_MODEL:
        raise OnnxUnreadable(f"it holds {len(data)} bytes, more than a protobuf message can (2 GiB)")
    model = _message("ModelProto")()
    try:
        model.ParseFromString(bytes(data))
    except (DecodeError, RecursionError, ValueError) as exc:
        raise OnnxUnreadable(f"protobuf cannot read it as an ONNX ModelProto ({exc})") from exc
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise OnnxUnreadable("it has no IR version or no graph")
    local = {(f.domain, f.name) for f in model.functions}
    domains: dict[str, list[str]] = {}
    external: dict[str, list[str]] = {}
    graphs = [("graph", model.graph)] + [(f"training_info[{i}].{part}", getattr(t, part)) for i, t in
                                          enumerate(model.training_info) for part in ("initialization", "algorithm")]
    for where, graph in graphs:
        _walk_graph(graph, where, local, domains, external)
    for function in model.functions:
        where = f"function {function.domain}.{function.name}"
        for node in function.node:
            _walk_node(node, where, local, domains, external)
        for attribute in function.attribute_proto:
            _walk_attribute(attribute, where, local, domains, external)
    return OnnxFacts(ir_version=int(model.ir_version), producer=f"{model.producer_name} {model.producer_version}".strip(),
                     opsets={o.domain: int(o.version) for o in model.opset_import}, domains=domains,
                     external=external, inputs=[v.name for v in model.graph.input],
                     outputs=[v.name for v in model.graph.output],
                     functions=sorted(f"{d}.{n}" for d, n in local))


def _walk_graph(graph: Any, where: str, local: set[tuple[str, str]], domains: dict[str, list[str]],
                external: dict[str, list[str]]) -> None:
    for tensor in graph.initializer:
        _tensor(tensor, f"{where} initializer {tensor.name!r}", external)
    for sparse in graph.sparse_initializer:
        for part in ("values", "indices"):
            _tensor(getattr(sparse, part), f"{where} sparse initializer {part}", external)
    for node in graph.node:
        _walk_node(node, where, local, domains, external)


def _walk_node(node: Any, where: str, local: set[tuple[str, str]], domains: dict[str, list[str]],
               external: dict[str, list[str]]) -> None:
    place = f"{where}: {node.op_type} node {node.name!r}" if node.name else f"{where}: {node.op_type} node"
    if (node.domain, node.op_type) not in local:
        places = domains.setdefault(node.domain, [])
        if node.domain not in STANDARD_DOMAINS:
            places.append(place)
    for attribute in node.attribute:
        _walk_attribute(attribute, place, local, domains, external)


def _walk_attribute(attribute: Any, where: str, local: set[tuple[str, str]], domains: dict[str, list[str]],
                    external: dict[str, list[str]]) -> None:
    here = f"{where} attribute {attribute.name!r}"
    tensors = [attribute.t] if attribute.HasField("t") else []
    tensors += list(attribute.tensors)
    for sparse in ([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []) + list(attribute.sparse_tensors):
        tensors += [sparse.values, sparse.indices]
    for tensor in tensors:
        _tensor(tensor, here, external)
    subgraphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
    for graph in subgraphs:
        _walk_graph(graph, f"{here} subgraph", local, domains, external)


def _tensor(tensor: Any, where: str, external: dict[str, list[str]]) -> None:
    entries = {e.key: e.value for e in tensor.external_data}
    if tensor.data_location == _EXTERNAL or entries:
        external.setdefault(entries.get("location", ""), []).append(where)


def unsafe_location(location: str) -> str:
    """Why an external-data ``location`` could reach outside the model's folder ("" when it cannot)."""
    if not location:
        return "names no file"
    if "\x00" in location:
        return "holds a NUL byte"
    if "\\" in location:
        return "holds a backslash (a Windows path separator)"
    if location.startswith("/") or (len(location) > 1 and location[1] == ":"):
        return "is an absolute path"
    if ".." in location.split("/"):
        return "climbs out of the model's folder with '..'"
    if posixpath.normpath(location).startswith(".."):
        return "resolves outside the model's folder"
    return ""


@dataclass(frozen=True)
class Refusal:
    """One reason an ONNX model must not be run: ``kind`` is ``external-data`` or ``custom-domain``."""

    kind: str
    subject: str
    what: str
    places: tuple[str, ...]


def refusals(facts: OnnxFacts, trusted: Iterable[str] = ()) -> list[Refusal]:
    """Every external-data location that escapes, and every custom-op domain not in ``trusted``."""
    found = []
    for location, tensors in sorted(facts.external.items()):
        why = unsafe_location(location)
        if why:
            found.append(Refusal("external-data", location, f"external data location {location!r} {why} "
                                 f"({_some(tensors)})", tuple(tensors)))
    for domain, places in sorted(facts.custom_domains(trusted).items()):
        found.append(Refusal("custom-domain", domain, f"operators of the custom domain {domain!r} ({_some(places)})",
                             tuple(places)))
    return found


def _some(places: list[str]) -> str:
    return ", ".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")


#: Per refusal kind: (finding severity, why it matters, how to fix it).
WHY_FIX = {
    "external-data": ("high",
                      ("the runtime would read that file into a tensor: any file the process can read "
                       "(a key, a password file) could end up in the model's outputs"),
                      "do not run this model; external data must be a relative path inside the model's folder"),
    "custom-domain": ("high",
                      ("its operators come from a native library registered with the runtime, not from "
                       "ONNX, and nothing in the file says what they do"),
                      ("run it only if you trust its source and the library that provides the domain (modelsafe "
                       "load: trusted=['<domain>']); otherwise re-export the model with standard operators")),
}


def scan_onnx(w: Any, location: str, f: BinaryIO, size: int) -> bool:
    """The scanner's reader (``w`` is its :class:`~modelsafe.security._walk.Walker`): False when the content is not
    ONNX, else record it and its refusals as findings."""
    head = f.read(16)
    f.seek(0)
    if not looks_like_onnx(head):
        return False
    if size > MAX_MODEL:
        w.add("medium", "archive-limit", location, None, "ONNX", f"the ONNX model holds {size} bytes")
        return True
    try:
        facts = read_model(f.read())
    except ImportError:
        w.add("medium", "unknown-format", location, 0, "ONNX", "ONNX content cannot be analysed without protobuf "
              "(pip install 'modelsafe[onnx]')")
        return True
    except OnnxUnreadable as exc:
        w.add("medium", "incomplete", location, 0, "ONNX", f"the ONNX model cannot be read: {exc}")
        return True
    w.items[-1] = ItemRecord(location, "onnx", size, {"producer": facts.producer, "opsets": facts.opsets,
                                                      "external_data": sorted(facts.external)})
    for refusal in refusals(facts):
        severity, why, fix = WHY_FIX[refusal.kind]
        fix = fix.replace("'<domain>'", repr(refusal.subject))
        w.findings.append(Finding(severity, f"onnx-{refusal.kind}", location, None, refusal.subject,
                                  f"{refusal.what}: {why}. Fix: {fix}.", refusal.what))
    return True


def _message(name: str) -> Any:
    """The message class ``name`` of the subset of onnx.proto in :data:`_FIELDS`."""
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"{_PACKAGE}.{name}"))


@functools.cache
def _pool() -> Any:
    """A descriptor pool of its own holding :data:`_FIELDS` (so onnx's own messages, if loaded, are untouched)."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    proto = descriptor_pb2.FileDescriptorProto(name="modelsafe_onnx_subset.proto", package=_PACKAGE, syntax="proto2")
    for message, fields in _FIELDS.items():
        entry = proto.message_type.add(name=message)
        for field_name, number, kind, repeated in fields:
            spec = entry.field.add(name=field_name, number=number, label=_REPEATED if repeated else _OPTIONAL)
            if kind in _TYPES:
                spec.type = _TYPES[kind]
            else:
                spec.type = 11  # TYPE_MESSAGE
                spec.type_name = f".{_PACKAGE}.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return pool

