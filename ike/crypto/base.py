"""The interfaces that connect the codec and the session to concrete algorithms.

Concrete classes live beside this file (prf.py, sk.py, ke.py). The session receives
factories for randomness and key exchange so that tests can replay exchanges exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

RandomSource = Callable[[int], bytes]  # like os.urandom: n -> n random bytes


class Prf(Protocol):
    """A pseudo-random function of RFC 7296 (HMAC-SHA2-*, HMAC-SHA1)."""

    id: int  # PrfId
    output_len: int  # bytes
    key_len: int  # preferred key length in bytes (SK_d, SK_pi, SK_pr length)

    def __call__(self, key: bytes, data: bytes) -> bytes: ...


class SkCrypto(Protocol):
    """Protection of the SK/SKF payload in one direction (RFC 7296 §3.14, RFC 5282 for AEAD).

    ``aad`` is every byte of the message before the IV: the IKE header and the SK (or SKF)
    generic header (and, for SKF, the fragment number and count). The IKE header's length
    field must already hold the final total length when seal() is called, which is why
    sealed_len() exists.
    """

    iv_len: int
    icv_len: int
    block_len: int

    def sealed_len(self, plain_len: int) -> int:
        """Length of IV | ciphertext (with padding and Pad Length) | ICV for plain_len bytes."""
        ...

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        """Pad, encrypt and authenticate; returns IV | ciphertext | ICV."""
        ...

    def open(self, aad: bytes, body: bytes) -> bytes:
        """Verify the ICV (before using any byte), decrypt, strip padding.

        ``body`` is IV | ciphertext | ICV. Raises ike.errors.CryptoError on any failure.
        """
        ...


class KeyExchange(Protocol):
    """One side of one key exchange: a DH group now, a KEM (ML-KEM, RFC 9370) later.

    The initiator calls public_bytes() then finish(responder_data); the responder calls
    respond(initiator_data) and sends the bytes it returns. For DH, respond() returns our
    public value; for a KEM it returns the ciphertext.
    """

    group: int  # KeId

    def public_bytes(self) -> bytes: ...

    def respond(self, peer_data: bytes) -> tuple[bytes, bytes]:
        """(KE data to send back, shared secret). Raises CryptoError on a bad peer value."""
        ...

    def finish(self, peer_data: bytes) -> bytes:
        """Shared secret from the responder's KE data. Raises CryptoError on a bad value."""
        ...


KeyExchangeFactory = Callable[[int], KeyExchange]  # KeId -> fresh KeyExchange
