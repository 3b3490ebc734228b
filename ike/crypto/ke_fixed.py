"""Deterministic key exchanges from fixed private keys, so tests can replay an exchange
byte for byte. Never use these for real SAs.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import dh, ec, x25519

from ike.constants import KeId
from ike.crypto import ke
from ike.crypto.base import KeyExchange, KeyExchangeFactory
from ike.crypto.modp_groups import MODP_GENERATOR, MODP_PRIMES
from ike.errors import CryptoError, ProposalError

_EC_CURVES: dict[int, ec.EllipticCurve] = {
    KeId.ECP_256: ec.SECP256R1(),
    KeId.ECP_384: ec.SECP384R1(),
    KeId.ECP_521: ec.SECP521R1(),
}


def from_private_bytes(group: int, private: bytes) -> KeyExchange:
    """A key exchange whose private key is ``private``:

    MODP: the exponent, big-endian; ECP: the scalar, big-endian; Curve25519: the 32-byte
    RFC 7748 scalar; ML-KEM: the 64-byte seed (d | z). For ML-KEM only the initiator side is
    deterministic: cryptography draws the encapsulation randomness itself.
    """
    try:
        if group in MODP_PRIMES:
            p = MODP_PRIMES[group]
            x = int.from_bytes(private, "big")
            if not 1 < x < p - 1:
                raise CryptoError("MODP private exponent out of range")
            params = ke.modp_parameters(group).parameter_numbers()
            public = dh.DHPublicNumbers(pow(MODP_GENERATOR, x, p), params)
            return ke.ModpKeyExchange(group, dh.DHPrivateNumbers(x, public).private_key())
        if group in _EC_CURVES:
            scalar = int.from_bytes(private, "big")
            return ke.EcpKeyExchange(group, ec.derive_private_key(scalar, _EC_CURVES[group]))
        if group == KeId.CURVE25519:
            return ke.X25519KeyExchange(x25519.X25519PrivateKey.from_private_bytes(private))
        if group in (KeId.ML_KEM_768, KeId.ML_KEM_1024) and ke.mlkem_supported():
            cls = (
                ke.mlkem.MLKEM768PrivateKey
                if group == KeId.ML_KEM_768
                else ke.mlkem.MLKEM1024PrivateKey
            )
            return ke.MlKemKeyExchange(group, cls.from_seed_bytes(private))
    except ValueError as exc:
        raise CryptoError(f"bad fixed private key for group {group}") from exc
    raise ProposalError(f"key exchange {group} is not supported")


def fixed_factory(
    private_keys: Mapping[KeId, bytes] | Mapping[int, bytes],
) -> KeyExchangeFactory:
    """A KeyExchangeFactory that always uses the given private key of each group.

    Groups without a key raise ProposalError, so a test notices an unplanned group.
    """

    keys: dict[int, bytes] = {int(group): key for group, key in private_keys.items()}

    def factory(group: int) -> KeyExchange:
        if group not in keys:
            raise ProposalError(f"no fixed private key for group {group}")
        return from_private_bytes(group, keys[group])

    return factory
