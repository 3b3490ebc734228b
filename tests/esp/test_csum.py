"""esp.csum against a plain RFC 1071 reference, on random data."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esp.csum import checksum, fold, sum16, sums_of_equal_parts


def reference(data: bytes) -> int:
    """RFC 1071: 16-bit words, end-around carry."""
    if len(data) & 1:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(st.binary(max_size=3000))
def test_sum16_folds_to_the_reference_sum(data: bytes) -> None:
    want = reference(data)
    got = fold(sum16(data))
    # Ones complement has two zeros; fold() gives 0 only for an all-zero sum.
    assert got == want or (got == 0xFFFF and want == 0xFFFF)


@given(st.binary(min_size=1, max_size=600), st.integers(1, 8))
def test_sums_of_equal_parts_are_each_parts_sum(part_bytes: bytes, count: int) -> None:
    part = len(part_bytes)
    data = bytes(b ^ (k * 31 & 0xFF) for k in range(count) for b in part_bytes)
    # Sums are numbers congruent modulo 0xFFFF (what fold() keeps), not word-by-word equal.
    assert [fold(s) for s in sums_of_equal_parts(data, part)] == [
        fold(sum16(data[k * part : (k + 1) * part])) for k in range(count)
    ]


@given(st.lists(st.binary(min_size=20, max_size=20), min_size=1, max_size=10), st.data())
def test_a_packet_with_its_checksum_sums_to_zero_and_any_change_shows(
    bodies: list[bytes], data: st.DataObject
) -> None:
    base = 0x1234
    parts = [checksum(base + sum16(b)).to_bytes(2, "big") + b for b in bodies]
    sums = sums_of_equal_parts(b"".join(parts), 22)
    assert all((base + s) % 0xFFFF == 0 for s in sums)
    bad = data.draw(st.integers(0, len(parts) - 1))
    broken = bytearray(parts[bad])
    broken[5] ^= 0x40
    parts[bad] = bytes(broken)
    sums = sums_of_equal_parts(b"".join(parts), 22)
    assert [k for k, s in enumerate(sums) if (base + s) % 0xFFFF] == [bad]


def test_checksum_of_a_known_header() -> None:
    # RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert fold(sum16(data)) == 0xDDF2
    assert checksum(sum16(data)) == 0xFFFF - 0xDDF2


@pytest.mark.parametrize("part", [1, 2, 3, 4, 6, 1000, 1347, 1348, 1350])
def test_sums_array_is_sum16_modulo_0xffff(part: int) -> None:
    from esp.csum import sums_array

    for data in (os.urandom(part * 9), b"\xff" * part * 3, bytes(part * 2)):
        want = [sum16(data[k : k + part]) % 0xFFFF for k in range(0, len(data), part)]
        assert sums_array(data, part).tolist() == want
        assert sums_array(memoryview(data), part).tolist() == want


@pytest.mark.parametrize("skip", [0, 1, 2, 20, 40])
def test_row_sums_of_a_strided_view(skip: int) -> None:
    """esp.coalesce sums the TCP part of joined segments: rows that skip their IP header."""
    import numpy as np

    from esp.csum import row_sums

    rows = np.frombuffer(os.urandom(60 * 7), np.uint8).reshape(7, 60)
    want = [sum16(bytes(r[skip:])) % 0xFFFF for r in rows]
    assert row_sums(rows[:, skip:]).tolist() == want
