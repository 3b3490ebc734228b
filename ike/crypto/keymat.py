"""Key derivation for IKE and Child SAs (RFC 7296 §2.13-§2.18).

For RFC 9370 multiple key exchanges the caller passes the concatenated shared secrets
(g^ir | SK(1) | ...) as shared_secret; after each IKE_INTERMEDIATE exchange the keys are
updated with derive_rekeyed_ike_keys(prf, sk_d, prf, SK(n), ...) using the same SPIs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ike.constants import PrfId
from ike.crypto.algs import encr_key_len, integ_key_len
from ike.crypto.base import Prf
from ike.crypto.prf import prf_plus

# PRFs that need a key of exactly key_len bytes (§2.14); none is implemented yet, but the
# SKEYSEED rule for them is, so adding AES-XCBC/CMAC needs no change here.
FIXED_KEY_PRFS = frozenset({PrfId.AES128_XCBC, PrfId.AES128_CMAC})


class _SecretRepr:
    """repr() and str() show key lengths, never key bytes, so keys stay out of logs."""

    def __repr__(self) -> str:
        names = [f.name for f in fields(self)]  # type: ignore[arg-type]
        parts = ", ".join(f"{name}=<{len(getattr(self, name))} bytes>" for name in names)
        return f"{type(self).__name__}({parts})"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class IkeKeys(_SecretRepr):
    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes


@dataclass(frozen=True, repr=False)
class ChildKeys(_SecretRepr):
    """Keys of one Child SA; *_i protect initiator-to-responder traffic."""

    encr_i: bytes
    integ_i: bytes
    encr_r: bytes
    integ_r: bytes


def key_lengths(encr_id: int, key_bits: int | None, integ_id: int) -> tuple[int, int]:
    """(encryption key bytes including any AEAD salt, integrity key bytes) for IKE or ESP."""
    return encr_key_len(encr_id, key_bits), integ_key_len(integ_id)


def _nonce_key(prf: Prf, ni: bytes, nr: bytes) -> bytes:
    if prf.id in FIXED_KEY_PRFS:
        half = prf.key_len // 2
        return ni[:half] + nr[:half]
    return ni + nr


def _expand_ike(prf: Prf, skeyseed: bytes, seed: bytes, encr_len: int, integ_len: int) -> IkeKeys:
    sizes = (prf.key_len, integ_len, integ_len, encr_len, encr_len, prf.key_len, prf.key_len)
    stream = prf_plus(prf, skeyseed, seed, sum(sizes))
    parts: list[bytes] = []
    offset = 0
    for size in sizes:
        parts.append(stream[offset : offset + size])
        offset += size
    return IkeKeys(*parts)


def derive_ike_keys(
    prf: Prf,
    encr_key_len: int,
    integ_key_len: int,
    shared_secret: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> tuple[bytes, IkeKeys]:
    """SKEYSEED = prf(Ni | Nr, g^ir); keys = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) (§2.14)."""
    skeyseed = prf(_nonce_key(prf, ni, nr), shared_secret)
    keys = _expand_ike(prf, skeyseed, ni + nr + spi_i + spi_r, encr_key_len, integ_key_len)
    return skeyseed, keys


def derive_rekeyed_ike_keys(
    prf_new: Prf,
    old_sk_d: bytes,
    prf_old: Prf,
    shared_secret: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
    encr_key_len: int,
    integ_key_len: int,
) -> tuple[bytes, IkeKeys]:
    """Rekeyed IKE SA (§2.18): SKEYSEED = prf_old(SK_d(old), g^ir(new) | Ni | Nr), then
    prf+ with the new SA's PRF over Ni | Nr | SPIi | SPIr (the new SA's SPIs).
    """
    skeyseed = prf_old(old_sk_d, shared_secret + ni + nr)
    keys = _expand_ike(prf_new, skeyseed, ni + nr + spi_i + spi_r, encr_key_len, integ_key_len)
    return skeyseed, keys


def derive_child_keys(
    prf: Prf,
    sk_d: bytes,
    shared_secret: bytes | None,
    ni: bytes,
    nr: bytes,
    encr_key_len: int,
    integ_key_len: int,
) -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (§2.17); initiator-to-responder keys come
    first, encryption before integrity in each direction.
    """
    seed = (shared_secret or b"") + ni + nr
    stream = prf_plus(prf, sk_d, seed, 2 * (encr_key_len + integ_key_len))
    e, a = encr_key_len, integ_key_len
    return ChildKeys(
        encr_i=stream[:e],
        integ_i=stream[e : e + a],
        encr_r=stream[e + a : 2 * e + a],
        integ_r=stream[2 * e + a :],
    )
