"""The manifest: JSON round trip, published schema, format versions, malformed input."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelsafe.artifact.manifest import (
    FORMAT_VERSION,
    Component,
    Manifest,
    MemberRecord,
)
from modelsafe.errors import FormatError

SCHEMA = json.loads(resources.files("modelsafe").joinpath("schema/manifest-v1.json").read_text())

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_./", min_size=1, max_size=30)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.text(max_size=20),
                      st.floats(allow_nan=False, allow_infinity=False))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=10)


@st.composite
def manifests(draw):
    members = draw(st.dictionaries(names, st.builds(MemberRecord, st.integers(0, 2**40),
                                                    st.text("0123456789abcdef", min_size=64, max_size=64)),
                                   max_size=6))
    comps = {"model": Component(draw(st.sampled_from(["sklearn", "torch", "python"])), draw(st.integers(1, 5)),
                                tuple(draw(st.lists(names, max_size=3))),
                                draw(st.dictionaries(st.text(max_size=8), json_value, max_size=3)), "pkg.Model")}
    return Manifest(format_version=FORMAT_VERSION, modelsafe_version="0.1.0", created="2026-01-01T00:00:00+00:00",
                    components=comps, members=members,
                    metadata=draw(st.dictionaries(st.text(max_size=8), json_value, max_size=3)))


@given(manifests())
def test_round_trip_and_schema(manifest):
    raw = manifest.to_json()
    jsonschema.validate(json.loads(raw), SCHEMA)
    assert Manifest.from_json(raw) == manifest


def _minimal() -> dict:
    return {"format": "modelsafe", "format_version": 1, "modelsafe_version": "0.1.0", "created": "x",
            "components": {"model": {"flavor": "sklearn", "flavor_version": 1, "members": []}}, "members": {}}


def test_newer_format_version_is_refused_with_upgrade_hint():
    data = _minimal() | {"format_version": FORMAT_VERSION + 1, "modelsafe_version": "9.0"}
    with pytest.raises(FormatError) as err:
        Manifest.from_dict(data)
    assert "pip install -U modelsafe" in str(err.value) and "modelsafe 9.0" in str(err.value)
    assert err.value.actual == FORMAT_VERSION + 1


@pytest.mark.parametrize("field,value", [("format", "other"), ("format_version", "1"), ("components", []),
                                         ("members", {"a": {"size": "big", "sha256": "x"}})])
def test_malformed_fields_are_named(field, value):
    data = _minimal() | {field: value}
    with pytest.raises(FormatError) as err:
        Manifest.from_dict(data)
    assert field in str(err.value)


def test_not_json():
    with pytest.raises(FormatError, match="not valid JSON"):
        Manifest.from_json(b"{nope")


@given(st.binary(max_size=200))
def test_garbage_never_crashes(raw):
    try:
        Manifest.from_json(raw)
    except FormatError:
        pass


@pytest.mark.parametrize("field, value, expected", [
    ("format_version", "1", "an integer"), ("created", 5, "a string"), ("components", [], "a JSON object"),
    ("members", {"a": {"size": "big", "sha256": "x"}}, "an integer")])
def test_malformed_field_messages_name_the_type_in_words(field, value, expected):
    with pytest.raises(FormatError) as err:
        Manifest.from_dict(_minimal() | {field: value})
    assert f": expected {expected}. Received: " in str(err.value) and err.value.expected == expected


@given(manifests())
def test_str_is_a_readable_summary_not_the_dataclass_repr(manifest):
    text = str(manifest)
    assert text.startswith("modelsafe artifact\n  format 1, written by modelsafe 0.1.0 at 2026-01-01T00:00:00+00:00")
    assert "Manifest(" not in text and "MemberRecord(" not in text
    assert f"  members: {len(manifest.members)}, " in text
    assert "  model: pkg.Model (flavor " in text and "verification: not possible (saved without a sample)" in text


def test_str_of_many_members_stays_short():
    members = {f"model/weights-{i:04d}.safetensors": MemberRecord(10, "ab" * 32) for i in range(500)}
    manifest = Manifest(format_version=FORMAT_VERSION, modelsafe_version="0.1.0", created="now",
                        components={"model": Component("torch", 1, tuple(members))}, members=members)
    lines = str(manifest).splitlines()
    assert len(lines) < 30 and lines[-2] == "    … and 480 more (modelsafe inspect lists them all)"


def test_converted_from_is_written_out():
    source = {"path": "/data/old.pkl", "kind": "pickle", "size": 2200, "sha256": "9f2c41ab07e1" + "0" * 52,
              "trusted": ["mypkg.Model"], "converted": "2026-01-02T03:04:05+00:00"}
    manifest = Manifest(format_version=FORMAT_VERSION, modelsafe_version="0.1.0", created="now",
                        components={"model": Component("sklearn", 1, ())}, members={}, source=source)
    assert ("  converted from: /data/old.pkl (pickle, 2.1 KiB, sha256 9f2c41ab07e1…) on 2026-01-02T03:04:05+00:00; "
            "trusted: mypkg.Model") in str(manifest).splitlines()
    assert "{" not in str(manifest)
