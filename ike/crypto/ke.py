"""Key exchange methods: MODP (RFC 3526), ECP (RFC 5903), Curve25519 (RFC 8031), ML-KEM.

Every class takes an optional private key so ike.crypto.ke_fixed can replay exchanges.
"""

from __future__ import annotations

import functools
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dh, ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ike.constants import KeId
from ike.crypto.base import KeyExchange
from ike.crypto.modp_groups import MODP_GENERATOR, MODP_PRIMES
from ike.errors import CryptoError, ProposalError

try:  # ML-KEM arrived in cryptography 47; older installs simply lack the KEM groups.
    from cryptography.hazmat.primitives.asymmetric import mlkem
except ImportError:  # pragma: no cover - depends on the installed cryptography
    mlkem = None  # type: ignore[assignment]


def _name(group: int) -> str:
    try:
        return KeId(group).name
    except ValueError:
        return str(group)


class _DiffieHellman:
    """DH: respond() sends our public value back; both sides compute the same secret."""

    group: int

    def public_bytes(self) -> bytes:
        raise NotImplementedError

    def _shared(self, peer_data: bytes) -> bytes:
        raise NotImplementedError

    def respond(self, peer_data: bytes) -> tuple[bytes, bytes]:
        return self.public_bytes(), self._shared(peer_data)

    def finish(self, peer_data: bytes) -> bytes:
        return self._shared(peer_data)


@functools.cache
def modp_parameters(group: int) -> dh.DHParameters:
    """The RFC 3526 parameters, built from the fixed numbers once per group."""
    return dh.DHParameterNumbers(MODP_PRIMES[group], MODP_GENERATOR).parameters()


class ModpKeyExchange(_DiffieHellman):
    def __init__(self, group: int, private_key: dh.DHPrivateKey | None = None) -> None:
        if group not in MODP_PRIMES:
            raise ProposalError(f"key exchange {_name(group)} is not supported")
        self.group = group
        self._p = MODP_PRIMES[group]
        self._len = (self._p.bit_length() + 7) // 8
        params = modp_parameters(group)
        self._key = params.generate_private_key() if private_key is None else private_key
        self._public = self._key.public_key().public_numbers().y.to_bytes(self._len, "big")

    def public_bytes(self) -> bytes:
        return self._public  # left-padded to the prime length (RFC 7296 §3.4)

    def _shared(self, peer_data: bytes) -> bytes:
        if len(peer_data) != self._len:
            raise CryptoError(f"{_name(self.group)} value must be {self._len} bytes")
        y = int.from_bytes(peer_data, "big")
        # 0, 1 and p-1 would force the secret into a trivial subgroup.
        if y <= 1 or y >= self._p - 1:
            raise CryptoError(f"{_name(self.group)} peer value out of range")
        numbers = dh.DHPublicNumbers(y, modp_parameters(self.group).parameter_numbers())
        try:
            secret = self._key.exchange(numbers.public_key())
        except ValueError as exc:
            raise CryptoError(f"{_name(self.group)} peer value rejected") from exc
        return secret.rjust(self._len, b"\0")


_CURVES: dict[int, tuple[type[ec.EllipticCurve], int]] = {
    KeId.ECP_256: (ec.SECP256R1, 32),
    KeId.ECP_384: (ec.SECP384R1, 48),
    KeId.ECP_521: (ec.SECP521R1, 66),
}


class EcpKeyExchange(_DiffieHellman):
    """KE data is x | y, each padded to the field size, without the 0x04 point prefix."""

    def __init__(self, group: int, private_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        if group not in _CURVES:
            raise ProposalError(f"key exchange {_name(group)} is not supported")
        curve_type, self._coord_len = _CURVES[group]
        self.group = group
        self._curve = curve_type()
        self._key = ec.generate_private_key(self._curve) if private_key is None else private_key
        point = self._key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        self._public = point[1:]

    def public_bytes(self) -> bytes:
        return self._public

    def _shared(self, peer_data: bytes) -> bytes:
        if len(peer_data) != 2 * self._coord_len:
            raise CryptoError(f"{_name(self.group)} value must be {2 * self._coord_len} bytes")
        try:
            # from_encoded_point rejects points that are not on the curve.
            peer = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, b"\x04" + peer_data)
            return self._key.exchange(ec.ECDH(), peer)  # the x coordinate (RFC 5903 §7)
        except ValueError as exc:
            raise CryptoError(f"{_name(self.group)} peer value rejected") from exc


