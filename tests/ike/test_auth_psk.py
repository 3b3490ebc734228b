"""Shared-key AUTH (RFC 7296 §2.15/§2.16) against independent computations."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ike.auth.psk import (
    KEY_PAD,
    eap_auth_data,
    psk_auth_data,
    signed_octets,
    verify_eap,
    verify_psk,
)
from ike.constants import IdType, PayloadType
from ike.payloads import IdPayload


def prf(key: bytes, data: bytes) -> bytes:
    """The test's HMAC-SHA256 prf."""
    return hmac.digest(key, data, "sha256")


def hand_hmac_sha256(key: bytes, data: bytes) -> bytes:
    """RFC 2104 spelled out on hashlib, independent of the hmac module."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + data).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).digest()


MESSAGE = b"IKE_SA_INIT-request-bytes"
NONCE = bytes(range(32))
SK_P = b"\x5a" * 32
ID = IdPayload(PayloadType.IDi, IdType.FQDN, b"hub.example.org")
PSK = b"correct-horse-battery"
# Computed with `openssl dgst -sha256 -mac HMAC` over the same inputs.
MACED_ID = "16f6e7277c3c6a2bd8d22e0ab3a36ac8683a3cacb4459d721a0d471bb8f88214"
AUTH = "a92307474fd56e56a5567d279f0e7ed51138db3ccc2dc66ba5a8684dd179c845"


def test_key_pad_is_the_rfc_string() -> None:
    assert KEY_PAD == b"Key Pad for IKEv2"
    assert len(KEY_PAD) == 17


def test_signed_octets_layout() -> None:
    octets = signed_octets(MESSAGE, NONCE, prf, SK_P, ID.body())
    assert octets == MESSAGE + NONCE + bytes.fromhex(MACED_ID)
    assert octets[-32:] == hand_hmac_sha256(SK_P, b"\x02\x00\x00\x00hub.example.org")


def test_psk_known_answer() -> None:
    octets = signed_octets(MESSAGE, NONCE, prf, SK_P, ID.body())
    auth = psk_auth_data(prf, PSK, octets)
    assert auth.hex() == AUTH
    assert auth == hand_hmac_sha256(hand_hmac_sha256(PSK, b"Key Pad for IKEv2"), octets)


@given(psk=st.binary(min_size=1, max_size=100), octets=st.binary(max_size=200))
def test_psk_matches_hand_computation(psk: bytes, octets: bytes) -> None:
    expected = hand_hmac_sha256(hand_hmac_sha256(psk, KEY_PAD), octets)
    assert psk_auth_data(prf, psk, octets) == expected


def test_verify_psk() -> None:
    octets = signed_octets(MESSAGE, NONCE, prf, SK_P, ID.body())
    good = bytes.fromhex(AUTH)
    assert verify_psk(prf, PSK, octets, good)
    assert not verify_psk(prf, PSK + b"x", octets, good)
    assert not verify_psk(prf, PSK, octets + b"x", good)
    assert not verify_psk(prf, PSK, octets, good[:-1] + bytes([good[-1] ^ 1]))
    assert not verify_psk(prf, PSK, octets, good[:16])
    assert not verify_psk(prf, PSK, octets, b"")


def test_other_id_or_nonce_changes_auth() -> None:
    base = psk_auth_data(prf, PSK, signed_octets(MESSAGE, NONCE, prf, SK_P, ID.body()))
    other_id = IdPayload(PayloadType.IDi, IdType.FQDN, b"hub2.example.org")
    assert base != psk_auth_data(
        prf, PSK, signed_octets(MESSAGE, NONCE, prf, SK_P, other_id.body())
    )
    assert base != psk_auth_data(
        prf, PSK, signed_octets(MESSAGE, NONCE[::-1], prf, SK_P, ID.body())
    )
    assert base != psk_auth_data(
        prf, PSK, signed_octets(MESSAGE, NONCE, prf, SK_P[::-1] + b"!", ID.body())
    )


def test_empty_psk_refused() -> None:
    with pytest.raises(ValueError):
        psk_auth_data(prf, b"", b"octets")


def test_eap_uses_msk_as_key() -> None:
    msk = bytes(range(64))
    octets = b"octets"
    expected = hand_hmac_sha256(hand_hmac_sha256(msk, KEY_PAD), octets)
    assert eap_auth_data(prf, msk, octets) == expected
    assert verify_eap(prf, msk, octets, expected)
    assert not verify_eap(prf, msk[:-1], octets, expected)
