"""IKEv2 wire format (RFC 7296 §3): datagrams <-> the typed payloads of ike.payloads.

Decoders check every length before reading, so malformed input raises DecodeError and
nothing else. Encoders raise ValueError for values the wire format (or our own decoder's
limits) cannot carry, so that decode(encode(m)) == m for every message encode accepts.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ike.constants import (
    IKE_HEADER_LEN,
    IKE_VERSION,
    CfgType,
    ExchangeType,
    HeaderFlag,
    PayloadType,
    ProtocolId,
    TransformAttr,
    TransformType,
    TsType,
    notify_name,
)
from ike.crypto.base import SkCrypto
from ike.errors import DecodeError
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
    Payload,
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

# Limits on what one peer datagram can make us build. Real messages stay far below them.
MAX_PAYLOADS = 64  # per payload chain (the outer message, or the content of SK)
MAX_PROPOSALS = 64  # per SA payload
MAX_TRANSFORMS = 64  # per proposal
MAX_ATTRIBUTES = 16  # per transform (RFC 7296 defines one, KEY_LENGTH)
MAX_TS = 255  # per TS payload (the count field is one octet anyway)
MAX_CP_ATTRIBUTES = 128  # per CP payload
MAX_DELETE_SPIS = 64  # per Delete payload
MIN_NONCE, MAX_NONCE = 16, 256  # RFC 7296 §3.9

CRITICAL = 0x80  # the C bit of the generic payload header
_SPI_SIZES = (0, 4, 8)  # none, ESP/AH, IKE
_PROPOSAL_MORE, _TRANSFORM_MORE = 2, 3  # "last substruc" values when more follow
_AF_TV = 0x8000  # attribute format bit: TV (value in the header) rather than TLV
_KEY_LENGTH = int(TransformAttr.KEY_LENGTH)

_HEADER = struct.Struct("!8s8sBBBBII")
_GENERIC = struct.Struct("!BBH")
_PROPOSAL = struct.Struct("!BBHBBBB")
_TRANSFORM = struct.Struct("!BBHBBH")
_U16X2 = struct.Struct("!HH")  # attribute header, KE group, SKF number/total
_NOTIFY = struct.Struct("!BBH")  # protocol, SPI size, type (Delete: protocol, size, count)
_TS = struct.Struct("!BBHHH")
_B3X = struct.Struct("!B3x")  # one octet then three reserved (ID, AUTH, CP)
_TS_LEN: dict[int, int] = {TsType.TS_IPV4_ADDR_RANGE: 16, TsType.TS_IPV6_ADDR_RANGE: 40}

# Plain dict look-ups: faster than calling the enum and never raise for unknown values.
_PTYPES: dict[int, PayloadType] = {m.value: m for m in PayloadType}
_TTYPES: dict[int, TransformType] = {m.value: m for m in TransformType}
_PROTOCOLS: dict[int, ProtocolId] = {m.value: m for m in ProtocolId}
_EXCHANGES: dict[int, ExchangeType] = {m.value: m for m in ExchangeType}
_CFG_TYPES: dict[int, CfgType] = {m.value: m for m in CfgType}
_FLAGS: list[HeaderFlag] = [HeaderFlag(i) for i in range(256)]


class UnsupportedVersion(DecodeError):
    """The major version is not 2; ``header`` lets the session answer INVALID_MAJOR_VERSION."""

    def __init__(self, header: Header) -> None:
        super().__init__(f"unsupported IKE major version {header.version >> 4}")
        self.header = header


@dataclass
class Header:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    version: int
    exchange: int
    flags: int
    message_id: int
    length: int

    def encode(self) -> bytes:
        if len(self.spi_i) != 8 or len(self.spi_r) != 8:
            raise ValueError("IKE SPIs are 8 octets")
        try:
            return _HEADER.pack(
                self.spi_i,
                self.spi_r,
                self.next_payload,
                self.version,
                self.exchange,
                int(self.flags),
                self.message_id,
                self.length,
            )
        except struct.error as e:
            raise ValueError(f"header field out of range: {e}") from e


def decode_header(data: bytes) -> Header:
    """The fixed IKE header; the length field must equal len(data)."""
    if len(data) < IKE_HEADER_LEN:
        raise DecodeError("datagram shorter than the IKE header")
    spi_i, spi_r, nxt, version, exchange, flags, mid, length = _HEADER.unpack_from(data, 0)
    hdr = Header(spi_i, spi_r, nxt, version, exchange, flags, mid, length)
    if version >> 4 != 2:
        raise UnsupportedVersion(hdr)
    if length != len(data):
        raise DecodeError(f"IKE length field {length} but datagram has {len(data)} octets")
    return hdr


# ---------------------------------------------------------------------------------------
# Decoding. Each body decoder gets (payload type, buffer, start, end) of the payload body.

_BodyDecoder = Callable[[int, bytes, int, int], Payload]


def _need(buf_end: int, pos: int, n: int, what: str) -> None:
    if buf_end - pos < n:
        raise DecodeError(f"{what} truncated")


def _dec_transform(buf: bytes, pos: int, end: int, ttype: int, tid: int) -> Transform:
    """One transform whose attributes lie in buf[pos:end]: KEY_LENGTH, and the others kept
    in wire order (with KEY_LENGTH's place among them) so that encode gives the same bytes.
    """
    key_length: int | None = None
    key_length_at = 0
    unknown: list[TransformAttribute] = []
    count = 0
    while pos < end:
        count += 1
        if count > MAX_ATTRIBUTES:
            raise DecodeError("too many transform attributes")
        _need(end, pos, 4, "transform attribute")
        atype, value = _U16X2.unpack_from(buf, pos)
        pos += 4
        if atype & _AF_TV:
            atype &= 0x7FFF
            if atype == _KEY_LENGTH:
                if key_length is not None:
                    raise DecodeError("duplicate KEY_LENGTH attribute")
                key_length, key_length_at = value, len(unknown)
            else:
                unknown.append(TransformAttribute(atype, value))
        else:
            if atype == _KEY_LENGTH:
                raise DecodeError("KEY_LENGTH attribute must use the TV format")
            _need(end, pos, value, "transform attribute value")
            unknown.append(TransformAttribute(atype, buf[pos : pos + value]))
            pos += value
    ttype = _TTYPES.get(ttype, ttype)
    if unknown:
        return Transform(ttype, tid, key_length, tuple(unknown), key_length_at)
    return Transform(ttype, tid, key_length)


def _dec_transforms(buf: bytes, pos: int, end: int, count: int) -> list[Transform]:
    out: list[Transform] = []
    last = count - 1
    for i in range(count):
        _need(end, pos, 8, "transform")
        more, _, tlen, ttype, _, tid = _TRANSFORM.unpack_from(buf, pos)
        if tlen < 8 or tlen > end - pos:
            raise DecodeError(f"bad transform length {tlen}")
        if more != (_TRANSFORM_MORE if i < last else 0):
            raise DecodeError("transform count and last-transform marker disagree")
        out.append(_dec_transform(buf, pos + 8, pos + tlen, ttype, tid))
        pos += tlen
    if pos != end:
        raise DecodeError("proposal length does not match its transforms")
    return out


def _dec_sa(_: int, buf: bytes, pos: int, end: int) -> SaPayload:
    if pos == end:
        raise DecodeError("SA payload without proposals")
    proposals: list[Proposal] = []
    while True:
        if len(proposals) == MAX_PROPOSALS:
            raise DecodeError("too many proposals")
        _need(end, pos, 8, "proposal")
        more, _, plen, num, proto, spi_size, ntrans = _PROPOSAL.unpack_from(buf, pos)
        if spi_size not in _SPI_SIZES:
            raise DecodeError(f"bad proposal SPI size {spi_size}")
        if plen < 8 + spi_size or plen > end - pos:
            raise DecodeError(f"bad proposal length {plen}")
        if ntrans > MAX_TRANSFORMS:
            raise DecodeError("too many transforms")
        spi_end = pos + 8 + spi_size
        transforms = _dec_transforms(buf, spi_end, pos + plen, ntrans)
        proposals.append(
            Proposal(num, _PROTOCOLS.get(proto, proto), buf[pos + 8 : spi_end], transforms)
        )
        pos += plen
        if more == 0:
            break
        if more != _PROPOSAL_MORE:
            raise DecodeError(f"bad last-proposal marker {more}")
    if pos != end:
        raise DecodeError("data after the last proposal")
    return SaPayload(proposals)


def _dec_ke(_: int, buf: bytes, pos: int, end: int) -> KePayload:
    _need(end, pos, 4, "KE payload")
    group, _reserved = _U16X2.unpack_from(buf, pos)
    return KePayload(group, buf[pos + 4 : end])


def _dec_id(ptype: int, buf: bytes, pos: int, end: int) -> IdPayload:
    _need(end, pos, 4, "ID payload")
    (id_type,) = _B3X.unpack_from(buf, pos)
    return IdPayload(_PTYPES[ptype], id_type, buf[pos + 4 : end])


def _dec_cert(_: int, buf: bytes, pos: int, end: int) -> CertPayload:
    _need(end, pos, 1, "CERT payload")
    return CertPayload(buf[pos], buf[pos + 1 : end])


def _dec_certreq(_: int, buf: bytes, pos: int, end: int) -> CertReqPayload:
    _need(end, pos, 1, "CERTREQ payload")
    return CertReqPayload(buf[pos], buf[pos + 1 : end])


def _dec_auth(_: int, buf: bytes, pos: int, end: int) -> AuthPayload:
    _need(end, pos, 4, "AUTH payload")
    (method,) = _B3X.unpack_from(buf, pos)
    return AuthPayload(method, buf[pos + 4 : end])


def _dec_nonce(_: int, buf: bytes, pos: int, end: int) -> NoncePayload:
    if not MIN_NONCE <= end - pos <= MAX_NONCE:
        raise DecodeError(f"nonce of {end - pos} octets")
    return NoncePayload(buf[pos:end])


def _dec_notify(_: int, buf: bytes, pos: int, end: int) -> NotifyPayload:
    _need(end, pos, 4, "Notify payload")
    proto, spi_size, ntype = _NOTIFY.unpack_from(buf, pos)
    if spi_size not in _SPI_SIZES:
        raise DecodeError(f"bad notify SPI size {spi_size}")
    spi_end = pos + 4 + spi_size
    if spi_end > end:
        raise DecodeError("notify SPI truncated")
    spi = buf[pos + 4 : spi_end]
    return NotifyPayload(ntype, buf[spi_end:end], _PROTOCOLS.get(proto, proto), spi)


def _dec_delete(_: int, buf: bytes, pos: int, end: int) -> DeletePayload:
    _need(end, pos, 4, "Delete payload")
    proto, spi_size, count = _NOTIFY.unpack_from(buf, pos)
    pos += 4
    # RFC 7296 §3.11: SPI size 0 (and no SPIs) for IKE, 4 for AH/ESP.
    if proto == ProtocolId.IKE:
        if spi_size != 0 or count != 0 or pos != end:
            raise DecodeError("IKE Delete payload carries SPIs")
        return DeletePayload(ProtocolId.IKE)
    if proto not in (ProtocolId.AH, ProtocolId.ESP) or spi_size != 4:
        raise DecodeError(f"bad Delete protocol {proto} / SPI size {spi_size}")
    if count > MAX_DELETE_SPIS:
        raise DecodeError("too many SPIs in Delete payload")
    if end - pos != 4 * count:
        raise DecodeError("Delete payload length does not match its SPI count")
    return DeletePayload(_PROTOCOLS[proto], [buf[i : i + 4] for i in range(pos, end, 4)])


def _dec_vendor(_: int, buf: bytes, pos: int, end: int) -> VendorPayload:
    return VendorPayload(buf[pos:end])


def _dec_ts(ptype: int, buf: bytes, pos: int, end: int) -> TsPayload:
    _need(end, pos, 4, "TS payload")
    count = buf[pos]
    if count == 0:
        raise DecodeError("TS payload without selectors")
    pos += 4
    selectors: list[TrafficSelector] = []
    for _ in range(count):
        _need(end, pos, 8, "traffic selector")
        ts_type, proto, slen, sport, eport = _TS.unpack_from(buf, pos)
        if slen != _TS_LEN.get(ts_type) or slen > end - pos:
            raise DecodeError(f"bad traffic selector type {ts_type} / length {slen}")
        if ts_type == TsType.TS_IPV4_ADDR_RANGE:
            start: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                buf[pos + 8 : pos + 12]
            )
            stop: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                buf[pos + 12 : pos + 16]
            )
            tst = TsType.TS_IPV4_ADDR_RANGE
        else:
            start = ipaddress.IPv6Address(buf[pos + 8 : pos + 24])
            stop = ipaddress.IPv6Address(buf[pos + 24 : pos + 40])
            tst = TsType.TS_IPV6_ADDR_RANGE
        selectors.append(TrafficSelector(tst, proto, sport, eport, start, stop))
        pos += slen
    if pos != end:
        raise DecodeError("TS payload length does not match its selectors")
    return TsPayload(_PTYPES[ptype], selectors)


def _dec_cp(_: int, buf: bytes, pos: int, end: int) -> CpPayload:
    _need(end, pos, 4, "CP payload")
    (cfg_type,) = _B3X.unpack_from(buf, pos)
    cfg_type = _CFG_TYPES.get(cfg_type, cfg_type)
    pos += 4
    attributes: list[CfgAttribute] = []
    while pos < end:
        if len(attributes) == MAX_CP_ATTRIBUTES:
            raise DecodeError("too many configuration attributes")
        _need(end, pos, 4, "configuration attribute")
        atype, alen = _U16X2.unpack_from(buf, pos)
        _need(end, pos + 4, alen, "configuration attribute value")
        attributes.append(CfgAttribute(atype & 0x7FFF, buf[pos + 4 : pos + 4 + alen]))
        pos += 4 + alen
    return CpPayload(cfg_type, attributes)


def _dec_eap(_: int, buf: bytes, pos: int, end: int) -> EapPayload:
    # RFC 3748 §4: code, identifier, length (of the whole EAP message), data.
    _need(end, pos, 4, "EAP message")
    if _U16X2.unpack_from(buf, pos)[1] != end - pos:
        raise DecodeError("EAP length does not match the EAP payload")
    return EapPayload(buf[pos:end])


_BODY_DECODERS: dict[int, _BodyDecoder] = {
    PayloadType.SA: _dec_sa,
    PayloadType.KE: _dec_ke,
    PayloadType.IDi: _dec_id,
    PayloadType.IDr: _dec_id,
    PayloadType.CERT: _dec_cert,
    PayloadType.CERTREQ: _dec_certreq,
    PayloadType.AUTH: _dec_auth,
    PayloadType.NONCE: _dec_nonce,
    PayloadType.NOTIFY: _dec_notify,
    PayloadType.DELETE: _dec_delete,
    PayloadType.VENDOR: _dec_vendor,
    PayloadType.TSi: _dec_ts,
    PayloadType.TSr: _dec_ts,
    PayloadType.CP: _dec_cp,
    PayloadType.EAP: _dec_eap,
}


def _dec_sealed(ptype: int, first_inner: int, buf: bytes, pos: int, end: int) -> Payload:
    if ptype == PayloadType.SK:
        return SkPayload(first_inner, buf[pos:end])
    _need(end, pos, 4, "SKF payload")
    number, total = _U16X2.unpack_from(buf, pos)
    if not 1 <= number <= total:
        raise DecodeError(f"bad fragment {number}/{total}")
    return SkfPayload(first_inner, number, total, buf[pos + 4 : end])


def _decode_chain(first: int, buf: bytes, pos: int, sealed_ok: bool) -> list[Payload]:
    """Payloads from pos to the end of buf. SK/SKF, when allowed, must be the last one."""
    end = len(buf)
    payloads: list[Payload] = []
    ptype = first
    while ptype != PayloadType.NONE:
        if len(payloads) == MAX_PAYLOADS:
            raise DecodeError("too many payloads")
        _need(end, pos, 4, "payload header")
        nxt, flags, plen = _GENERIC.unpack_from(buf, pos)
        if plen < 4 or plen > end - pos:
            raise DecodeError(f"bad length {plen} for payload type {ptype}")
        body, pos = pos + 4, pos + plen
        if ptype == PayloadType.SK or ptype == PayloadType.SKF:
            if not sealed_ok:
                raise DecodeError("encrypted payload where none may be")
            if pos != end:
                raise DecodeError("encrypted payload is not the last payload")
            # Its Next Payload field names the first inner payload, not a successor.
            payloads.append(_dec_sealed(ptype, nxt, buf, body, pos))
            return payloads
        decoder = _BODY_DECODERS.get(ptype)
        if decoder is None:
            payloads.append(UnknownPayload(ptype, bool(flags & CRITICAL), buf[body:pos]))
        else:
            payloads.append(decoder(ptype, buf, body, pos))
        ptype = nxt
    if pos != end:
        raise DecodeError("data after the last payload")
    return payloads


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if type(data) is bytes else bytes(data)


def decode(data: bytes) -> Message:
    """A whole datagram. SK/SKF stay sealed (see open_protected and ike.fragments)."""
    buf = _as_bytes(data)
    hdr = decode_header(buf)
    payloads = _decode_chain(hdr.next_payload, buf, IKE_HEADER_LEN, True)
    return _message(hdr, payloads)


def decode_payloads(first_type: int, data: bytes) -> list[Payload]:
    """A payload chain without header, e.g. the decrypted content of SK."""
    return _decode_chain(first_type, _as_bytes(data), 0, False)


def _message(hdr: Header, payloads: list[Payload]) -> Message:
    return Message(
        hdr.spi_i,
        hdr.spi_r,
        _EXCHANGES.get(hdr.exchange, hdr.exchange),
        _FLAGS[hdr.flags],
        hdr.message_id,
        payloads,
    )


def unsupported_critical(payloads: Sequence[Payload]) -> int | None:
    """Type of the first unknown payload with the critical bit (RFC 7296 §2.5), else None."""
    for p in payloads:
        if isinstance(p, UnknownPayload) and p.critical:
            return p.type
    return None


# ---------------------------------------------------------------------------------------
# Encoding. Each body encoder returns the payload body (without generic header).


def _check_spi(spi: bytes, what: str) -> None:
    if len(spi) not in _SPI_SIZES:
        raise ValueError(f"{what} SPI of {len(spi)} octets")


def _enc_attributes(t: Transform) -> bytes:
    """The attributes of a transform with unknown ones, in the order they were decoded."""
    if len(t.unknown_attributes) + (t.key_length is not None) > MAX_ATTRIBUTES:
        raise ValueError("too many transform attributes")
    attrs: list[bytes] = []  # one entry per attribute
    for a in t.unknown_attributes:
        if not 0 <= a.type <= 0x7FFF or a.type == _KEY_LENGTH:
            raise ValueError(f"transform attribute type {a.type}")
        if isinstance(a.value, int):
            attrs.append(_U16X2.pack(_AF_TV | a.type, a.value))
        else:
            attrs.append(_U16X2.pack(a.type, len(a.value)) + a.value)
    if t.key_length is not None:
        attrs.insert(t.key_length_at, _U16X2.pack(_AF_TV | _KEY_LENGTH, t.key_length))
    return b"".join(attrs)


def _enc_sa(p: SaPayload) -> bytes:
    if not 1 <= len(p.proposals) <= MAX_PROPOSALS:
        raise ValueError(f"SA payload with {len(p.proposals)} proposals")
    parts: list[bytes] = []
    last_prop = len(p.proposals) - 1
    for i, prop in enumerate(p.proposals):
        _check_spi(prop.spi, "proposal")
        ntrans = len(prop.transforms)
        if ntrans > MAX_TRANSFORMS:
            raise ValueError(f"proposal with {ntrans} transforms")
        xforms: list[bytes] = []
        for j, t in enumerate(prop.transforms):
            more = _TRANSFORM_MORE if j < ntrans - 1 else 0
            if t.unknown_attributes:
                attrs = _enc_attributes(t)
                xforms += (_TRANSFORM.pack(more, 0, 8 + len(attrs), t.type, 0, t.id), attrs)
            elif t.key_length is None:
                xforms.append(_TRANSFORM.pack(more, 0, 8, t.type, 0, t.id))
            else:
                xforms.append(_TRANSFORM.pack(more, 0, 12, t.type, 0, t.id))
                xforms.append(_U16X2.pack(_AF_TV | _KEY_LENGTH, t.key_length))
        body = b"".join(xforms)
        plen = 8 + len(prop.spi) + len(body)
        more = _PROPOSAL_MORE if i < last_prop else 0
        spi_size = len(prop.spi)
        parts += (
            _PROPOSAL.pack(more, 0, plen, prop.num, prop.protocol, spi_size, ntrans),
            prop.spi,
            body,
        )
    return b"".join(parts)


def _enc_ke(p: KePayload) -> bytes:
    return _U16X2.pack(p.group, 0) + p.data


def _enc_id(p: IdPayload) -> bytes:
    if p.ptype not in (PayloadType.IDi, PayloadType.IDr):
        raise ValueError(f"IdPayload with payload type {p.ptype}")
    return _B3X.pack(p.id_type) + p.data


def _enc_cert(p: CertPayload | CertReqPayload) -> bytes:
    return bytes((p.encoding,)) + p.data


def _enc_auth(p: AuthPayload) -> bytes:
    return _B3X.pack(p.method) + p.data


def _enc_nonce(p: NoncePayload) -> bytes:
    if not MIN_NONCE <= len(p.nonce) <= MAX_NONCE:
        raise ValueError(f"nonce of {len(p.nonce)} octets")
    return p.nonce


def _enc_notify(p: NotifyPayload) -> bytes:
    _check_spi(p.spi, "notify")
    return _NOTIFY.pack(p.protocol, len(p.spi), p.notify_type) + p.spi + p.data


def _enc_delete(p: DeletePayload) -> bytes:
    if p.protocol == ProtocolId.IKE:
        if p.spis:
            raise ValueError("an IKE Delete payload carries no SPIs")
        return _NOTIFY.pack(ProtocolId.IKE, 0, 0)
    if p.protocol not in (ProtocolId.AH, ProtocolId.ESP):
        raise ValueError(f"Delete payload for protocol {p.protocol}")
    if len(p.spis) > MAX_DELETE_SPIS or any(len(s) != 4 for s in p.spis):
        raise ValueError("Delete payload needs at most MAX_DELETE_SPIS 4-octet SPIs")
    return _NOTIFY.pack(p.protocol, 4, len(p.spis)) + b"".join(p.spis)


def _enc_vendor(p: VendorPayload) -> bytes:
    return p.vid


def _enc_ts(p: TsPayload) -> bytes:
    if p.ptype not in (PayloadType.TSi, PayloadType.TSr):
        raise ValueError(f"TsPayload with payload type {p.ptype}")
    if not 1 <= len(p.selectors) <= MAX_TS:
        raise ValueError(f"TS payload with {len(p.selectors)} selectors")
    parts = [_B3X.pack(len(p.selectors))]
    for ts in p.selectors:
        slen = _TS_LEN.get(ts.ts_type)
        version = 4 if slen == 16 else 6
        if slen is None or ts.start_addr.version != version or ts.end_addr.version != version:
            raise ValueError(f"traffic selector type {ts.ts_type} with {ts.start_addr}")
        parts += (
            _TS.pack(ts.ts_type, ts.ip_protocol, slen, ts.start_port, ts.end_port),
            ts.start_addr.packed,
            ts.end_addr.packed,
        )
    return b"".join(parts)


def _enc_cp(p: CpPayload) -> bytes:
    if len(p.attributes) > MAX_CP_ATTRIBUTES:
        raise ValueError(f"CP payload with {len(p.attributes)} attributes")
    parts = [_B3X.pack(p.cfg_type)]
    for a in p.attributes:
        if not 0 <= a.type <= 0x7FFF:
            raise ValueError(f"configuration attribute type {a.type}")
        parts += (_U16X2.pack(a.type, len(a.value)), a.value)
    return b"".join(parts)


def _enc_eap(p: EapPayload) -> bytes:
    if len(p.data) < 4 or _U16X2.unpack_from(p.data, 0)[1] != len(p.data):
        raise ValueError("EapPayload.data is not one whole EAP message")
    return p.data


def _enc_sk(p: SkPayload) -> bytes:
    return p.data


def _enc_skf(p: SkfPayload) -> bytes:
    if not 1 <= p.fragment_number <= p.total_fragments:
        raise ValueError(f"fragment {p.fragment_number}/{p.total_fragments}")
    return _U16X2.pack(p.fragment_number, p.total_fragments) + p.data


def _enc_unknown(p: UnknownPayload) -> bytes:
    return p.data


_BODY_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    SaPayload: _enc_sa,
    KePayload: _enc_ke,
    IdPayload: _enc_id,
    CertPayload: _enc_cert,
    CertReqPayload: _enc_cert,
    AuthPayload: _enc_auth,
    NoncePayload: _enc_nonce,
    NotifyPayload: _enc_notify,
    DeletePayload: _enc_delete,
    VendorPayload: _enc_vendor,
    TsPayload: _enc_ts,
    CpPayload: _enc_cp,
    EapPayload: _enc_eap,
    SkPayload: _enc_sk,
    SkfPayload: _enc_skf,
    UnknownPayload: _enc_unknown,
}
_SEALED = (SkPayload, SkfPayload)
# Types the decoder turns into typed payloads: an UnknownPayload of one could not round-trip.
_KNOWN_TYPES = frozenset(_BODY_DECODERS) | {PayloadType.SK, PayloadType.SKF, PayloadType.NONE}


def _encode_chain(payloads: Sequence[Payload], sealed_ok: bool) -> tuple[int, bytes]:
    if len(payloads) > MAX_PAYLOADS:
        raise ValueError(f"{len(payloads)} payloads in one chain")
    parts: list[bytes] = []
    last = len(payloads) - 1
    try:
        for i, p in enumerate(payloads):
            encoder = _BODY_ENCODERS.get(type(p))
            if encoder is None:
                raise ValueError(f"not a payload: {p!r}")
            body = encoder(p)
            flags = 0
            if isinstance(p, _SEALED):
                if not sealed_ok or i != last:
                    raise ValueError("SK/SKF must be the last payload of an outer message")
                nxt = p.first_inner
            else:
                nxt = payloads[i + 1].ptype if i < last else PayloadType.NONE
                if isinstance(p, UnknownPayload):
                    if p.type in _KNOWN_TYPES or not 0 < p.type < 256:
                        raise ValueError(f"UnknownPayload with type {p.type}")
                    flags = CRITICAL if p.critical else 0
            if len(body) > 0xFFFF - 4:
                raise ValueError(f"payload {p.ptype} too long")
            parts += (_GENERIC.pack(nxt, flags, 4 + len(body)), body)
    except struct.error as e:  # an int field of a payload out of its wire range
        raise ValueError(f"payload field out of range: {e}") from e
    first = payloads[0].ptype if payloads else PayloadType.NONE
    return int(first), b"".join(parts)


def encode_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """(type of the first payload, chained payload bytes), e.g. the plaintext of SK."""
    return _encode_chain(payloads, False)


def _header_for(msg: Message, next_payload: int, length: int) -> bytes:
    return Header(
        msg.spi_i,
        msg.spi_r,
        next_payload,
        IKE_VERSION,
        msg.exchange,
        msg.flags,
        msg.message_id,
        length,
    ).encode()


def encode(msg: Message) -> bytes:
    """An unprotected message (or one whose SK/SKF payload is already sealed)."""
    first, body = _encode_chain(msg.payloads, True)
    return _header_for(msg, first, IKE_HEADER_LEN + len(body)) + body


def encode_protected(msg: Message, crypto: SkCrypto) -> bytes:
    """Header and one SK payload sealing msg.payloads (RFC 7296 §3.14)."""
    first_inner, inner = encode_payloads(msg.payloads)
    sealed_len = crypto.sealed_len(len(inner))
    if sealed_len > 0xFFFF - 4:
        raise ValueError("message too large for one SK payload; fragment it")
    total = IKE_HEADER_LEN + 4 + sealed_len
    # The ICV covers the header with its final length, so everything is fixed before seal().
    aad = _header_for(msg, PayloadType.SK, total) + _GENERIC.pack(first_inner, 0, 4 + sealed_len)
    sealed = crypto.seal(aad, inner)
    if len(sealed) != sealed_len:
        raise RuntimeError("SkCrypto.seal() disagrees with its sealed_len()")
    return aad + sealed


def sealed_parts(data: bytes, payload: SkPayload | SkfPayload) -> tuple[bytes, bytes]:
    """(aad, IV|ciphertext|ICV) of a decoded datagram whose last payload is ``payload``.

    The sealed payload ends the datagram, so every octet before its data is the aad.
    """
    split = len(data) - len(payload.data)
    return data[:split], payload.data


def open_protected(data: bytes, crypto: SkCrypto) -> Message:
    """Verify and decrypt an SK message; payloads are the inner ones.

    Payloads before SK (unusual, but covered by the ICV) are kept ahead of the inner
    ones. Raises DecodeError for bad syntax and ike.errors.CryptoError from crypto.open.
    """
    buf = _as_bytes(data)
    hdr = decode_header(buf)
    outer = _decode_chain(hdr.next_payload, buf, IKE_HEADER_LEN, True)
    sk = outer[-1] if outer else None
    if not isinstance(sk, SkPayload):
        raise DecodeError("no SK payload in a protected message")
    if len(sk.data) < crypto.iv_len + crypto.icv_len:
        raise DecodeError("SK payload shorter than IV and ICV")
    aad, body = sealed_parts(buf, sk)
    plaintext = crypto.open(aad, body)
    inner = decode_payloads(sk.first_inner, plaintext)
    return _message(hdr, outer[:-1] + inner)


# ---------------------------------------------------------------------------------------
# Logging

_NOTIFY_SHORT = {
    # Abbreviations familiar from IKE daemons' logs; other notifies use their full name.
    16384: "INIT_CONTACT",
    16388: "NATD_S_IP",
    16389: "NATD_D_IP",
    16430: "FRAG_SUP",
    16431: "HASH_ALG",
    16404: "MULT_AUTH",
    16396: "MOBIKE_SUP",
    16394: "ESP_TFC_PAD_N",
    16418: "CHDLESS_SUP",
    16406: "REDIR_SUP",
    16438: "IKE_INT_SUP",
    14: "NO_PROP",
    24: "AUTH_FAILED",
}
_CP_NAMES: dict[int, str] = {
    CfgType.CFG_REQUEST: "CPRQ",
    CfgType.CFG_REPLY: "CPRP",
    CfgType.CFG_SET: "CPS",
    CfgType.CFG_ACK: "CPA",
}
_SIMPLE_NAMES = {
    SaPayload: "SA",
    KePayload: "KE",
    CertPayload: "CERT",
    CertReqPayload: "CERTREQ",
    AuthPayload: "AUTH",
    NoncePayload: "No",
    VendorPayload: "V",
    EapPayload: "EAP",
}


def _short(p: Payload) -> str:
    if isinstance(p, NotifyPayload):
        return f"N({_NOTIFY_SHORT.get(p.notify_type) or notify_name(p.notify_type)})"
    if isinstance(p, IdPayload | TsPayload):
        known = _PTYPES.get(p.ptype)
        return known.name if known is not None else f"U({p.ptype})"
    if isinstance(p, DeletePayload):
        return "D" if p.protocol == ProtocolId.IKE else f"D({len(p.spis)})"
    if isinstance(p, CpPayload):
        return _CP_NAMES.get(p.cfg_type, f"CP({p.cfg_type})")
    if isinstance(p, SkPayload):
        return "SK"
    if isinstance(p, SkfPayload):
        return f"EF({p.fragment_number}/{p.total_fragments})"
    if isinstance(p, UnknownPayload):
        return f"U({p.type}{'!' if p.critical else ''})"
    return _SIMPLE_NAMES.get(type(p), type(p).__name__)


def describe(msg: Message) -> str:
    """One log line, e.g. 'IKE_AUTH request 1 [ IDi N(INIT_CONTACT) AUTH SA TSi TSr ]'."""
    exchange = _EXCHANGES.get(msg.exchange)
    name = exchange.name if exchange is not None else f"EXCHANGE_{msg.exchange}"
    kind = "response" if msg.is_response else "request"
    items = "".join(f"{_short(p)} " for p in msg.payloads)
    return f"{name} {kind} {msg.message_id} [ {items}]"
