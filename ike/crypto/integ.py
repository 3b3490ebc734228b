"""Truncated-HMAC integrity algorithms (RFC 2404, RFC 4868) for IKE SK payloads and ESP."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from ike.crypto.algs import integ_spec


@dataclass(slots=True)
class HmacInteg:
    id: int  # IntegId
    key_len: int
    icv_len: int
    digest: str

    def compute(self, key: bytes, data: bytes) -> bytes:
        return hmac.digest(key, data, self.digest)[: self.icv_len]

    def verify(self, key: bytes, data: bytes, icv: bytes) -> bool:
        """Constant-time comparison of the full truncated ICV."""
        if len(icv) != self.icv_len:
            return False
        return hmac.compare_digest(self.compute(key, data), icv)


def get_integ(integ_id: int) -> HmacInteg:
    """A fresh integrity algorithm object; ProposalError if unsupported (or NONE)."""
    spec = integ_spec(integ_id)
    return HmacInteg(spec.id, spec.key_len, spec.icv_len, spec.digest)
