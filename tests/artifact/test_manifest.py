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
