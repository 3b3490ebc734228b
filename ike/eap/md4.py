"""MD4 (RFC 1320), only for the NT password hash of MS-CHAPv2.

OpenSSL 3 drops MD4 from its default provider, so hashlib cannot be relied on for it.
MD4 is broken as a hash; MS-CHAPv2 leaves no choice.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    x &= _MASK
    return ((x << n) | (x >> (32 - n))) & _MASK


def _f(x: int, y: int, z: int) -> int:
    return (x & y) | (~x & z)


def _g(x: int, y: int, z: int) -> int:
    return (x & y) | (x & z) | (y & z)


def _h(x: int, y: int, z: int) -> int:
    return x ^ y ^ z


# Per round: the order message words are taken in, and the shift of each of the 4 steps.
_ROUNDS = (
    (_f, 0, tuple(range(16)), (3, 7, 11, 19)),
    (_g, 0x5A827999, (0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), (3, 5, 9, 13)),
    (_h, 0x6ED9EBA1, (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15), (3, 9, 11, 15)),
)


def md4(data: bytes) -> bytes:
    bit_len = (8 * len(data)) & 0xFFFFFFFFFFFFFFFF
    data = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", bit_len)
    state = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    for block in range(0, len(data), 64):
        x = struct.unpack_from("<16I", data, block)
        a, b, c, d = state
        for fn, k, order, shifts in _ROUNDS:
            for i, word in enumerate(order):
                a = _rotl(a + fn(b, c, d) + x[word] + k, shifts[i % 4])
                a, b, c, d = d, a, b, c
        state = [(s + v) & _MASK for s, v in zip(state, (a, b, c, d), strict=True)]
    return struct.pack("<4I", *state)
