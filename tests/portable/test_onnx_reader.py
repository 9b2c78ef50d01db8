"""modelsafe's own reading of ONNX files (security._onnx), against the onnx package's, and its rules."""

from __future__ import annotations

import posixpath

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from modelsafe.security._onnx import (
    _FIELDS,
    OnnxUnreadable,
    looks_like_onnx,
    read_model,
    refusals,
    unsafe_location,
)


def test_the_field_subset_matches_onnx_proto():
    """Every field read has the number and kind onnx.proto gives it."""
    for message, fields in _FIELDS.items():
        descriptor = getattr(onnx, message).DESCRIPTOR
        for name, number, kind, repeated in fields:
            real = descriptor.fields_by_name[name]
            assert real.number == number, (message, name)
            assert real.is_repeated == repeated, (message, name)
            if real.message_type is not None:
                assert real.message_type.name == kind, (message, name)


DOMAINS = st.sampled_from(["", "ai.onnx", "ai.onnx.ml", "com.microsoft", "org.example", "pkg.local"])
NAMES = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8)


@st.composite
def graphs(draw, depth=0):
    """A graph of nodes in assorted domains, some with If subgraphs, some initializers external."""
    nodes = []
    for i in range(draw(st.integers(0, 4))):
        attributes = {}
        if depth < 2 and draw(st.booleans()):
            attributes["then_branch"] = draw(graphs(depth + 1))
            attributes["else_branch"] = draw(graphs(depth + 1))
        nodes.append(helper.make_node(draw(NAMES), [], [f"o{depth}_{i}"], domain=draw(DOMAINS), name=f"n{depth}_{i}",
                                      **attributes))
    initializers = []
    for j in range(draw(st.integers(0, 2))):
        tensor = numpy_helper.from_array(np.zeros(1, np.float32), f"t{depth}_{j}")
        if draw(st.booleans()):
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            entry = tensor.external_data.add()
            entry.key, entry.value = "location", draw(st.sampled_from(["w.bin", "../w.bin", "/etc/passwd", "d/w.bin"]))
        initializers.append(tensor)
    return helper.make_graph(nodes, f"g{depth}", [], [], initializer=initializers)


def _expected(model: onnx.ModelProto) -> tuple[set[str], set[str]]:
    domains, locations = set(), set()

    def walk(graph):
        for tensor in graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                locations.add({e.key: e.value for e in tensor.external_data}["location"])
        for node in graph.node:
            domains.add(node.domain)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g)

    walk(model.graph)
    return domains, locations


@settings(max_examples=60, deadline=None)
@given(graphs())
def test_domains_and_external_data_are_read_as_onnx_reads_them(graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = model.SerializeToString()
    facts = read_model(data)
    domains, locations = _expected(model)
    assert set(facts.domains) == domains
    assert set(facts.external) == locations
    flagged = {r.subject for r in refusals(facts)}
    assert flagged == {d for d in domains if d not in ("", "ai.onnx", "ai.onnx.ml")} | {
        loc for loc in locations if unsafe_location(loc)}
    assert looks_like_onnx(data)


def test_a_local_function_is_not_a_custom_operator():
    body = [helper.make_node("Relu", ["x"], ["y"])]
    function = helper.make_function("pkg.local", "MyRelu", ["x"], ["y"], body, [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("MyRelu", ["a"], ["b"], domain="pkg.local")], "g", [], [])
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17),
                                                                            helper.make_opsetid("pkg.local", 1)])
    facts = read_model(model.SerializeToString())
    assert refusals(facts) == [] and facts.functions == ["pkg.local.MyRelu"]
    function.node.append(helper.make_node("Evil", ["y"], ["z"], domain="org.evil"))  # its body is checked too
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17)])
    assert [r.subject for r in refusals(read_model(model.SerializeToString()))] == ["org.evil"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_read_or_refused_never_crash(data):
    try:
        read_model(data)
    except OnnxUnreadable:
        pass


SEGMENTS = st.sampled_from(["a", "b.bin", "..", ".", "weights", "x..y"])


@given(st.lists(SEGMENTS, min_size=1, max_size=5), st.booleans())
def test_a_location_is_safe_only_inside_the_folder(segments, absolute):
    location = ("/" if absolute else "") + "/".join(segments)
    escapes = absolute or ".." in segments
    assert bool(unsafe_location(location)) == escapes, location
    if not escapes:
        assert not posixpath.normpath(location).startswith("..")


@pytest.mark.parametrize("location", ["", "a\\..\\b", "C:/x", "w\x00.bin"])
def test_odd_locations_are_refused(location):
    assert unsafe_location(location)
