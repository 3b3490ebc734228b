"""What this package supports: key, salt, IV and ICV sizes of every cipher and integrity
algorithm, so that key derivation, SK protection and proposal parsing agree on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ike.constants import EncrId, IntegId
from ike.errors import ProposalError


@dataclass(frozen=True)
class EncrSpec:
    id: EncrId
    key_bits: tuple[int, ...]  # allowed KEY_LENGTH values; () means no attribute (fixed key)
    fixed_key_bits: int  # key size when key_bits is ()
    salt_len: int  # bytes of key material appended to the key (RFC 4106/5282/7634)
    iv_len: int
    icv_len: int  # 0 for ciphers that need an integrity transform
    aead: bool


ENCR_SPECS: dict[int, EncrSpec] = {
    EncrId.AES_CBC: EncrSpec(EncrId.AES_CBC, (128, 192, 256), 0, 0, 16, 0, False),
    EncrId.AES_GCM_16: EncrSpec(EncrId.AES_GCM_16, (128, 192, 256), 0, 4, 8, 16, True),
    EncrId.CHACHA20_POLY1305: EncrSpec(EncrId.CHACHA20_POLY1305, (), 256, 4, 8, 16, True),
}


@dataclass(frozen=True)
class IntegSpec:
    id: IntegId
    digest: str  # hashlib name for hmac.digest
    key_len: int
    icv_len: int


INTEG_SPECS: dict[int, IntegSpec] = {
    IntegId.HMAC_SHA1_96: IntegSpec(IntegId.HMAC_SHA1_96, "sha1", 20, 12),
    IntegId.HMAC_SHA2_256_128: IntegSpec(IntegId.HMAC_SHA2_256_128, "sha256", 32, 16),
    IntegId.HMAC_SHA2_384_192: IntegSpec(IntegId.HMAC_SHA2_384_192, "sha384", 48, 24),
    IntegId.HMAC_SHA2_512_256: IntegSpec(IntegId.HMAC_SHA2_512_256, "sha512", 64, 32),
}


def _name(enum: type[EncrId] | type[IntegId], value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)


def encr_spec(encr_id: int, key_bits: int | None) -> EncrSpec:
    """The spec of a cipher, checking the KEY_LENGTH attribute; ProposalError if unsupported."""
    spec = ENCR_SPECS.get(encr_id)
    if spec is None:
        raise ProposalError(f"encryption {_name(EncrId, encr_id)} is not supported")
    if spec.key_bits:
        if key_bits not in spec.key_bits:
            raise ProposalError(f"{spec.id.name} needs a key length of {spec.key_bits} bits")
    elif key_bits not in (None, spec.fixed_key_bits):
        raise ProposalError(f"{spec.id.name} has a fixed key length of {spec.fixed_key_bits}")
    return spec


def encr_key_len(encr_id: int, key_bits: int | None) -> int:
    """Bytes of key material for a cipher, including the salt of AEAD ciphers."""
    spec = encr_spec(encr_id, key_bits)
    return (key_bits or spec.fixed_key_bits) // 8 + spec.salt_len


def integ_spec(integ_id: int) -> IntegSpec:
    spec = INTEG_SPECS.get(integ_id)
    if spec is None:
        raise ProposalError(f"integrity {_name(IntegId, integ_id)} is not supported")
    return spec


def integ_key_len(integ_id: int) -> int:
    """Bytes of integrity key; 0 for NONE (AEAD ciphers)."""
    return 0 if integ_id == IntegId.NONE else integ_spec(integ_id).key_len
