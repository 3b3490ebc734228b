"""The HMAC PRFs of RFC 7296 §3.3.2 and prf+ (§2.13)."""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass

from ike.constants import PrfId
from ike.crypto.base import Prf
from ike.errors import CryptoError, ProposalError

PRF_PLUS_MAX_ITERATIONS = 255  # the counter octet of prf+ must not wrap (§2.13)


@dataclass(slots=True)
class HmacPrf:
    """prf(K, S) = HMAC(K, S); any key length is fine, key_len is the preferred one."""

    id: int
    output_len: int
    key_len: int
    digest: str

    def __call__(self, key: bytes, data: bytes) -> bytes:
        # hmac.digest runs in C without building an HMAC object: prf+ calls this a lot.
        return hmac.digest(key, data, self.digest)


_HMAC_PRFS: dict[int, tuple[str, int]] = {
    PrfId.HMAC_SHA1: ("sha1", 20),
    PrfId.HMAC_SHA2_256: ("sha256", 32),
    PrfId.HMAC_SHA2_384: ("sha384", 48),
    PrfId.HMAC_SHA2_512: ("sha512", 64),
}

SUPPORTED_PRFS: frozenset[int] = frozenset(_HMAC_PRFS)


@functools.cache  # PRF objects hold no state: one per PrfId serves every SA
def get_prf(prf_id: int) -> Prf:
    """The PRF object for a PrfId; ProposalError if we do not implement it."""
    try:
        digest, size = _HMAC_PRFS[prf_id]
    except KeyError:
        try:
            name = PrfId(prf_id).name
        except ValueError:
            name = str(prf_id)
        raise ProposalError(f"PRF {name} is not supported") from None
    return HmacPrf(PrfId(prf_id), size, size, digest)


def prf_plus(prf: Prf, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ (K, S) = T1 | T2 | ... with T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)."""
    if length < 0:
        raise CryptoError("prf+ length must not be negative")
    rounds = -(-length // prf.output_len)
    if rounds > PRF_PLUS_MAX_ITERATIONS:
        raise CryptoError(f"prf+ cannot produce {length} bytes with a {prf.output_len}-byte prf")
    blocks: list[bytes] = []
    t = b""
    for n in range(1, rounds + 1):
        t = prf(key, t + seed + bytes((n,)))
        blocks.append(t)
    return b"".join(blocks)[:length]
