"""MD4, single DES and MS-CHAPv2 against the RFC 1320, DES and RFC 2759 / 3079 vectors."""

from __future__ import annotations

import pytest

from ike.eap import mschapv2 as m
from ike.eap.des import des_encrypt, expand_key
from ike.eap.md4 import md4

H = bytes.fromhex


@pytest.mark.parametrize(
    ("data", "digest"),
    [  # RFC 1320 §A.5
        (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
        (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
        (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
        (b"message digest", "d9130a8164549fe818874806e1c7014b"),
        (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
        (
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            "043f8582f241db351ce627e153e7f0e4",
        ),
        (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
    ],
)
def test_md4_rfc1320(data: bytes, digest: str) -> None:
    assert md4(data).hex() == digest


@pytest.mark.parametrize(
    ("key", "plain", "cipher"),
    [  # DES known-answer tests (FIPS 81 / NBS SP 500-20 style)
        ("7CA110454A1A6E57", "01A1D6D039776742", "690F5B0D9A26939B"),
        ("0131D9619DC1376E", "5CD54CA83DEF57DA", "7A389D10354BD271"),
        ("0123456789ABCDEF", "4E6F772069732074", "3FA40E8A984D4815"),
    ],
)
def test_single_des(key: str, plain: str, cipher: str) -> None:
    assert des_encrypt(H(key), H(plain)) == H(cipher)


def test_des_key_expansion_ignores_parity() -> None:
    assert expand_key(b"\xff" * 7) == b"\xfe" * 8
    assert expand_key(b"\x00" * 7) == b"\x00" * 8
    with pytest.raises(ValueError):
        expand_key(b"\x00" * 8)


# RFC 2759 §9.2
USER = b"User"
PASSWORD = "clientPass"
AUTH_CHALLENGE = H("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = H("21402324255E262A28295F2B3A337C7E")
NT_HASH = H("44EBBA8D5312B8D611474411F56989AE")
NT_RESPONSE = H("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")


def test_rfc2759_vectors() -> None:
    assert m.nt_password_hash(PASSWORD) == NT_HASH
    assert m.hash_nt_password_hash(NT_HASH) == H("41C00C584BD2D91C4017A2A12FA59F3F")
    assert m.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, USER) == H("D02E4386BCE91226")
    assert m.nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, NT_HASH) == NT_RESPONSE
    resp = m.authenticator_response(NT_HASH, NT_RESPONSE, PEER_CHALLENGE, AUTH_CHALLENGE, USER)
    assert resp == b"S=407A5589115FD0D6209F510FE9C04566932CDA56"


def test_rfc3079_keys_and_msk() -> None:
    master = m.master_key(NT_HASH, NT_RESPONSE)
    assert master == H("FDECE3717A8C838CB388E527AE3CDD31")  # RFC 3079 §3.5.3
    server_send = m.asymmetric_start_key(master, send=True, server=True)
    assert server_send == H("8B7CDC149B993A1BA118CB153F56DCCB")  # its SendStartKey128
    assert m.asymmetric_start_key(master, send=False, server=False) == server_send
    server_recv = m.asymmetric_start_key(master, send=False, server=True)
    assert server_recv == m.asymmetric_start_key(master, send=True, server=False)
    msk = m.msk(NT_HASH, NT_RESPONSE)
    assert len(msk) == 64
    assert msk == server_recv + server_send + bytes(32)


def test_wrong_password_gives_other_response() -> None:
    wrong = m.nt_password_hash("clientpass")
    assert m.nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, wrong) != NT_RESPONSE
