"""The graph check of a TensorFlow SavedModel, shared by ``scan`` and the Keras reader.

A SavedModel is a TensorFlow program. Its ``saved_model.pb`` is parsed as a protobuf (with
the ``protobuf`` package, against the few fields of TensorFlow's schema read here; parsing
runs nothing and TensorFlow is not imported), and every op that loading it or calling
any of its functions could run is compared with :data:`EFFECT_OPS`: ops that act
outside the model's tensors (files, Python callbacks, remote calls, summaries). The
checkpoint save/restore functions TensorFlow writes into every SavedModel are not run by
loading and are not counted. ``keras_metadata.pb`` (Keras 2's layer configs) is read the
same way so that its configs can be checked like any Keras config.
"""

from __future__ import annotations

import functools
from typing import Any

#: Ops that act outside the model's tensors: files, Python callbacks, remote calls, summaries.
EFFECT_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "Save", "SaveV2", "SaveSlices", "Restore",
    "RestoreV2", "RestoreSlice", "MergeV2Checkpoints", "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReader",
    "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2", "IdentityReader", "IdentityReaderV2",
    "LMDBReader", "ReaderReadV2", "ReaderReadUpToV2", "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset",
    "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2", "SaveDataset", "SaveDatasetV2", "LoadDataset",
    "SnapshotDataset", "SnapshotDatasetV2", "CSVDataset", "CSVDatasetV2", "SqlDataset", "LMDBDataset",
    "ExperimentalSqlDataset", "ExperimentalLMDBDataset", "ExperimentalCSVDataset", "CreateSummaryFileWriter",
    "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary",
    "WriteAudioSummary", "WriteGraphSummary", "WriteRawProtoSummary", "ImportEvent", "FlushSummaryWriter",
    "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
    "DebugNumericSummaryV2", "Rpc", "TryRpc", "GenerateVocabRemapping", "LoadAndRemapMatrix",
    "DatasetToTFRecord", "ExperimentalDatasetToTFRecord", "DecodeProtoV2", "EncodeProto",
})
#: Ops that run Python code: the worst of the effect ops.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})

# message -> [(field, number, "message type" or scalar kind, repeated)], after TensorFlow's .proto files.
_SCHEMA: dict[str, list[tuple[str, int, str, bool]]] = {
    "SavedModel": [("meta_graphs", 2, "MetaGraphDef", True)],
    "MetaGraphDef": [("graph_def", 2, "GraphDef", False), ("saver_def", 3, "SaverDef", False),
                     ("object_graph_def", 7, "SavedObjectGraph", False)],
    "GraphDef": [("node", 1, "NodeDef", True), ("library", 2, "FunctionDefLibrary", False)],
    "NodeDef": [("name", 1, "string", False), ("op", 2, "string", False), ("attr", 5, "AttrEntry", True)],
    "AttrEntry": [("key", 1, "string", False), ("value", 2, "AttrValue", False)],
    "AttrValue": [("list", 1, "ListValue", False), ("s", 2, "bytes", False), ("func", 10, "NameAttrList", False)],
    "ListValue": [("func", 9, "NameAttrList", True)],
    "NameAttrList": [("name", 1, "string", False)],
    "FunctionDefLibrary": [("function", 1, "FunctionDef", True)],
    "FunctionDef": [("signature", 1, "OpDef", False), ("node_def", 3, "NodeDef", True)],
    "OpDef": [("name", 1, "string", False)],
    "SaverDef": [("save_tensor_name", 2, "string", False), ("restore_op_name", 3, "string", False)],
    "SavedObjectGraph": [("concrete_functions", 2, "ConcreteEntry", True)],
    "ConcreteEntry": [("key", 1, "string", False), ("value", 2, "Empty", False)],
    "Empty": [],
    "SavedMetadata": [("nodes", 1, "SavedObject", True)],
    "SavedObject": [("node_path", 3, "string", False), ("identifier", 4, "string", False),
                    ("metadata", 5, "string", False)],
}
_MAPS = {"AttrEntry", "ConcreteEntry"}


class GraphUnreadable(Exception):
    """The protobuf is damaged, or the protobuf package is missing (the message says which)."""


@functools.lru_cache(maxsize=None)
def _message(name: str) -> Any:
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError as exc:
        raise GraphUnreadable("the protobuf package is not installed (pip install protobuf)") from exc
    proto = descriptor_pb2.FileDescriptorProto(name="modelsafe_savedmodel.proto", package="modelsafe_tf",
                                               syntax="proto3")
    scalar = {"string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
              "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES}
    for message, fields in _SCHEMA.items():
        parent = proto.message_type.add(name=message)
        if message in _MAPS:
            parent.options.map_entry = True
        for field, number, kind, repeated in fields:
            entry = parent.field.add(name=field, number=number)
            entry.label = entry.LABEL_REPEATED if repeated else entry.LABEL_OPTIONAL
            if kind in scalar:
                entry.type = scalar[kind]
            else:
                entry.type, entry.type_name = entry.TYPE_MESSAGE, f".modelsafe_tf.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"modelsafe_tf.{name}"))


def _parse(data: bytes, message: str) -> Any:
    from google.protobuf.message import DecodeError

    try:
        return _message(message).FromString(data)
    except DecodeError as exc:
        raise GraphUnreadable(f"it is not a readable {message} protobuf ({exc})") from exc


def effect_ops(data: bytes) -> dict[str, list[str]]:
    """Ops from :data:`EFFECT_OPS` that loading or calling the SavedModel in ``data`` could run: ``{op: [where]}``.

    Raises :class:`GraphUnreadable` when ``data`` cannot be parsed.
    """
    found: dict[str, list[str]] = {}
    for meta in _parse(data, "SavedModel").meta_graphs:
        library = {f.signature.name: f for f in meta.graph_def.library.function}
        saver = {meta.saver_def.save_tensor_name.split(":")[0], meta.saver_def.restore_op_name.split(":")[0]}
        queue: list[str] = list(meta.object_graph_def.concrete_functions)
        for node in meta.graph_def.node:
            if node.name in saver:
                continue
            _note(node, "graph", found)
            queue.extend(_called(node))
        seen: set[str] = set()
        while queue:
            name = queue.pop()
            if name in seen or name not in library:
                continue
            seen.add(name)
            for node in library[name].node_def:
                _note(node, name, found)
                queue.extend(_called(node))
    return found


def keras_metadata(data: bytes) -> list[tuple[str, str]]:
    """``(node path, JSON config)`` of every layer in a Keras 2 ``keras_metadata.pb``."""
    return [(node.node_path or node.identifier, node.metadata) for node in _parse(data, "SavedMetadata").nodes
            if node.metadata]


def _note(node: Any, where: str, found: dict[str, list[str]]) -> None:
    if node.op in EFFECT_OPS:
        found.setdefault(node.op, []).append(f"{where}/{node.name}")
    elif node.op == "PrintV2" and "output_stream" in node.attr:
        stream = node.attr["output_stream"].s.decode("utf-8", "replace")
        if not stream.startswith(("std", "log")):
            found.setdefault("PrintV2", []).append(f"{where}/{node.name}")


def _called(node: Any) -> list[str]:
    names = []
    for value in node.attr.values():
        if value.func.name:
            names.append(value.func.name)
        names.extend(f.name for f in value.list.func)
    return names
