"""The worker's wire protocol: data crosses as .npy and JSON, byte for byte, and nothing needs (or accepts) pickle."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.extra import pandas as hpd

import modelsafe as ms
from modelsafe.checks.data import difference
from modelsafe.envs.protocol import (
    error_payload,
    pack,
    read_message,
    rebuild_error,
    unpack,
    write_message,
)

_DTYPES = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(),
                    hnp.complex_number_dtypes(), hnp.boolean_dtypes(), hnp.unicode_string_dtypes(max_len=6),
                    hnp.datetime64_dtypes(max_period="D"))


def _through_a_pipe(x, *, tensors=True):
    """``x`` packed, written to a real pipe by one thread, read by another, unpacked."""
    blobs: list = []
    spec = pack(x, blobs)
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        sender = threading.Thread(target=lambda: (write_message(writer, {"op": "call", "data": spec}, blobs),
                                                  writer.close()))
        sender.start()
        header, received = read_message(reader)
        sender.join()
    assert header["op"] == "call"
    return unpack(header["data"], received, tensors=tensors)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)), st.booleans())
def test_any_array_crosses_exactly(array, fortran):
    if fortran:
        array = np.asfortranarray(array)
    back = _through_a_pipe(array)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@settings(max_examples=20, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(2, 30), st.integers(2, 6))), st.integers(1, 3))
def test_non_contiguous_views_cross_as_their_values(array, step):
    view = array[::step, ::-1]
    np.testing.assert_array_equal(_through_a_pipe(view), view)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hpd.data_frames([hpd.column("income", dtype=float), hpd.column("age", dtype=np.int64),
                        hpd.column("city", elements=st.sampled_from(["paris", "lyon", "nice"])),
                        hpd.column("flag", dtype=bool)], index=hpd.range_indexes(min_size=0, max_size=40)))
def test_frames_cross_with_their_names_dtypes_and_values(frame):
    assert difference(frame, _through_a_pipe(frame)) is None
    if len(frame):  # the sample codec reads the categories of a 0-row categorical back as object, not str
        categorical = frame.assign(kind=pd.Categorical(frame["city"]))
        assert difference(categorical, _through_a_pipe(categorical)) is None


def test_100k_rows_and_the_containers_of_several_inputs_cross():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=100_000), "b": rng.integers(0, 9, 100_000),
                          "c": rng.choice(["x", "yy"], 100_000)})
    assert difference(frame, _through_a_pipe(frame)) is None
    inputs = {"ids": np.arange(5), "texts": ["a", "bé"], "pair": (np.ones((2, 2)), np.zeros(3))}
    back = _through_a_pipe(inputs)
    assert back["texts"] == ["a", "bé"] and isinstance(back["pair"], tuple)
    np.testing.assert_array_equal(back["pair"][0], np.ones((2, 2)))


def test_python_objects_are_refused_before_anything_is_sent():
    with pytest.raises(ms.IsolatedWorkerError, match="cannot cross to or from the isolated worker") as caught:
        pack(np.array([object(), 1], dtype=object), [])
    assert caught.value.operation == "pack"


def test_a_blob_that_claims_python_objects_is_refused_when_read():
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    spec = {"kind": "ndarray", "member": "0"}
    with pytest.raises(ValueError, match="Python objects"):
        unpack(spec, [memoryview(header.getvalue()), memoryview(b"\0" * 8)])


def test_a_truncated_message_is_end_of_input_not_garbage():
    stream = io.BytesIO()
    write_message(stream, {"op": "x"}, [b"abcdef"])
    for cut in (0, 2, 10, len(stream.getvalue()) - 1):
        with pytest.raises(EOFError):
            read_message(io.BytesIO(stream.getvalue()[:cut]))


def test_errors_cross_as_their_class_with_their_facts_and_never_as_a_class_named_by_the_worker():
    schema = rebuild_error(error_payload(ms.SchemaError("column 'age' is missing", column="age", expected=["age"])))
    assert type(schema) is ms.SchemaError and schema.column == "age" and schema.expected == ["age"]
    from sklearn.exceptions import NotFittedError

    other = rebuild_error(error_payload(NotFittedError("fit it first")))
    assert type(other) is ValueError and str(other) == "sklearn.exceptions.NotFittedError: fit it first"
    assert "NotFittedError" in other.remote_traceback
    assert type(rebuild_error(error_payload(KeyError("k")))) is KeyError
    stop = rebuild_error({"type": "SystemExit", "module": "builtins", "message": "bye", "bases": ["SystemExit"]})
    assert type(stop) is RuntimeError  # a worker cannot stop the caller
    forged = rebuild_error({"type": "system", "module": "os", "message": "x", "bases": []})
    assert type(forged) is RuntimeError  # nothing is imported by name from a reply
