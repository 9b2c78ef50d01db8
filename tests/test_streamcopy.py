"""modelsafe._streamcopy: the snapshot copy with streaming stores (a C module).

`make test` builds it, so these tests import it directly: a failed build fails them.
The copy must give exactly memmove's result for every size and alignment, because the
streaming loop has a head (up to the 16-byte boundary), a 64-byte body, a 16-byte body
and a tail.
"""

from __future__ import annotations

import numpy as np
import pytest

from modelsafe._streamcopy import STREAMING_STORES, stream_copy


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
