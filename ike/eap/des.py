"""Single DES block encryption, for MS-CHAPv2's ChallengeResponse (RFC 2759 §8.5).

cryptography has no single DES, but 3DES with K1 = K2 = K3 is single DES (EDE with the
same key cancels the first two steps).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # cryptography < 43
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES


def expand_key(key7: bytes) -> bytes:
    """56 key bits to the 8-byte DES key layout (7 bits per byte; parity bits left 0)."""
    if len(key7) != 7:
        raise ValueError("a DES key from 7 bytes")
    bits = int.from_bytes(key7, "big")
    return bytes(((bits >> (56 - 7 * (i + 1))) & 0x7F) << 1 for i in range(8))


def des_encrypt(key8: bytes, block: bytes) -> bytes:
    if len(key8) != 8 or len(block) != 8:
        raise ValueError("DES takes an 8-byte key and an 8-byte block")
    enc = Cipher(TripleDES(key8 * 3), modes.ECB()).encryptor()  # noqa: S305 - one block
    return enc.update(block) + enc.finalize()
