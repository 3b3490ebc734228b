"""Protection of the SK/SKF payload (RFC 7296 §3.14) for one direction of one IKE SA.

AEAD ciphers follow RFC 5282 (AES-GCM) and RFC 7634 (ChaCha20-Poly1305): the last 4 bytes
of the key material are a salt, the nonce is salt | 8-byte IV, and the IV is a counter so it
never repeats under one key. AES-CBC is encrypt-then-MAC with a random IV.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ike.constants import EncrId, IntegId
from ike.crypto.algs import encr_key_len, encr_spec, integ_key_len
from ike.crypto.base import RandomSource, SkCrypto
from ike.crypto.integ import HmacInteg, get_integ
from ike.errors import CryptoError

AEAD_IV_LEN = 8
AEAD_ICV_LEN = 16
SALT_LEN = 4
_IV_LIMIT = 1 << (8 * AEAD_IV_LEN)
MAX_PAD = 255


def pad(plaintext: bytes, block_len: int) -> bytes:
    """Append zero padding and the Pad Length octet up to a multiple of block_len."""
    pad_len = -(len(plaintext) + 1) % block_len
    return plaintext + bytes(pad_len) + bytes((pad_len,))


def unpad(padded: bytes) -> bytes:
    """Strip padding after authentication; any pad bytes are accepted (§3.14)."""
    if not padded:
        raise CryptoError("SK payload has no Pad Length octet")
    pad_len = padded[-1]
    if pad_len > len(padded) - 1:
        raise CryptoError("SK payload Pad Length exceeds its content")
    return padded[: len(padded) - 1 - pad_len]


class AeadSk:
    """AES-GCM-16 or ChaCha20-Poly1305; aad is every byte of the message before the IV."""

    iv_len = AEAD_IV_LEN
    icv_len = AEAD_ICV_LEN
    block_len = 1  # both are stream modes: no padding is needed

    def __init__(self, cipher: AESGCM | ChaCha20Poly1305, salt: bytes, first_iv: int = 0) -> None:
        if len(salt) != SALT_LEN:
            raise CryptoError("AEAD salt must be 4 bytes")
        if not 0 <= first_iv < _IV_LIMIT:
            raise CryptoError("AEAD IV counter out of range")
        self._cipher = cipher  # one object per SA direction: the key schedule is done once
        self._salt = salt
        self._next_iv = first_iv

    def sealed_len(self, plain_len: int) -> int:
        return self.iv_len + plain_len + 1 + self.icv_len

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        if self._next_iv >= _IV_LIMIT:
            raise CryptoError("AEAD IV space exhausted; the SA must be rekeyed")
        iv = self._next_iv.to_bytes(AEAD_IV_LEN, "big")
        self._next_iv += 1
        return iv + self._cipher.encrypt(self._salt + iv, pad(plaintext, 1), aad)

    def open(self, aad: bytes, body: bytes) -> bytes:
        if len(body) < self.iv_len + 1 + self.icv_len:
            raise CryptoError("SK payload too short")
        iv = body[: self.iv_len]
        try:
            # decrypt() checks the tag before it returns any plaintext.
            padded = self._cipher.decrypt(self._salt + iv, body[self.iv_len :], aad)
        except InvalidTag:
            raise CryptoError("SK payload ICV mismatch") from None
        return unpad(padded)


class CbcSk:
    """AES-CBC with a separate HMAC over aad | IV | ciphertext (encrypt-then-MAC)."""

    iv_len = 16
    block_len = 16

    def __init__(
        self, key: bytes, integ: HmacInteg, integ_key: bytes, random: RandomSource
    ) -> None:
        if len(integ_key) != integ.key_len:
            raise CryptoError("integrity key has the wrong length")
        self._aes = algorithms.AES(key)  # reused; CBC needs a fresh mode object per IV
        self._integ = integ
        self._integ_key = integ_key
        self._random = random
        self.icv_len = integ.icv_len

    def sealed_len(self, plain_len: int) -> int:
        padded = plain_len + 1 + (-(plain_len + 1) % self.block_len)
        return self.iv_len + padded + self.icv_len

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        iv = self._random(self.iv_len)
        if len(iv) != self.iv_len:
            raise CryptoError("random source returned a short IV")
        enc = Cipher(self._aes, modes.CBC(iv)).encryptor()
        ct = enc.update(pad(plaintext, self.block_len)) + enc.finalize()
        return iv + ct + self._integ.compute(self._integ_key, aad + iv + ct)

    def open(self, aad: bytes, body: bytes) -> bytes:
        ct_len = len(body) - self.iv_len - self.icv_len
        if ct_len < self.block_len or ct_len % self.block_len:
            raise CryptoError("SK payload length is not a whole number of blocks")
        signed, icv = body[: -self.icv_len], body[-self.icv_len :]
        if not self._integ.verify(self._integ_key, aad + signed, icv):
            raise CryptoError("SK payload ICV mismatch")
        iv, ct = signed[: self.iv_len], signed[self.iv_len :]
        dec = Cipher(self._aes, modes.CBC(iv)).decryptor()
        return unpad(dec.update(ct) + dec.finalize())


def make_sk_crypto(
    encr_id: int,
    key_bits: int | None,
    integ_id: int,
    sk_e: bytes,
    sk_a: bytes,
    random: RandomSource = os.urandom,
) -> SkCrypto:
    """SK protection for one direction: sk_e/sk_a are SK_ei/SK_ai or SK_er/SK_ar.

    For AEAD ciphers sk_e includes the 4-byte salt, integ_id is NONE and sk_a is empty.
    Raises ProposalError for an unsupported algorithm and CryptoError for wrong key sizes.
    """
    spec = encr_spec(encr_id, key_bits)
    if len(sk_e) != encr_key_len(encr_id, key_bits):
        raise CryptoError("encryption key has the wrong length")
    if spec.aead:
        if integ_id != IntegId.NONE or sk_a:
            raise CryptoError("AEAD ciphers take no integrity algorithm")
        key, salt = sk_e[:-SALT_LEN], sk_e[-SALT_LEN:]
        if spec.id == EncrId.CHACHA20_POLY1305:
            return AeadSk(ChaCha20Poly1305(key), salt)
        return AeadSk(AESGCM(key), salt)
    if len(sk_a) != integ_key_len(integ_id):
        raise CryptoError("integrity key has the wrong length")
    return CbcSk(sk_e, get_integ(integ_id), sk_a, random)
