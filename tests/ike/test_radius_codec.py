"""RADIUS codec: packets (RFC 2865), Message-Authenticator (RFC 3579), MS-MPPE keys
(RFC 2548), EAP-Message splitting; malformed input gives DecodeError and nothing else."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from ike.errors import DecodeError
from ike.radius import authenticator as ra
from ike.radius import packet as rp

SECRET = b"testing123"
REQ_AUTH = bytes(range(16))


def test_rfc2865_example_response_authenticator() -> None:
    # RFC 2865 §7.1: the Access-Accept answering the example Access-Request (secret "xyzzy5461").
    request_auth = bytes.fromhex("0f403f9473978057bd83d5cb98f4227a")
    accept = bytes.fromhex(
        "0200002686fe220e7624ba2a1005f6bf9b55e0b20606000000010f06000000000e06c0a80103"
    )
    p = rp.decode(accept)
    assert p.code == rp.ACCESS_ACCEPT and p.identifier == 0
    assert (rp.SERVICE_TYPE, (1).to_bytes(4, "big")) in p.attributes
    assert ra.response_authenticator(p, b"xyzzy5461", request_auth) == p.authenticator
    assert ra.response_authenticator(p, b"xyzzy5462", request_auth) != p.authenticator


def test_encode_decode_round_trip_and_padding_ignored() -> None:
    p = rp.Packet(rp.ACCESS_REQUEST, 7, REQ_AUTH, [(rp.USER_NAME, b"alice"), (rp.STATE, b"")])
    raw = p.encode()
    assert raw[:4] == bytes([1, 7, 0, 20 + 7 + 2])
    back = rp.decode(raw + b"\x00" * 5)  # octets past Length are padding (RFC 2865 §3)
    assert back == p


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"\x02\x01\x00", "short"),
        (b"\x02\x01\x00\x13" + bytes(16), "out of range"),
        (b"\x02\x01\x00\x20" + bytes(16), "shorter than its Length"),
        (b"\x02\x01\x00\x16" + bytes(16) + b"\x01\x00", "bad length 0"),
        (b"\x02\x01\x00\x17" + bytes(16) + b"\x01\x05\x00", "bad length 5"),
        (b"\x02\x01\x00\x15" + bytes(16) + b"\x01", "truncated"),
        (b"\x02\x01\x10\x01" + bytes(4096), "out of range"),
    ],
)
def test_malformed_packets_are_rejected(raw: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        rp.decode(raw)


def test_random_garbage_only_raises_decode_error() -> None:
    rng = random.Random(3)
    base = rp.Packet(2, 1, REQ_AUTH, [(rp.EAP_MESSAGE, b"\x03\x01\x00\x04")]).encode()
    for _ in range(3000):
        data = bytearray(base if rng.random() < 0.5 else rng.randbytes(rng.randrange(0, 60)))
        for _ in range(rng.randrange(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            p = rp.decode(bytes(data))
            rp.join_eap(p)
            p.vendor(311, 17)
        except DecodeError:
            pass


def test_message_authenticator_of_a_request_is_hmac_md5_over_zeroed_packet() -> None:
    p = rp.Packet(rp.ACCESS_REQUEST, 9, REQ_AUTH, [(80, bytes(16)), (rp.USER_NAME, b"bob")])
    zeroed = p.encode()
    raw = ra.sign_request(p, SECRET)
    want = hmac.new(SECRET, zeroed, hashlib.md5).digest()
    assert rp.decode(raw).get(rp.MESSAGE_AUTHENTICATOR) == want
    assert ra.verify_request(rp.decode(raw), SECRET)
    assert not ra.verify_request(rp.decode(raw), b"other")
    tampered = bytearray(raw)
    tampered[-1] ^= 1
    assert not ra.verify_request(rp.decode(bytes(tampered)), SECRET)


def test_response_verification_needs_both_authenticators() -> None:
    def response(attrs: list[tuple[int, bytes]], secret: bytes = SECRET) -> rp.Packet:
        raw = ra.sign_response(rp.Packet(rp.ACCESS_ACCEPT, 9, bytes(16), attrs), secret, REQ_AUTH)
        return rp.decode(raw)

    good = response([(80, bytes(16)), (rp.EAP_MESSAGE, b"\x03\x05\x00\x04")])
    assert ra.verify_response(good, SECRET, REQ_AUTH) is None
    # The Message-Authenticator covers the Request Authenticator, not the response's.
    data = ra._with_zeroed_ma(good, REQ_AUTH)
    assert good.get(80) == hmac.new(SECRET, data, hashlib.md5).digest()
    assert ra.verify_response(good, b"wrong", REQ_AUTH) == "bad_response_authenticator"
    assert ra.verify_response(good, SECRET, bytes(16)) == "bad_response_authenticator"
    missing = response([(rp.EAP_MESSAGE, b"\x03\x05\x00\x04")])
    assert ra.verify_response(missing, SECRET, REQ_AUTH) == "missing_message_authenticator"
    # A valid Response Authenticator over a wrong Message-Authenticator is still refused.
    forged = rp.Packet(rp.ACCESS_ACCEPT, 9, bytes(16), [(80, bytes(range(16)))])
    forged.authenticator = ra.response_authenticator(forged, SECRET, REQ_AUTH)
    assert ra.verify_response(forged, SECRET, REQ_AUTH) == "bad_message_authenticator"


@pytest.mark.parametrize("length", [1, 16, 32, 100])
def test_mppe_key_round_trip(length: int) -> None:
    key = bytes(range(length))
    value = ra.encrypt_mppe_key(key, SECRET, REQ_AUTH, b"\x81\x02")
    assert len(value) == 2 + 16 * ((length + 1 + 15) // 16)
    assert value[2:] != (bytes([length]) + key)[: len(value) - 2]  # really encrypted
    assert ra.decrypt_mppe_key(value, SECRET, REQ_AUTH) == key


def test_mppe_first_block_follows_rfc2548() -> None:
    key = b"K" * 16
    value = ra.encrypt_mppe_key(key, SECRET, REQ_AUTH, b"\x80\x01")
    b1 = hashlib.md5(SECRET + REQ_AUTH + b"\x80\x01").digest()
    plain1 = bytes(x ^ y for x, y in zip(value[2:18], b1, strict=True))
    assert plain1 == bytes([16]) + key[:15]


def test_mppe_key_wrong_secret_or_damage_is_detected() -> None:
    value = ra.encrypt_mppe_key(b"k" * 16, SECRET, REQ_AUTH, b"\x81\x02")
    for bad_secret, bad_auth in ((b"other", REQ_AUTH), (SECRET, bytes(16))):
        with pytest.raises(DecodeError):
            ra.decrypt_mppe_key(value, bad_secret, bad_auth)
    with pytest.raises(DecodeError, match="high bit"):
        ra.decrypt_mppe_key(b"\x01" + value[1:], SECRET, REQ_AUTH)
    with pytest.raises(DecodeError, match="bad length"):
        ra.decrypt_mppe_key(value[:-1], SECRET, REQ_AUTH)
    with pytest.raises(ValueError):
        ra.encrypt_mppe_key(b"k", SECRET, REQ_AUTH, b"\x01\x02")


def test_eap_message_split_and_join() -> None:
    eap = bytes([1, 5]) + (600).to_bytes(2, "big") + bytes(range(256)) * 2 + bytes(84)
    attrs = rp.split_eap(eap)
    assert [len(v) for _, v in attrs] == [253, 253, 94]
    p = rp.Packet(rp.ACCESS_CHALLENGE, 1, REQ_AUTH, [(rp.STATE, b"s"), *attrs])
    back = rp.decode(p.encode())
    assert rp.join_eap(back) == eap
    assert rp.join_eap(rp.Packet(2, 1, REQ_AUTH, [])) is None
    broken = rp.Packet(2, 1, REQ_AUTH, attrs[:2])  # a piece missing
    with pytest.raises(DecodeError, match="do not join"):
        rp.join_eap(broken)


def test_vendor_specific_parsing() -> None:
    vsa = rp.vsa(311, 17, b"recv")
    assert vsa == (26, b"\x00\x00\x01\x37\x11\x06recv")
    p = rp.Packet(2, 1, REQ_AUTH, [vsa, rp.vsa(9, 17, b"cisco"), rp.vsa(311, 16, b"send")])
    assert p.vendor(311, 17) == [b"recv"] and p.vendor(311, 16) == [b"send"]
    broken = rp.Packet(2, 1, REQ_AUTH, [(26, b"\x00\x00\x01\x37\x11\x09ab")])
    assert broken.vendor(311, 17) == []
