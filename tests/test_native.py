"""modelsafe._native, the optional C module: the snapshot copy and the tree-node check.

`make test` builds it, so these tests import it directly: a failed build fails them.
The copy must give exactly memmove's result for every size and alignment, because the
streaming loop has a head (up to the 16-byte boundary), a 64-byte body, a 16-byte body
and a tail. The tree check's rule is tested against a plain-Python rule, through the
restricted unpickler, in tests/security/test_unpickler.py; here, its own argument checks.
"""

from __future__ import annotations

import numpy as np
import pytest
from modelsafe._native import STREAMING_STORES, stream_copy, tree_nodes_ok


def test_every_size_and_alignment_copies_exactly():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, size=400, dtype=np.uint8)
    for size in range(0, 200):
        for dst_at in range(0, 17, 3):
            for src_at in (0, 1, 8, 15):
                dst = np.zeros(260, dtype=np.uint8)
                stream_copy(dst[dst_at:dst_at + size], source[src_at:src_at + size])
                assert np.array_equal(dst[dst_at:dst_at + size], source[src_at:src_at + size])
                assert not dst[:dst_at].any() and not dst[dst_at + size:].any()  # nothing outside


def test_a_large_copy_from_bytes_into_a_bytearray():
    data = np.random.default_rng(1).integers(0, 256, size=(5 << 20) + 13, dtype=np.uint8).tobytes()
    out = bytearray(len(data))
    stream_copy(out, data)
    assert out == data


def test_overlapping_buffers_copy_as_memmove_does():
    buf = np.arange(1000, dtype=np.int64).view(np.uint8)
    expected = buf.copy()
    expected[8:4008] = expected[0:4000]
    stream_copy(buf[8:4008], buf[0:4000])
    assert np.array_equal(buf, expected)


def test_sizes_must_match():
    with pytest.raises(ValueError, match="destination has 4 bytes, source 5"):
        stream_copy(bytearray(4), b"12345")


@pytest.mark.parametrize(
    "dst, src",
    [(b"read-only", b"read-only"),  # a destination that cannot be written
     (np.zeros(8, np.uint8)[::2], b"1234"),  # not contiguous
     (bytearray(4), np.zeros(8, np.uint8)[::2])],
)
def test_unusable_buffers_are_refused(dst, src):
    with pytest.raises((TypeError, BufferError, ValueError)):
        stream_copy(dst, src)


def test_the_platform_answer_is_published():
    import platform

    assert STREAMING_STORES == (platform.machine().lower() in {"x86_64", "amd64"})


def _records(rows, itemsize=25, at=(1, 9, 17)):
    """Node records with int64 fields at unaligned offsets (the C loop must not assume alignment)."""
    buf = bytearray(itemsize * len(rows))
    for i, row in enumerate(rows):
        for offset, value in zip(at, row):
            start = i * itemsize + offset
            buf[start:start + 8] = np.array([value], dtype=np.int64).tobytes()  # native byte order
    return bytes(buf)


@pytest.mark.parametrize("rows, n_features, ok", [
    ([(1, 2, 0), (-1, -1, -2), (-1, -1, 99)], 1, True),  # leaves may hold any feature value
    ([(1, 2, 1), (-1, -1, 0), (-1, -1, 0)], 1, False),    # feature past n_features
    ([(1, 2, -1), (-1, -1, 0), (-1, -1, 0)], 1, False),   # negative feature
    ([(1, 3, 0), (-1, -1, 0), (-1, -1, 0)], 1, False),    # child past the end
    ([(0, 2, 0), (-1, -1, 0), (-1, -1, 0)], 1, False),    # a node its own child (a cycle)
    ([(2, 1, 0), (-1, -1, 0), (1, -1, 0)], 1, False),     # one child only
    ([(-2, -2, 0)], 1, False),                            # no leaf, children before the node
    ([(1, 2, 0), (-1, -1, 0), (-1, -1, 0)], -1, False),   # no feature is in range
    ([(-1, -1, 0), (1, 2, 0), (-1, -1, 0)], 1, False),    # a later node its own child
    ([(-2**63, 2, 0), (-1, -1, 0), (-1, -1, 0)], 1, False),    # extreme indices must not wrap into range
    ([(1, 2**63 - 1, 0), (-1, -1, 0), (-1, -1, 0)], 1, False),
    ([(1, 2, 0), (-1, -1, 0), (-1, -1, 0)], 2**63 - 1, True),  # any feature count
    ([(1, 2, 0), (3, 4, 0), (-1, -1, 0), (-1, -1, 0), (-1, -1, 0)], 1, True),
    ([(1, 2, 0), (3, 4, 0), (-1, -1, 0), (-1, -1, 0), (-1, 5, 0)], 1, False),  # the last node is checked
    ([], 1, True),
])
def test_tree_nodes_ok_on_unaligned_records(rows, n_features, ok):
    assert tree_nodes_ok(_records(rows), len(rows), 25, 1, 9, 17, n_features) is ok


@pytest.mark.parametrize("count, itemsize, offsets", [
    (4, 25, (1, 9, 17)),   # more records than the buffer holds
    (3, 25, (1, 9, 18)),   # a field past the end of its record
    (3, 0, (0, 0, 0)),     # no record size
    (-1, 25, (1, 9, 17)),  # negative count
    (3, 25, (-1, 9, 17)),  # negative offset
])
def test_tree_nodes_ok_refuses_layouts_that_do_not_fit(count, itemsize, offsets):
    with pytest.raises(ValueError, match="does not fit"):
        tree_nodes_ok(_records([(-1, -1, 0)] * 3), count, itemsize, *offsets, 1)


def test_strided_node_arrays_take_the_numpy_path(monkeypatch):
    from modelsafe.security import _validators

    def no_strided_arrays(nodes, *args):
        raise AssertionError("the C check was given a strided array")

    monkeypatch.setattr(_validators, "_native_check", lambda: no_strided_arrays)
    dtype = np.dtype([("left_child", "=i8"), ("right_child", "=i8"), ("feature", "=i8")])
    both = np.array([(1, 2, 0), (0, 0, 0), (-1, -1, 0), (0, 0, 0), (-1, -1, 0), (0, 0, 0)], dtype=dtype)
    nodes = both[::2]
    assert not nodes.flags.c_contiguous
    layout = _validators._node_layout(dtype)
    assert _validators._well_formed(nodes, 3, 1, layout) and not _validators._well_formed(nodes, 3, 0, layout)