class X25519KeyExchange(_DiffieHellman):
    def __init__(self, private_key: x25519.X25519PrivateKey | None = None) -> None:
        self.group = KeId.CURVE25519
        self._key = x25519.X25519PrivateKey.generate() if private_key is None else private_key
        self._public = self._key.public_key().public_bytes_raw()

    def public_bytes(self) -> bytes:
        return self._public

    def _shared(self, peer_data: bytes) -> bytes:
        if len(peer_data) != 32:
            raise CryptoError("Curve25519 value must be 32 bytes")
        try:
            secret = self._key.exchange(x25519.X25519PublicKey.from_public_bytes(peer_data))
        except ValueError as exc:  # the library refuses an all-zero result itself
            raise CryptoError("Curve25519 peer value rejected") from exc
        if not any(secret):  # RFC 8031 §2.3; checked here too in case the library changes
            raise CryptoError("Curve25519 shared secret is all zero")
        return secret


# group -> (private key class name, public key class name, encapsulation key len, ct len)
_MLKEM: dict[int, tuple[str, str, int, int]] = {
    KeId.ML_KEM_768: ("MLKEM768PrivateKey", "MLKEM768PublicKey", 1184, 1088),
    KeId.ML_KEM_1024: ("MLKEM1024PrivateKey", "MLKEM1024PublicKey", 1568, 1568),
}


@functools.cache
def mlkem_supported() -> bool:
    """True if the installed cryptography (and its OpenSSL) can do ML-KEM."""
    if mlkem is None:
        return False
    try:
        mlkem.MLKEM768PrivateKey.generate()
    except UnsupportedAlgorithm:
        return False
    return True


class MlKemKeyExchange:
    """ML-KEM as a key exchange (RFC 9370 framework): the initiator sends its encapsulation
    key, the responder answers with a ciphertext, and the KEM output is the shared secret.
    """

    def __init__(self, group: int, private_key: Any = None) -> None:
        if group not in _MLKEM or not mlkem_supported():
            raise ProposalError(f"key exchange {_name(group)} is not supported")
        self.group = group
        priv_name, pub_name, self._ek_len, self._ct_len = _MLKEM[group]
        self._priv_cls = getattr(mlkem, priv_name)
        self._pub_cls = getattr(mlkem, pub_name)
        self._key = private_key  # created on first public_bytes(): a responder needs none

    def public_bytes(self) -> bytes:
        if self._key is None:
            self._key = self._priv_cls.generate()
        return bytes(self._key.public_key().public_bytes_raw())

    def respond(self, peer_data: bytes) -> tuple[bytes, bytes]:
        if len(peer_data) != self._ek_len:
            raise CryptoError(f"{_name(self.group)} key must be {self._ek_len} bytes")
        try:
            # Loading runs the FIPS 203 encapsulation key check.
            peer = self._pub_cls.from_public_bytes(peer_data)
        except ValueError as exc:
            raise CryptoError(f"{_name(self.group)} encapsulation key rejected") from exc
        secret, ciphertext = peer.encapsulate()
        return bytes(ciphertext), bytes(secret)

    def finish(self, peer_data: bytes) -> bytes:
        if self._key is None:
            raise CryptoError("ML-KEM finish() before public_bytes()")
        if len(peer_data) != self._ct_len:
            raise CryptoError(f"{_name(self.group)} ciphertext must be {self._ct_len} bytes")
        try:
            return bytes(self._key.decapsulate(peer_data))
        except ValueError as exc:
            raise CryptoError(f"{_name(self.group)} ciphertext rejected") from exc


def supported_groups() -> frozenset[int]:
    groups = set(MODP_PRIMES) | set(_CURVES) | {KeId.CURVE25519}
    if mlkem_supported():
        groups |= set(_MLKEM)
    return frozenset(groups)


def new_key_exchange(group: int) -> KeyExchange:
    """A fresh key exchange with a new random private key; ProposalError if unsupported.

    Matches base.KeyExchangeFactory, so it is the session's default factory.
    """
    if group in MODP_PRIMES:
        return ModpKeyExchange(group)
    if group in _CURVES:
        return EcpKeyExchange(group)
    if group == KeId.CURVE25519:
        return X25519KeyExchange()
    if group in _MLKEM:
        return MlKemKeyExchange(group)
    raise ProposalError(f"key exchange {_name(group)} is not supported")
