"""Property tests of ike.codec: random messages round-trip; hostile bytes raise DecodeError."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ike.codec import (
    decode,
    decode_payloads,
    encode,
    encode_payloads,
    encode_protected,
    open_protected,
)
from ike.constants import PayloadType, ProtocolId, TransformAttr, TransformType, TsType
from ike.errors import CryptoError, DecodeError
from ike.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CfgAttribute,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    KePayload,
    Message,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    SkfPayload,
    SkPayload,
    TrafficSelector,
    Transform,
    TransformAttribute,
    TsPayload,
    UnknownPayload,
    VendorPayload,
)
from tests.ike.sk_fake import FakeGcmSk

# Raw-byte inputs are cheap to draw; whole messages are not. Together well under 30 s.
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_MSG = settings(FUZZ, max_examples=300)
KNOWN = {int(t) for t in PayloadType if t not in (PayloadType.NONE, PayloadType.GSPM)}

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
blob = st.binary(max_size=64)
spi = st.sampled_from([0, 4, 8]).flatmap(lambda n: st.binary(min_size=n, max_size=n))

attributes = st.builds(
    TransformAttribute,
    st.integers(0, 0x7FFF).filter(lambda t: t != TransformAttr.KEY_LENGTH),
    u16 | st.binary(max_size=8),
)
transforms = st.builds(
    Transform,
    type=st.sampled_from(list(TransformType)) | u8,
    id=u16,
    key_length=st.none() | u16,
    unknown_attributes=st.lists(attributes, max_size=3).map(tuple),
    key_length_at=st.integers(0, 3),
)
proposals = st.builds(
    Proposal, num=u8, protocol=u8, spi=spi, transforms=st.lists(transforms, max_size=6)
)
v4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
v6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))
selectors = st.builds(
    TrafficSelector, st.just(TsType.TS_IPV4_ADDR_RANGE), u8, u16, u16, v4, v4
) | st.builds(TrafficSelector, st.just(TsType.TS_IPV6_ADDR_RANGE), u8, u16, u16, v6, v6)
eap = st.tuples(u8, u8, st.binary(max_size=40)).map(
    lambda t: bytes((t[0], t[1])) + struct.pack("!H", 4 + len(t[2])) + t[2]
)
deletes = st.builds(DeletePayload, st.just(ProtocolId.IKE)) | st.builds(
    DeletePayload,
    st.sampled_from([ProtocolId.ESP, ProtocolId.AH]),
    st.lists(st.binary(min_size=4, max_size=4), max_size=8),
)

payloads = st.one_of(
    st.builds(SaPayload, st.lists(proposals, min_size=1, max_size=4)),
    st.builds(KePayload, u16, st.binary(max_size=300)),
    st.builds(IdPayload, st.sampled_from([PayloadType.IDi, PayloadType.IDr]), u8, blob),
    st.builds(CertPayload, u8, blob),
    st.builds(CertReqPayload, u8, blob),
    st.builds(AuthPayload, u8, blob),
    st.builds(NoncePayload, st.binary(min_size=16, max_size=256)),
    st.builds(NotifyPayload, u16, blob, u8, spi),
    deletes,
    st.builds(VendorPayload, blob),
    st.builds(
        TsPayload,
        st.sampled_from([PayloadType.TSi, PayloadType.TSr]),
        st.lists(selectors, min_size=1, max_size=5),
    ),
    st.builds(
        CpPayload,
        u8,
        st.lists(
            st.builds(CfgAttribute, st.integers(0, 0x7FFF), st.binary(max_size=20)), max_size=6
        ),
    ),
    st.builds(EapPayload, eap),
    st.builds(
        UnknownPayload, st.integers(1, 255).filter(lambda t: t not in KNOWN), st.booleans(), blob
    ),
)
sealed = st.builds(SkPayload, u8, blob) | st.integers(1, 20).flatmap(
    lambda total: st.builds(SkfPayload, u8, st.integers(1, total), st.just(total), blob)
)


@st.composite
def messages(draw: st.DrawFn, with_sealed: bool = True) -> Message:
    body = draw(st.lists(payloads, max_size=8))
    if with_sealed and draw(st.booleans()):
        body.append(draw(sealed))
    return Message(
        draw(st.binary(min_size=8, max_size=8)),
        draw(st.binary(min_size=8, max_size=8)),
        draw(u8),
        draw(u8),
        draw(st.integers(0, 2**32 - 1)),
        body,
    )


def decode_or_reject(raw: bytes) -> None:
    """Only DecodeError may escape; whatever decodes must survive a round trip unchanged."""
    try:
        m = decode(raw)
    except DecodeError:
        return
    assert decode(encode(m)) == m


def fix_length(raw: bytes) -> bytes:
    """Make the header length right again so that the payload decoders see the damage."""
    return raw[:24] + struct.pack("!I", len(raw)) + raw[28:] if len(raw) >= 28 else raw


@FUZZ_MSG
@given(messages())
def test_random_messages_round_trip(m):
    raw = encode(m)
    assert decode(raw) == m
    assert encode(decode(raw)) == raw


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(raw):
    decode_or_reject(raw)
    # The same bytes behind a valid header, the first one naming the first payload.
    decode_or_reject(fix_length(bytes(16) + raw[:1] + b"\x20" + bytes(10) + raw[1:]))


@FUZZ
@given(st.sampled_from([*sorted(KNOWN), 0, 1, 99]), st.binary(max_size=400))
def test_random_payload_chains(first, raw):
    try:
        chain = decode_payloads(first, raw)
    except DecodeError:
        return
    assert decode_payloads(*encode_payloads(chain)) == chain


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(sorted(KNOWN)), u8, st.binary(max_size=80)), max_size=5))
def test_random_bodies_behind_valid_generic_headers(chain):
    """Well-formed chaining, random bodies: reaches every payload decoder."""
    out = b""
    for i, (_, flags, body) in enumerate(chain):
        nxt = chain[i + 1][0] if i + 1 < len(chain) else 0
        out += struct.pack("!BBH", nxt, flags, 4 + len(body)) + body
    first = chain[0][0] if chain else 0
    hdr = struct.pack("!8s8sBBBBII", bytes(8), bytes(8), first, 0x20, 34, 8, 0, 28 + len(out))
    decode_or_reject(hdr + out)


@FUZZ_MSG
@given(messages(), st.data())
def test_bit_flips(m, data):
    raw = bytearray(encode(m))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    decode_or_reject(bytes(raw))
    decode_or_reject(fix_length(bytes(raw)))


@FUZZ_MSG
@given(messages(), st.data())
def test_truncation_and_extension(m, data):
    raw = encode(m)
    cut = data.draw(st.integers(0, len(raw)))
    decode_or_reject(fix_length(raw[:cut]))
    decode_or_reject(fix_length(raw + data.draw(st.binary(min_size=1, max_size=16))))


@FUZZ_MSG
@given(messages(), st.data())
def test_length_field_edits(m, data):
    raw = bytearray(encode(m))
    if len(raw) < 30:
        return
    # Overwrite any 16-bit word after the header: generic, proposal, transform, attribute,
    # selector and CP lengths are all 16-bit fields.
    i = data.draw(st.integers(28, len(raw) - 2))
    raw[i : i + 2] = struct.pack("!H", data.draw(u16 | st.integers(0, 64)))
    decode_or_reject(bytes(raw))


@FUZZ_MSG
@given(messages(with_sealed=False), st.data())
def test_tampered_protected_messages(m, data):
    tx, rx = FakeGcmSk.pair()
    raw = encode_protected(m, tx)
    assert open_protected(raw, rx) == m
    bad = bytearray(raw)
    i = data.draw(st.integers(0, len(bad) - 1))
    bad[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        open_protected(bytes(bad), rx)
    except (DecodeError, CryptoError):
        return
    raise AssertionError(f"tampered octet {i} accepted")


@FUZZ
@given(u8, st.binary(max_size=300))
def test_authentic_garbage_inside_sk(first_inner, plain):
    """A peer with the right keys can still send nonsense: DecodeError, never a crash."""
    tx, rx = FakeGcmSk.pair()
    sealed_len = tx.sealed_len(len(plain))
    hdr = struct.pack("!8s8sBBBBII", bytes(8), bytes(8), 46, 0x20, 35, 8, 1, 32 + sealed_len)
    aad = hdr + struct.pack("!BBH", first_inner, 0, 4 + sealed_len)
    with contextlib.suppress(DecodeError):
        open_protected(aad + tx.seal(aad, plain), rx)
