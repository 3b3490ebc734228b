"""Shared-key AUTH data (RFC 7296 §2.15) and its EAP variant (§2.16).

Both sides of IKE_AUTH sign "octets": for the initiator
    RealMessage1 | NonceRData | prf(SK_pi, RestOfInitIDPayload)
and for the responder
    RealMessage2 | NonceIData | prf(SK_pr, RestOfRespIDPayload)
i.e. always: the party's own IKE_SA_INIT message, the peer's nonce, and the MAC of its own
ID payload body under its own SK_p. Signatures (signature.py) cover the same octets.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

# Any Prf of ike.crypto.base satisfies this: prf(key, data) -> bytes.
PrfFunc = Callable[[bytes, bytes], bytes]

KEY_PAD = b"Key Pad for IKEv2"  # RFC 7296 §2.15, 17 ASCII bytes, no terminator


def signed_octets(
    message: bytes, peer_nonce: bytes, prf: PrfFunc, sk_p: bytes, id_body: bytes
) -> bytes:
    """RealMessage | NonceOfPeer | prf(SK_p, RestOfIDPayload).

    ``message`` is our own IKE_SA_INIT message exactly as sent (header included),
    ``id_body`` is IdPayload.body() of our own ID payload.
    """
    return message + peer_nonce + prf(sk_p, id_body)


def psk_auth_data(prf: PrfFunc, psk: bytes, octets: bytes) -> bytes:
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), octets)."""
    if not psk:
        raise ValueError("the shared key is empty")
    return prf(prf(psk, KEY_PAD), octets)


def verify_psk(prf: PrfFunc, psk: bytes, octets: bytes, received: bytes) -> bool:
    """True if ``received`` is the AUTH data for ``octets``; compared in constant time."""
    return hmac.compare_digest(psk_auth_data(prf, psk, octets), received)


def eap_auth_data(prf: PrfFunc, msk: bytes, octets: bytes) -> bytes:
    """AUTH after EAP (§2.16): the shared-key formula with the EAP MSK as the key.

    For an EAP method that derives no MSK, RFC 7296 says to use SK_pi (initiator) or
    SK_pr (responder) instead; pass that as ``msk``.
    """
    return psk_auth_data(prf, msk, octets)


def verify_eap(prf: PrfFunc, msk: bytes, octets: bytes, received: bytes) -> bool:
    """verify_psk() with the EAP MSK as the key (see eap_auth_data)."""
    return verify_psk(prf, msk, octets, received)
