"""A test-only SkCrypto: AES-GCM with a 16-octet ICV as IKEv2 uses it (RFC 5282).

Independent of ike.crypto so that codec tests do not depend on the production module.
Wire form: IV (8) | ciphertext of (plaintext | padding | pad length) | ICV (16); the GCM
nonce is salt (4) | IV (8); the aad is everything before the IV.
"""

from __future__ import annotations

import itertools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ike.errors import CryptoError


class FakeGcmSk:
    iv_len = 8
    icv_len = 16

    def __init__(self, key: bytes, salt: bytes, block_len: int = 4) -> None:
        if len(salt) != 4:
            raise ValueError("salt is 4 octets")
        self._aead = AESGCM(key)
        self._salt = salt
        self.block_len = block_len  # pad (plaintext | pad length) to a multiple of this
        self._counter = itertools.count(1)

    @classmethod
    def pair(cls, key_len: int = 16) -> tuple[FakeGcmSk, FakeGcmSk]:
        """Two instances with the same fresh key: a sender and a receiver."""
        key, salt = os.urandom(key_len), os.urandom(4)
        return cls(key, salt), cls(key, salt)

    def _padded_len(self, plain_len: int) -> int:
        return -(-(plain_len + 1) // self.block_len) * self.block_len

    def sealed_len(self, plain_len: int) -> int:
        return self.iv_len + self._padded_len(plain_len) + self.icv_len

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        pad = self._padded_len(len(plaintext)) - len(plaintext) - 1
        iv = next(self._counter).to_bytes(8, "big")  # unique per key, as GCM requires
        data = plaintext + bytes(pad) + bytes((pad,))
        return iv + self._aead.encrypt(self._salt + iv, data, aad)

    def open(self, aad: bytes, body: bytes) -> bytes:
        if len(body) < self.iv_len + 1 + self.icv_len:
            raise CryptoError("SK body too short")
        iv = body[: self.iv_len]
        try:
            data = self._aead.decrypt(self._salt + iv, body[self.iv_len :], aad)
        except InvalidTag as e:
            raise CryptoError("ICV mismatch") from e
        pad = data[-1]
        if pad + 1 > len(data):
            raise CryptoError("bad pad length")
        return data[: len(data) - pad - 1]
