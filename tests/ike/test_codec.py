"""ike.codec: round trips, wire layout, malformed input, protected messages, describe()."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from scapy.contrib import ikev2 as S

from ike.codec import (
    MAX_ATTRIBUTES,
    Header,
    UnsupportedVersion,
    decode,
    decode_header,
    decode_payloads,
    describe,
    encode,
    encode_payloads,
    encode_protected,
    open_protected,
    unsupported_critical,
)
from ike.constants import (
    AuthMethod,
    CertEncoding,
    CfgAttr,
    CfgType,
    EncrId,
    ExchangeType,
    HeaderFlag,
    IdType,
    IntegId,
    KeId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
    TsType,
)
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

SPI_I = bytes.fromhex("0102030405060708")
SPI_R = bytes.fromhex("a1a2a3a4a5a6a7a8")
IP = ipaddress.ip_address


def msg(*payloads, exchange=ExchangeType.IKE_SA_INIT, flags=HeaderFlag.INITIATOR, mid=0):
    return Message(SPI_I, SPI_R, exchange, flags, mid, list(payloads))


def wire(*chain: tuple[int, bytes] | tuple[int, bytes, int], exchange=34, flags=0x08, mid=0):
    """A datagram built by hand, independently of the codec: (type, body[, payload flags])."""
    out = b""
    for i, item in enumerate(chain):
        nxt = chain[i + 1][0] if i + 1 < len(chain) else 0
        pflags = item[2] if len(item) == 3 else 0
        out += struct.pack("!BBH", nxt, pflags, 4 + len(item[1])) + item[1]
    first = chain[0][0] if chain else 0
    hdr = struct.pack("!8s8sBBBBII", SPI_I, SPI_R, first, 0x20, exchange, flags, mid, 28 + len(out))
    return hdr + out


def sa_ike() -> SaPayload:
    return SaPayload(
        [
            Proposal(
                1,
                ProtocolId.IKE,
                b"",
                [
                    Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
                    Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
                    Transform(TransformType.KE, KeId.CURVE25519),
                ],
            ),
            Proposal(
                2,
                ProtocolId.IKE,
                b"",
                [
                    Transform(TransformType.ENCR, EncrId.AES_CBC, 128),
                    Transform(TransformType.INTEG, IntegId.HMAC_SHA2_256_128),
                    Transform(TransformType.PRF, PrfId.HMAC_SHA2_384),
                    Transform(TransformType.KE, KeId.ECP_256),
                    Transform(TransformType.KE, KeId.MODP_2048),
                ],
            ),
        ]
    )


def sa_esp() -> SaPayload:
    return SaPayload(
        [
            Proposal(
                1,
                ProtocolId.ESP,
                b"\xc0\x01\x02\x03",
                [
                    Transform(TransformType.ENCR, EncrId.AES_GCM_16, 128),
                    Transform(TransformType.ESN, 0),
                ],
            )
        ]
    )


TS4 = TrafficSelector(TsType.TS_IPV4_ADDR_RANGE, 0, 0, 65535, IP("10.1.0.0"), IP("10.1.255.255"))
TS6 = TrafficSelector(TsType.TS_IPV6_ADDR_RANGE, 6, 443, 443, IP("2001:db8::"), IP("2001:db8::ff"))

EVERY_PAYLOAD = [
    sa_ike(),
    sa_esp(),
    KePayload(KeId.CURVE25519, bytes(range(32))),
    KePayload(KeId.ECP_256, b""),
    IdPayload(PayloadType.IDi, IdType.FQDN, b"gw.example.org"),
    IdPayload(PayloadType.IDr, IdType.IPV4_ADDR, bytes([192, 0, 2, 1])),
    CertPayload(CertEncoding.X509_SIGNATURE, b"\x30\x82" + bytes(200)),
    CertReqPayload(CertEncoding.X509_SIGNATURE, bytes(range(40))),
    CertReqPayload(CertEncoding.X509_SIGNATURE, b""),
    AuthPayload(AuthMethod.PSK, bytes(range(32))),
    NoncePayload(bytes(16)),
    NoncePayload(bytes(range(256))),
    NotifyPayload(NotifyType.INITIAL_CONTACT),
    NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(range(20))),
    NotifyPayload(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"\x01\x02\x03\x04"),
    NotifyPayload(NotifyType.INVALID_IKE_SPI, b"x", ProtocolId.IKE, SPI_I),
    NotifyPayload(40000, b"private use"),
    DeletePayload(ProtocolId.IKE),
    DeletePayload(ProtocolId.ESP, [b"\x00\x00\x00\x01", b"\xff\xff\xff\xff"]),
    DeletePayload(ProtocolId.AH, [b"abcd"]),
    VendorPayload(b"\x88\x2f\xe5\x6d\x6f\xd2\x0d\xbc"),
    VendorPayload(b""),
    TsPayload(PayloadType.TSi, [TS4]),
    TsPayload(PayloadType.TSr, [TS6, TS4, TS6]),
    CpPayload(CfgType.CFG_REQUEST, [CfgAttribute(CfgAttr.INTERNAL_IP4_ADDRESS)]),
    CpPayload(
        CfgType.CFG_REPLY,
        [
            CfgAttribute(CfgAttr.INTERNAL_IP4_ADDRESS, bytes([10, 0, 0, 2])),
            CfgAttribute(CfgAttr.INTERNAL_IP6_DNS, IP("2001:db8::53").packed),
        ],
    ),
    CpPayload(CfgType.CFG_ACK, []),
    EapPayload(bytes([1, 7, 0, 5, 1])),  # Request/Identity
    EapPayload(bytes([3, 7, 0, 4])),  # Success
    UnknownPayload(200, False, b"future"),
    UnknownPayload(PayloadType.GSPM, True, b""),
]


# --- header -----------------------------------------------------------------------------


def test_header_round_trip_and_layout():
    hdr = Header(SPI_I, SPI_R, PayloadType.SA, 0x20, ExchangeType.IKE_AUTH, 0x28, 0x01020304, 28)
    raw = hdr.encode()
    assert raw == SPI_I + SPI_R + bytes([33, 0x20, 35, 0x28, 1, 2, 3, 4, 0, 0, 0, 28])
    assert decode_header(raw) == hdr


def test_header_minor_version_ignored_and_kept():
    raw = bytearray(wire())
    raw[17] = 0x21
    assert decode_header(bytes(raw)).version == 0x21


@pytest.mark.parametrize("version", [0x10, 0x30, 0xF0, 0x00])
def test_other_major_version_is_distinguishable(version):
    raw = bytearray(wire((PayloadType.NONCE, bytes(16))))
    raw[17] = version
    with pytest.raises(UnsupportedVersion) as info:
        decode(bytes(raw))
    assert isinstance(info.value, DecodeError)
    assert info.value.header.spi_i == SPI_I
    assert info.value.header.version == version


def test_header_length_must_match_datagram():
    good = wire((PayloadType.NONCE, bytes(16)))
    decode(good)
    for bad in (good + b"\x00", good[:-1]):  # datagram longer / shorter than the length field
        with pytest.raises(DecodeError):
            decode_header(bad)
        with pytest.raises(DecodeError):
            decode(bad)
    for n in range(28):
        with pytest.raises(DecodeError):
            decode_header(good[:n])


def test_header_encode_rejects_bad_spi():
    with pytest.raises(ValueError):
        Header(b"short", SPI_R, 0, 0x20, 34, 0, 0, 28).encode()


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("payload", EVERY_PAYLOAD, ids=lambda p: type(p).__name__)
def test_every_payload_round_trips(payload):
    m = msg(NoncePayload(bytes(32)), payload, NotifyPayload(NotifyType.COOKIE, b"c" * 8))
    raw = encode(m)
    back = decode(raw)
    assert back == m
    assert encode(back) == raw


def test_whole_inner_chain_round_trips():
    first, raw = encode_payloads(EVERY_PAYLOAD)
    assert first == PayloadType.SA
    assert decode_payloads(first, raw) == EVERY_PAYLOAD
    assert encode_payloads(decode_payloads(first, raw)) == (first, raw)


def test_empty_message_round_trips():
    m = msg(exchange=ExchangeType.INFORMATIONAL, flags=HeaderFlag.RESPONSE, mid=7)
    raw = encode(m)
    assert len(raw) == 28 and raw[16] == 0
    assert decode(raw) == m


def test_sealed_payloads_round_trip_as_opaque():
    sk = msg(SkPayload(PayloadType.IDi, bytes(range(60))), exchange=ExchangeType.IKE_AUTH, mid=1)
    raw = encode(sk)
    assert raw[16] == PayloadType.SK and raw[28] == PayloadType.IDi  # SK's next = first inner
    assert decode(raw) == sk
    skf = msg(SkfPayload(0, 2, 3, bytes(40)), exchange=ExchangeType.IKE_AUTH, mid=1)
    assert decode(encode(skf)) == skf


def test_decoded_values_are_enums_where_known():
    m = decode(encode(msg(sa_ike(), flags=HeaderFlag.INITIATOR | HeaderFlag.RESPONSE)))
    assert m.exchange is ExchangeType.IKE_SA_INIT
    assert m.flags == HeaderFlag.INITIATOR | HeaderFlag.RESPONSE and m.is_response
    t = m.payloads[0].proposals[0].transforms[0]
    assert t.type is TransformType.ENCR and t.key_length == 256


def test_reserved_header_flags_survive():
    raw = wire((PayloadType.NONCE, bytes(16)), flags=0x08 | 0x01)
    assert encode(decode(raw)) == raw


# --- wire layout (independent of our encoder) -------------------------------------------


def test_sa_wire_layout_markers_and_key_length():
    raw = encode(msg(sa_ike()))
    body = raw[32:]
    # proposal 1: more follows (2), proposal number 1, protocol IKE, no SPI, 3 transforms
    assert body[0] == 2 and body[4:8] == bytes([1, 1, 0, 3])
    p1_len = struct.unpack("!H", body[2:4])[0]
    assert p1_len == 8 + 12 + 8 + 8
    t1 = body[8:20]
    assert t1 == bytes([3, 0, 0, 12, 1, 0, 0, 20, 0x80, 0x0E, 0x01, 0x00])  # ENCR GCM16 256
    assert body[20] == 3 and body[28] == 0  # transform markers: more, then last
    p2 = body[p1_len:]
    assert p2[0] == 0 and p2[4] == 2 and p2[7] == 5  # last proposal, number 2, 5 transforms


def test_response_keeps_the_chosen_proposal_number():
    chosen = SaPayload(
        [Proposal(3, ProtocolId.ESP, b"\x01\x02\x03\x04", sa_esp().proposals[0].transforms)]
    )
    raw = encode(msg(chosen, flags=HeaderFlag.RESPONSE))
    assert raw[32] == 0 and raw[36] == 3
    assert decode(raw).payloads[0].proposals[0].num == 3


def test_decode_hand_built_sa_init():
    xforms = (
        struct.pack("!BBHBBH", 3, 0, 12, 1, 0, 12) + struct.pack("!HH", 0x800E, 256)
        + struct.pack("!BBHBBH", 3, 0, 8, 3, 0, 12)
        + struct.pack("!BBHBBH", 3, 0, 8, 2, 0, 5)
        + struct.pack("!BBHBBH", 0, 0, 8, 4, 0, 19)
    )  # fmt: skip
    prop = struct.pack("!BBHBBBB", 0, 0, 8 + len(xforms), 1, 1, 0, 4) + xforms
    raw = wire(
        (PayloadType.SA, prop),
        (PayloadType.KE, struct.pack("!HH", 19, 0) + bytes(64)),
        (PayloadType.NONCE, bytes(range(32))),
        (PayloadType.NOTIFY, struct.pack("!BBH", 0, 0, 16388) + bytes(20)),
    )
    m = decode(raw)
    sa, ke, nonce, notify = m.payloads
    assert sa.proposals[0].transforms == [
        Transform(TransformType.ENCR, EncrId.AES_CBC, 256),
        Transform(TransformType.INTEG, IntegId.HMAC_SHA2_256_128),
        Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
        Transform(TransformType.KE, KeId.ECP_256),
    ]
    assert (ke.group, ke.data) == (19, bytes(64))
    assert nonce.nonce == bytes(range(32))
    assert notify == NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(20))
    assert encode(m) == raw


def test_ts_wire_layout():
    raw = encode(msg(TsPayload(PayloadType.TSi, [TS4, TS6])))
    body = raw[32:]
    assert body[:4] == bytes([2, 0, 0, 0])
    assert body[4:20] == bytes([7, 0, 0, 16, 0, 0, 0xFF, 0xFF, 10, 1, 0, 0, 10, 1, 255, 255])
    assert body[20:28] == bytes([8, 6, 0, 40, 1, 187, 1, 187])
    assert body[28:44] == IP("2001:db8::").packed


# --- unknown payloads and attributes ----------------------------------------------------


def test_unknown_payloads_and_critical_bit():
    raw = wire(
        (PayloadType.NONCE, bytes(16)),
        (150, b"ignored", 0x00),
        (151, b"must understand", 0x80),
        (152, b"", 0x80),
    )
    m = decode(raw)
    assert m.payloads[1:] == [
        UnknownPayload(150, False, b"ignored"),
        UnknownPayload(151, True, b"must understand"),
        UnknownPayload(152, True, b""),
    ]
    assert unsupported_critical(m.payloads) == 151
    assert unsupported_critical(m.payloads[:2]) is None
    assert encode(m) == raw


def test_critical_bit_on_known_payload_is_ignored():
    m = decode(wire((PayloadType.NONCE, bytes(16), 0x80)))
    assert m.payloads == [NoncePayload(bytes(16))]
    assert unsupported_critical(m.payloads) is None


def _sa_with_attrs(attrs: bytes) -> bytes:
    xform = struct.pack("!BBHBBH", 0, 0, 8 + len(attrs), 1, 0, 12) + attrs
    return wire((PayloadType.SA, struct.pack("!BBHBBBB", 0, 0, 8 + len(xform), 1, 1, 0, 1) + xform))


def test_unknown_attributes_are_recorded_and_re_encoded_exactly():
    attrs = (
        struct.pack("!HH", 0x8000 | 99, 7)  # unknown TV
        + struct.pack("!HH", 98, 3) + b"abc"  # unknown TLV
        + struct.pack("!HH", 0x800E, 192)
        + struct.pack("!HH", 97, 0)  # empty TLV
    )  # fmt: skip
    raw = _sa_with_attrs(attrs)
    t = decode(raw).payloads[0].proposals[0].transforms[0]
    assert t == Transform(
        TransformType.ENCR,
        EncrId.AES_CBC,
        192,
        (TransformAttribute(99, 7), TransformAttribute(98, b"abc"), TransformAttribute(97, b"")),
    )
    assert t.key_length_at == 2  # KEY_LENGTH came third on the wire
    assert encode(decode(raw)) == raw  # order and TV/TLV formats kept


@pytest.mark.parametrize("key_length_first", [True, False])
def test_unknown_attribute_order_round_trips(key_length_first):
    unknown = struct.pack("!HH", 0x8000 | 99, 7)
    key_length = struct.pack("!HH", 0x800E, 256)
    raw = _sa_with_attrs(key_length + unknown if key_length_first else unknown + key_length)
    assert encode(decode(raw)) == raw
    assert encode(decode(_sa_with_attrs(unknown))) == _sa_with_attrs(unknown)  # no KEY_LENGTH


def test_too_many_attributes():
    ok = struct.pack("!HH", 0x8000 | 99, 7) * MAX_ATTRIBUTES
    assert len(decode(_sa_with_attrs(ok)).payloads[0].proposals[0].transforms[0].
               unknown_attributes) == MAX_ATTRIBUTES  # fmt: skip
    with pytest.raises(DecodeError):
        decode(_sa_with_attrs(ok + struct.pack("!HH", 0x800E, 128)))


@pytest.mark.parametrize(
    "attrs",
    [
        struct.pack("!HH", 14, 2) + b"\x01\x00",  # KEY_LENGTH in TLV form
        struct.pack("!HH", 0x800E, 128) * 2,  # duplicate KEY_LENGTH
        struct.pack("!HH", 98, 5) + b"abc",  # TLV value overruns the transform
        b"\x80\x0e",  # truncated attribute header
    ],
)
def test_malformed_attributes(attrs):
    with pytest.raises(DecodeError):
        decode(_sa_with_attrs(attrs))


# --- malformed payloads -----------------------------------------------------------------

P = PayloadType
GOOD_XFORM = struct.pack("!BBHBBH", 0, 0, 8, 4, 0, 19)


def prop(more=0, num=1, proto=1, spi=b"", ntrans=1, xforms=GOOD_XFORM, plen=None):
    body = spi + xforms
    length = 8 + len(body) if plen is None else plen
    return struct.pack("!BBHBBBB", more, 0, length, num, proto, len(spi), ntrans) + body


def ts(ts_type=7, slen=16, addrs=bytes(8)):
    return struct.pack("!BBHHH", ts_type, 0, slen, 0, 65535) + addrs


MALFORMED = {
    "sa empty": (P.SA, b""),
    "sa more marker on last": (P.SA, prop(more=2)),
    "sa last marker then more": (P.SA, prop() + prop(num=2)),
    "sa bad marker": (P.SA, prop(more=1)),
    "sa proposal length short": (P.SA, prop(plen=7)),
    "sa proposal length overrun": (P.SA, prop(plen=40)),
    "sa proposal overruns the datagram": (
        P.SA,
        prop(plen=40, ntrans=2, xforms=struct.pack("!BBHBBH", 3, 0, 8, 4, 0, 19)),
    ),
    "sa proposal truncated": (P.SA, prop()[:6]),
    "sa spi size 3": (P.SA, prop(spi=b"abc")),
    "sa spi larger than proposal": (P.SA, prop(spi=b"abcd", plen=10)),
    "sa fewer transforms than count": (P.SA, prop(ntrans=2)),
    "sa more transforms than count": (
        P.SA,
        prop(ntrans=1, xforms=struct.pack("!BBHBBH", 3, 0, 8, 1, 0, 12) + GOOD_XFORM),
    ),
    "sa transform more marker on last": (
        P.SA,
        prop(xforms=struct.pack("!BBHBBH", 3, 0, 8, 4, 0, 19)),
    ),
    "sa transform length short": (P.SA, prop(xforms=struct.pack("!BBHBBH", 0, 0, 7, 4, 0, 19))),
    "sa transform truncated": (P.SA, prop(xforms=GOOD_XFORM[:5])),
    "sa too many proposals": (
        P.SA,
        b"".join(prop(more=2, num=i + 1) for i in range(64)) + prop(num=65),
    ),
    "sa too many transforms": (
        P.SA,
        prop(ntrans=65, xforms=struct.pack("!BBHBBH", 3, 0, 8, 4, 0, 19) * 64 + GOOD_XFORM),
    ),
    "ke short": (P.KE, b"\x00\x13\x00"),
    "id short": (P.IDi, b"\x02\x00\x00"),
    "cert empty": (P.CERT, b""),
    "certreq empty": (P.CERTREQ, b""),
    "auth short": (P.AUTH, b"\x02\x00"),
    "nonce 15": (P.NONCE, bytes(15)),
    "nonce 257": (P.NONCE, bytes(257)),
    "nonce empty": (P.NONCE, b""),
    "notify short": (P.NOTIFY, b"\x00\x00\x40"),
    "notify spi size 3": (P.NOTIFY, b"\x03\x03\x40\x00abc"),
    "notify spi truncated": (P.NOTIFY, b"\x01\x08\x00\x04abcd"),
    "delete short": (P.DELETE, b"\x03\x04\x00"),
    "delete ike with spi size": (P.DELETE, b"\x01\x04\x00\x01abcd"),
    "delete ike with count": (P.DELETE, b"\x01\x00\x00\x01"),
    "delete esp spi size 0": (P.DELETE, b"\x03\x00\x00\x00"),
    "delete esp spi size 8": (P.DELETE, b"\x03\x08\x00\x01abcdefgh"),
    "delete esp count too high": (P.DELETE, b"\x03\x04\x00\x02abcd"),
    "delete esp count too low": (P.DELETE, b"\x03\x04\x00\x01abcdefgh"),
    "delete unknown protocol": (P.DELETE, b"\x09\x04\x00\x01abcd"),
    "delete too many spis": (P.DELETE, b"\x03\x04\x00\x41" + bytes(4 * 65)),
    "ts no selectors": (P.TSi, b"\x00\x00\x00\x00"),
    "ts count too high": (P.TSi, b"\x02\x00\x00\x00" + ts()),
    "ts count too low": (P.TSr, b"\x01\x00\x00\x00" + ts() + ts()),
    "ts unknown type": (P.TSi, b"\x01\x00\x00\x00" + ts(ts_type=9)),
    "ts ipv4 wrong length": (P.TSi, b"\x01\x00\x00\x00" + ts(slen=20, addrs=bytes(12))),
    "ts ipv6 wrong length": (P.TSi, b"\x01\x00\x00\x00" + ts(ts_type=8, slen=16)),
    "ts selector truncated": (P.TSi, b"\x01\x00\x00\x00" + ts()[:12]),
    "ts ipv6 truncated": (P.TSi, b"\x01\x00\x00\x00" + ts(ts_type=8, slen=40, addrs=bytes(16))),
    "ts short": (P.TSi, b"\x01\x00"),
    "cp short": (P.CP, b"\x01\x00"),
    "cp attribute overrun": (P.CP, b"\x01\x00\x00\x00" + struct.pack("!HH", 1, 4) + b"ab"),
    "cp attribute truncated": (P.CP, b"\x01\x00\x00\x00\x00\x01"),
    "cp too many attributes": (P.CP, b"\x01\x00\x00\x00" + struct.pack("!HH", 3, 0) * 129),
    "eap short": (P.EAP, b"\x01\x01\x00"),
    "eap length mismatch": (P.EAP, b"\x01\x01\x00\x09\x01"),
    "skf short": (P.SKF, b"\x00\x01\x00"),
    "skf number zero": (P.SKF, b"\x00\x00\x00\x02" + bytes(24)),
    "skf number above total": (P.SKF, b"\x00\x03\x00\x02" + bytes(24)),
    "skf total zero": (P.SKF, b"\x00\x00\x00\x00" + bytes(24)),
}


@pytest.mark.parametrize("case", MALFORMED, ids=str)
def test_malformed_payload(case):
    ptype, body = MALFORMED[case]
    with pytest.raises(DecodeError):
        decode(wire((ptype, body)))
    if ptype not in (P.SK, P.SKF):
        with pytest.raises(DecodeError):
            decode_payloads(ptype, wire((ptype, body))[28:])


def test_limits_are_inclusive():
    # Exactly at each limit is still fine.
    decode(wire((P.SA, b"".join(prop(more=2, num=i + 1) for i in range(63)) + prop(num=64))))
    decode(wire((P.CP, b"\x01\x00\x00\x00" + struct.pack("!HH", 3, 0) * 128)))
    decode(wire((P.DELETE, b"\x03\x04\x00\x40" + bytes(4 * 64))))
    decode(wire(*[(P.VENDOR, b"v")] * 64))
    m = decode(wire((P.TSi, b"\xff\x00\x00\x00" + ts() * 255)))
    assert len(m.payloads[0].selectors) == 255


def test_too_many_payloads():
    with pytest.raises(DecodeError):
        decode(wire(*[(P.VENDOR, b"v")] * 65))
    with pytest.raises(ValueError):
        encode(msg(*[VendorPayload(b"v")] * 65))


def _patch_payload_length(raw: bytes, offset: int, value: int) -> bytes:
    return raw[: offset + 2] + struct.pack("!H", value) + raw[offset + 4 :]


@pytest.mark.parametrize("length", [0, 1, 3, 21, 200, 0xFFFF])
@pytest.mark.parametrize("first", [P.NONCE, P.VENDOR, 200])
def test_bad_generic_payload_length(first, length):
    raw = wire((first, bytes(16)), (P.VENDOR, b"abc"))
    if length == 20:
        decode(raw)  # the unpatched length is fine
    with pytest.raises(DecodeError):
        decode(_patch_payload_length(raw, 28, length))


def test_overlapping_payload_headers():
    # A length of 2 would make the next header start inside this one; the chain then
    # still ends exactly at the datagram end, so only the "length >= 4" rule catches it.
    raw = wire() + bytes([P.VENDOR, 0, 0, 2, 0, 4])
    raw = raw[:16] + bytes([P.VENDOR]) + raw[17:24] + struct.pack("!I", len(raw)) + raw[28:]
    with pytest.raises(DecodeError):
        decode(raw)


def test_chain_and_buffer_must_agree():
    with pytest.raises(DecodeError):  # next payload announced but nothing follows
        decode(wire((P.NONCE, bytes(16)))[:28] + b"\x2b\x00\x00\x14" + bytes(16))
    trailing = wire((P.NONCE, bytes(16))) + b"junk"
    trailing = trailing[:24] + struct.pack("!I", len(trailing)) + trailing[28:]
    with pytest.raises(DecodeError):  # bytes after the last payload
        decode(trailing)
    bare = struct.pack("!8s8sBBBBII", SPI_I, SPI_R, P.NONCE, 0x20, 34, 0x08, 0, 28)
    with pytest.raises(DecodeError):  # header announces a payload, datagram has none
        decode(bare)


def test_sk_must_be_last_and_not_nested():
    with pytest.raises(DecodeError):
        decode(wire((P.SK, bytes(32)), (P.NONCE, bytes(16))))
    raw = wire((P.SK, bytes(32)))
    with pytest.raises(DecodeError):
        decode_payloads(P.SK, raw[28:])
    with pytest.raises(ValueError):
        encode(msg(SkPayload(0, bytes(32)), NoncePayload(bytes(16))))
    with pytest.raises(ValueError):
        encode_payloads([NoncePayload(bytes(16)), SkPayload(0, bytes(32))])


def test_truncated_payloads_raise_decode_error():
    raw = encode(msg(*EVERY_PAYLOAD[:12]))
    for cut in range(29, len(raw)):
        short = raw[:cut]
        short = short[:24] + struct.pack("!I", cut) + short[28:]
        with pytest.raises(DecodeError):
            decode(short)


# --- encoder refuses what the decoder would refuse --------------------------------------

BAD_FOR_ENCODE = [
    NoncePayload(bytes(15)),
    SaPayload([]),
    SaPayload([Proposal(1, ProtocolId.ESP, b"abc", [])]),
    SaPayload([Proposal(1, ProtocolId.IKE, b"", [Transform(1, 12, 70000)])]),
    SaPayload([Proposal(1, 1, b"", [Transform(1, 12, None, (TransformAttribute(14, 1),))])]),
    SaPayload([Proposal(1, 1, b"", [Transform(1, 12, None, (TransformAttribute(1 << 15, 1),))])]),
    SaPayload([Proposal(1, 1, b"", [Transform(1, 12, None, (TransformAttribute(9, 1 << 16),))])]),
    SaPayload([Proposal(1, 1, b"", [Transform(1, 12, None, (TransformAttribute(9, b"x"),) * 17)])]),
    NotifyPayload(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"abc"),
    DeletePayload(ProtocolId.IKE, [b"abcd"]),
    DeletePayload(ProtocolId.ESP, [b"abcdefgh"]),
    DeletePayload(7, [b"abcd"]),
    TsPayload(PayloadType.TSi, []),
    TsPayload(PayloadType.TSi, [TrafficSelector(7, 0, 0, 65535, IP("::"), IP("::1"))]),
    TsPayload(PayloadType.TSi, [TrafficSelector(9, 0, 0, 65535, IP("1.2.3.4"), IP("1.2.3.4"))]),
    TsPayload(PayloadType.SA, [TS4]),
    IdPayload(PayloadType.TSi, 1, b"1234"),
    EapPayload(b"\x01\x01\x00"),
    EapPayload(b"\x01\x01\x00\x07\x01"),
    SkfPayload(0, 3, 2, b""),
    UnknownPayload(PayloadType.NONCE, False, bytes(16)),
    UnknownPayload(0, False, b""),
    VendorPayload(bytes(0x10000)),
    KePayload(0x10000, b""),
]


@pytest.mark.parametrize("payload", BAD_FOR_ENCODE, ids=lambda p: type(p).__name__)
def test_encoder_rejects_unrepresentable(payload):
    with pytest.raises(ValueError):
        encode(msg(payload))


# --- protected messages -----------------------------------------------------------------


def auth_request() -> Message:
    return msg(
        IdPayload(PayloadType.IDi, IdType.FQDN, b"client.example"),
        NotifyPayload(NotifyType.INITIAL_CONTACT),
        AuthPayload(AuthMethod.PSK, bytes(range(32))),
        sa_esp(),
        TsPayload(PayloadType.TSi, [TS4]),
        TsPayload(PayloadType.TSr, [TS6]),
        exchange=ExchangeType.IKE_AUTH,
        mid=1,
    )


def test_protected_round_trip():
    tx, rx = FakeGcmSk.pair()
    m = auth_request()
    raw = encode_protected(m, tx)
    outer = decode(raw)
    assert [type(p) for p in outer.payloads] == [SkPayload]
    assert outer.payloads[0].first_inner == PayloadType.IDi
    assert bytes(m.payloads[0].data) not in raw  # really encrypted
    assert open_protected(raw, rx) == m
    assert encode(outer) == raw  # the sealed form also round-trips byte for byte


def test_protected_empty_message():
    tx, rx = FakeGcmSk.pair()
    m = msg(exchange=ExchangeType.INFORMATIONAL, mid=5)
    raw = encode_protected(m, tx)
    assert raw[28] == 0
    assert open_protected(raw, rx) == m


def test_wrong_key_is_crypto_error():
    tx, _ = FakeGcmSk.pair()
    _, other = FakeGcmSk.pair()
    with pytest.raises(CryptoError):
        open_protected(encode_protected(auth_request(), tx), other)


def test_every_tampered_octet_is_rejected():
    tx, rx = FakeGcmSk.pair()
    raw = encode_protected(auth_request(), tx)
    syntax = {16, 24, 25, 26, 27, 30, 31}  # next payload and length fields: may fail parsing
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises((CryptoError, DecodeError) if i in syntax else CryptoError):
            open_protected(bytes(bad), rx)


def test_unprotected_payloads_before_sk_are_authenticated_and_kept():
    tx, rx = FakeGcmSk.pair()
    inner = [NotifyPayload(NotifyType.INITIAL_CONTACT)]
    first, plain = encode_payloads(inner)
    vendor = bytes([P.SK]) + wire((P.VENDOR, b"vid"))[29:]  # Vendor ID, then SK
    sealed_len = tx.sealed_len(len(plain))
    total = 28 + len(vendor) + 4 + sealed_len
    hdr = struct.pack("!8s8sBBBBII", SPI_I, SPI_R, P.VENDOR, 0x20, 37, 0x08, 2, total)
    aad = hdr + vendor + struct.pack("!BBH", first, 0, 4 + sealed_len)
    raw = aad + tx.seal(aad, plain)
    m = open_protected(raw, rx)
    assert m.payloads == [VendorPayload(b"vid"), *inner]
    tampered = raw.replace(b"vid", b"vie")
    with pytest.raises(CryptoError):
        open_protected(tampered, rx)


def test_open_protected_needs_sk():
    _, rx = FakeGcmSk.pair()
    with pytest.raises(DecodeError):
        open_protected(encode(msg(NoncePayload(bytes(16)))), rx)
    with pytest.raises(DecodeError):
        open_protected(wire((P.SKF, b"\x00\x01\x00\x01" + bytes(40))), rx)
    with pytest.raises(DecodeError):  # shorter than IV + ICV
        open_protected(wire((P.SK, bytes(10))), rx)


def test_garbage_plaintext_is_decode_error():
    tx, rx = FakeGcmSk.pair()
    plain = b"\x00\x00\x00\x02"  # a payload length below 4
    sealed_len = tx.sealed_len(len(plain))
    hdr = struct.pack("!8s8sBBBBII", SPI_I, SPI_R, P.SK, 0x20, 37, 0, 3, 32 + sealed_len)
    aad = hdr + struct.pack("!BBH", P.NOTIFY, 0, 4 + sealed_len)
    with pytest.raises(DecodeError):
        open_protected(aad + tx.seal(aad, plain), rx)


# --- describe ---------------------------------------------------------------------------


def test_describe():
    assert describe(auth_request()) == "IKE_AUTH request 1 [ IDi N(INIT_CONTACT) AUTH SA TSi TSr ]"
    init = msg(
        sa_ike(),
        KePayload(31, bytes(32)),
        NoncePayload(bytes(32)),
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(20)),
        NotifyPayload(NotifyType.NO_ADDITIONAL_SAS),
        NotifyPayload(50000),
        flags=HeaderFlag.RESPONSE,
    )
    assert describe(init) == (
        "IKE_SA_INIT response 0 [ SA KE No N(NATD_S_IP) N(NO_ADDITIONAL_SAS) N(NOTIFY_50000) ]"
    )
    info = msg(
        DeletePayload(ProtocolId.ESP, [b"abcd"]),
        CpPayload(CfgType.CFG_REQUEST, []),
        UnknownPayload(99, True, b""),
        SkfPayload(0, 2, 3, b""),
        exchange=77,
        mid=9,
    )
    assert describe(info) == "EXCHANGE_77 request 9 [ D(1) CPRQ U(99!) EF(2/3) ]"
    assert describe(msg(exchange=ExchangeType.INFORMATIONAL)) == "INFORMATIONAL request 0 [ ]"


# --- cross-check against scapy.contrib.ikev2, an independent implementation ------------


def _scapy_chain(first):
    """A scapy substructure followed by its siblings (proposals, transforms)."""
    while isinstance(first, S.IKEv2_Payload):
        yield first
        first = first.payload


def _scapy_sa_init():
    def xform(ttype, tid, key_length=None):
        if key_length is None:
            return S.IKEv2_Transform(transform_type=ttype, transform_id=tid)
        return S.IKEv2_Transform(
            transform_type=ttype, transform_id=tid, length=12, key_length=key_length
        )

    p1 = S.IKEv2_Proposal(
        proposal=1, proto=1, trans_nb=3, trans=xform(1, 20, 256) / xform(2, 7) / xform(4, 31)
    )
    p2 = S.IKEv2_Proposal(
        proposal=2,
        proto=1,
        trans_nb=4,
        trans=xform(1, 12, 128) / xform(3, 12) / xform(2, 5) / xform(4, 19),
    )
    return (
        S.IKEv2(init_SPI=SPI_I, resp_SPI=bytes(8), exch_type=34, flags="Initiator", id=0)
        / S.IKEv2_SA(prop=p1 / p2)
        / S.IKEv2_KE(group=31, ke=bytes(range(32)))
        / S.IKEv2_Nonce(nonce=bytes(range(100, 132)))
        / S.IKEv2_Notify(type=16388, notify=bytes(range(20)))
        / S.IKEv2_Notify(type=16430)
        / S.IKEv2_Notify(proto=3, SPIsize=4, SPI=b"\x00\x00\x10\x01", type=16393)
    )


def test_scapy_built_sa_init_decodes():
    pkt = _scapy_sa_init()
    raw = bytes(pkt)
    m = decode(raw)
    assert (m.spi_i, m.spi_r, m.exchange, m.message_id) == (SPI_I, bytes(8), 34, 0)
    assert m.is_from_initiator and not m.is_response
    sa, ke, nonce, natd, frag, rekey = m.payloads
    assert [p.num for p in sa.proposals] == [1, 2]
    assert sa.proposals[0].transforms == [
        Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
        Transform(TransformType.PRF, PrfId.HMAC_SHA2_512),
        Transform(TransformType.KE, KeId.CURVE25519),
    ]
    assert sa.proposals[1].transforms[0] == Transform(TransformType.ENCR, EncrId.AES_CBC, 128)
    assert sa.proposals[1].transforms[3] == Transform(TransformType.KE, KeId.ECP_256)
    assert ke == KePayload(31, bytes(range(32)))
    assert nonce == NoncePayload(bytes(range(100, 132)))
    assert natd == NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(range(20)))
    assert frag == NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)
    assert rekey == NotifyPayload(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"\x00\x00\x10\x01")
    assert encode(m) == raw


def test_our_sa_init_parses_in_scapy():
    m = msg(
        sa_ike(),
        KePayload(KeId.ECP_256, bytes(range(64))),
        NoncePayload(bytes(range(48))),
        NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, bytes(20)),
        NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, b"\x00\x13"),
        flags=HeaderFlag.RESPONSE,
        mid=0,
    )
    raw = encode(m)
    pkt = S.IKEv2(raw)
    assert (pkt.init_SPI, pkt.resp_SPI, pkt.exch_type, pkt.id) == (SPI_I, SPI_R, 34, 0)
    assert int(pkt.flags) == HeaderFlag.RESPONSE and pkt.length == len(raw)
    proposals = list(_scapy_chain(pkt[S.IKEv2_SA].prop))
    assert len(proposals) == len(m.payloads[0].proposals)
    for ours, theirs in zip(m.payloads[0].proposals, proposals, strict=True):
        assert (theirs.proposal, theirs.proto, theirs.SPIsize) == (ours.num, ours.protocol, 0)
        assert theirs.trans_nb == len(ours.transforms)
        got = [
            (t.transform_type, t.transform_id, t.key_length if t.length > 8 else None)
            for t in _scapy_chain(theirs.trans)
        ]
        assert got == [(t.type, t.id, t.key_length) for t in ours.transforms]
    assert pkt[S.IKEv2_KE].group == KeId.ECP_256 and pkt[S.IKEv2_KE].ke == bytes(range(64))
    assert pkt[S.IKEv2_Nonce].nonce == bytes(range(48))
    notifies = [p for p in pkt.iterpayloads() if isinstance(p, S.IKEv2_Notify)]
    assert [(n.type, n.notify) for n in notifies] == [(16389, bytes(20)), (17, b"\x00\x13")]
    assert bytes(pkt) == raw  # scapy rebuilds our datagram identically


def test_scapy_cross_check_auth_payloads():
    pkt = (
        S.IKEv2(init_SPI=SPI_I, resp_SPI=SPI_R, exch_type=35, flags="Response", id=1)
        / S.IKEv2_IDr(IDtype=2, ID=b"gw.example")
        / S.IKEv2_AUTH(auth_type=2, load=bytes(range(32)))
        / S.IKEv2_TSi(
            traffic_selector=[
                S.IPv4TrafficSelector(
                    IP_protocol_ID=0, starting_address_v4="10.0.0.0", ending_address_v4="10.0.0.255"
                ),
                # scapy's default IPv6 selector length (20) is wrong; RFC 7296 says 40.
                S.IPv6TrafficSelector(
                    length=40,
                    IP_protocol_ID=17,
                    start_port=500,
                    end_port=4500,
                    starting_address_v6="2001:db8::",
                    ending_address_v6="2001:db8::ffff",
                ),
            ]
        )
        / S.IKEv2_Delete(proto=3, SPIsize=4, SPInum=2, SPI=[b"abcd", b"efgh"])
    )
    raw = bytes(pkt)
    m = decode(raw)
    assert m.payloads == [
        IdPayload(PayloadType.IDr, IdType.FQDN, b"gw.example"),
        AuthPayload(AuthMethod.PSK, bytes(range(32))),
        TsPayload(
            PayloadType.TSi,
            [
                TrafficSelector(7, 0, 0, 65535, IP("10.0.0.0"), IP("10.0.0.255")),
                TrafficSelector(8, 17, 500, 4500, IP("2001:db8::"), IP("2001:db8::ffff")),
            ],
        ),
        DeletePayload(ProtocolId.ESP, [b"abcd", b"efgh"]),
    ]
    assert encode(m) == raw
    back = S.IKEv2(encode(m))
    selectors = back[S.IKEv2_TSi].traffic_selector
    assert [s.starting_address_v6 for s in selectors[1:]] == ["2001:db8::"]
    assert back[S.IKEv2_Delete].SPI == [b"abcd", b"efgh"]
