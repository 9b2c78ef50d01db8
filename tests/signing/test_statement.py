"""The OMS statement, property-based: the layout model_signing builds, and tamper detection."""

from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from modelsafe.signing.statement import (
    DEFAULT_IGNORE_PATHS,
    SignatureProblem,
    check_json_value,
    compare_resources,
    statement_for,
    subject_digest,
    validate_statement,
)

_component = st.text(st.characters(codec="utf-8", exclude_characters="/\\\x00"), min_size=1, max_size=6).filter(
    lambda c: c not in (".", "..") and not c.startswith(".git"))
_paths = st.lists(st.lists(_component, min_size=1, max_size=3).map("/".join), min_size=1, max_size=12, unique=True)
_digest = st.binary(min_size=32, max_size=32).map(bytes.hex)


def _no_file_is_a_folder(paths: list[str]) -> bool:
    return not any(other.startswith(p + "/") for p in paths for other in paths)


@settings(max_examples=300, deadline=None)
@given(paths=_paths, data=st.data())
def test_statement_layout(paths, data):
    digests = {p: data.draw(_digest) for p in paths}
    statement = validate_statement(statement_for(digests.items(), model_name="m"))
    names = [r["name"] for r in statement["predicate"]["resources"]]
    assert names == sorted(paths, key=PurePosixPath)  # model_signing's order: by path component
    assert statement["subject"][0]["digest"]["sha256"] == hashlib.sha256(
        b"".join(bytes.fromhex(digests[n]) for n in names)).hexdigest()
    assert statement["predicate"]["serialization"] == {"method": "files", "hash_type": "sha256",
                                                       "allow_symlinks": False,
                                                       "ignore_paths": list(DEFAULT_IGNORE_PATHS)}


@settings(max_examples=300, deadline=None)
@given(paths=_paths, data=st.data(), change=st.sampled_from(["none", "drop", "add", "digest", "stray"]))
def test_any_change_to_the_files_is_detected(paths, data, change):
    expected = {p: data.draw(_digest) for p in paths}
    statement = statement_for(expected.items(), model_name="m")
    present = set(expected)
    new_name = data.draw(_component.filter(lambda c: c not in expected))
    if change == "drop":
        gone = data.draw(st.sampled_from(sorted(expected)))
        del expected[gone]
        present.discard(gone)
    elif change == "add":
        expected[new_name] = data.draw(_digest)
        present.add(new_name)
    elif change == "digest":
        name = data.draw(st.sampled_from(sorted(expected)))
        expected[name] = data.draw(_digest.filter(lambda d: d != expected[name]))
    elif change == "stray":
        present.add(new_name)
    diff = compare_resources(statement, expected, present)
    assert diff.ok == (change == "none")
    found = {"missing": diff.missing, "added": diff.added, "changed": diff.changed, "unlisted": diff.unlisted}
    kind = {"drop": "missing", "add": "added", "digest": "changed", "stray": "unlisted"}.get(change)
    assert [k for k, names in found.items() if names] == ([kind] if kind else [])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=_paths.filter(_no_file_is_a_folder), contents=st.lists(st.binary(max_size=64), min_size=12,
                                                                     max_size=12))
def test_statement_equals_what_model_signing_builds_for_the_same_folder(paths, contents):
    import model_signing
    from google.protobuf import json_format
    from model_signing._signing import signing as oms_signing

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "model"
        resources = []
        for path, content in zip(paths, contents):
            target = root / path
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            except OSError:  # a name this file system refuses (too long in bytes...)
                assume(False)
            resources.append((path, hashlib.sha256(content).hexdigest()))
        theirs = json_format.MessageToDict(oms_signing.Payload(model_signing.hashing.hash(root)).statement.pb)
    ours = statement_for(resources, model_name="model")
    theirs["predicate"]["serialization"]["ignore_paths"].sort()
    assert ours == theirs


def test_subject_digest_of_a_known_value():
    assert subject_digest(["00" * 32, "ff" * 32]) == hashlib.sha256(b"\x00" * 32 + b"\xff" * 32).hexdigest()


@pytest.mark.parametrize("resources, message", [
    ([("a/../b", "0" * 64)], "not a canonical relative POSIX path"),
    ([("/abs", "0" * 64)], "not a canonical relative POSIX path"),
    ([("a\\b", "0" * 64)], "not a canonical relative POSIX path"),
    ([(".git/config", "0" * 64)], "lies under a path model_signing ignores"),
    ([("a", "0" * 63)], "is not 64 hex digits"),
    ([("a", "0" * 64), ("a", "1" * 64)], "listed twice"),
    ([], "at least one resource"),
])
def test_statement_inputs_are_refused(resources, message):
    with pytest.raises(ValueError, match=message):
        statement_for(resources, model_name="m")


def _tampered(change):
    statement = statement_for([("a", "0" * 64), ("b", "1" * 64)], model_name="m")
    change(statement)
    return statement


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(_type="x"), "not an in-toto Statement"),
    (lambda s: s.update(predicateType="https://model_signing/Digests/v0.1"), "pre-1.0 model_signing predicate"),
    (lambda s: s["subject"].append(s["subject"][0]), "exactly one subject"),
    (lambda s: s["predicate"]["resources"][0].update(digest="zz"), "not hex"),
    (lambda s: s["predicate"]["resources"].append(s["predicate"]["resources"][0]), "twice"),
    (lambda s: s["predicate"]["resources"][0].update(digest="2" * 64), "subject digest that does not match"),
    (lambda s: s["predicate"]["serialization"].pop("hash_type"), "predicate.serialization"),
    (lambda s: s.pop("predicate"), "no predicate object"),
])
def test_statements_model_signing_would_misread_are_refused(change, message):
    with pytest.raises(SignatureProblem, match=message) as info:
        validate_statement(_tampered(change))
    assert info.value.kind == "malformed"


def test_shards_and_other_hashes_cannot_be_compared_without_re_hashing():
    sharded = _tampered(lambda s: s["predicate"]["serialization"].update(method="shards", shard_size=10))
    with pytest.raises(SignatureProblem, match="file pieces") as info:
        compare_resources(sharded, {"a": "0" * 64}, ["a"])
    assert info.value.kind == "unsupported"
    blake = _tampered(lambda s: s["predicate"]["resources"][0].update(algorithm="blake2b"))
    with pytest.raises(SignatureProblem, match="blake2b"):
        compare_resources(blake, {"a": "0" * 64}, ["a"])


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False,
                     allow_infinity=False) | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(),
                     inner), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(value=_json)
def test_json_values_are_accepted(value):
    check_json_value(value, "x")


@pytest.mark.parametrize("value", [math.nan, math.inf, 2**53 + 1, {1: "a"}, {"a": object()}, b"bytes"])
def test_values_json_readers_would_not_keep_are_refused(value):
    with pytest.raises(ValueError):
        check_json_value(value, "x")
