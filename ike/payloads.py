"""Typed IKEv2 payloads (RFC 7296 §3). Pure data: encoding and decoding live in ike.codec.

Every payload class has a ``ptype`` (its PayloadType). ID and TS payloads carry theirs as a
field because the same body serves the initiator's and the responder's variant.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import ClassVar

from ike.constants import (
    CfgType,
    HeaderFlag,
    PayloadType,
    ProtocolId,
    TransformType,
    TsType,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class TransformAttribute:
    """A transform attribute we do not understand, kept so that it can be judged and re-sent."""

    type: int  # without the format bit
    value: int | bytes  # int: TV format (two octets in the header); bytes: TLV format


@dataclass(frozen=True)
class Transform:
    type: TransformType | int
    id: int
    key_length: int | None = None  # the KEY_LENGTH attribute, in bits, when present
    # Attributes other than KEY_LENGTH, in wire order. RFC 7296 §3.3.6: a transform with
    # one we do not understand is unacceptable, so proposal selection never picks it.
    unknown_attributes: tuple[TransformAttribute, ...] = ()
    # How many unknown attributes precede KEY_LENGTH on the wire: lets encode reproduce
    # the peer's bytes exactly. Not part of the transform's identity.
    key_length_at: int = field(default=0, compare=False, repr=False)


@dataclass
class Proposal:
    num: int
    protocol: ProtocolId | int
    spi: bytes
    transforms: list[Transform]

    def of_type(self, ttype: TransformType) -> list[Transform]:
        return [t for t in self.transforms if t.type == ttype]


@dataclass
class SaPayload:
    proposals: list[Proposal]
    ptype: ClassVar[PayloadType] = PayloadType.SA


@dataclass
class KePayload:
    group: int
    data: bytes
    ptype: ClassVar[PayloadType] = PayloadType.KE


@dataclass
class IdPayload:
    ptype: PayloadType  # IDi or IDr
    id_type: int
    data: bytes

    def body(self) -> bytes:
        """RestOfIDPayload: what prf(SK_p, ...) covers in the AUTH computation (§2.15)."""
        return bytes([self.id_type, 0, 0, 0]) + self.data


@dataclass
class CertPayload:
    encoding: int
    data: bytes
    ptype: ClassVar[PayloadType] = PayloadType.CERT


@dataclass
class CertReqPayload:
    encoding: int
    data: bytes  # for X509_SIGNATURE: concatenated SHA-1 hashes of CA SubjectPublicKeyInfo
    ptype: ClassVar[PayloadType] = PayloadType.CERTREQ


@dataclass
class AuthPayload:
    method: int
    data: bytes
    ptype: ClassVar[PayloadType] = PayloadType.AUTH


@dataclass
class NoncePayload:
    nonce: bytes
    ptype: ClassVar[PayloadType] = PayloadType.NONCE


@dataclass
class NotifyPayload:
    notify_type: int
    data: bytes = b""
    protocol: ProtocolId | int = ProtocolId.NONE
    spi: bytes = b""
    ptype: ClassVar[PayloadType] = PayloadType.NOTIFY


@dataclass
class DeletePayload:
    protocol: ProtocolId | int
    spis: list[bytes] = field(default_factory=list)  # empty for IKE; 4-byte SPIs for ESP/AH
    ptype: ClassVar[PayloadType] = PayloadType.DELETE


@dataclass
class VendorPayload:
    vid: bytes
    ptype: ClassVar[PayloadType] = PayloadType.VENDOR


@dataclass(frozen=True)
class TrafficSelector:
    ts_type: TsType | int
    ip_protocol: int  # 0 = any
    start_port: int
    end_port: int
    start_addr: IPAddress
    end_addr: IPAddress


@dataclass
class TsPayload:
    ptype: PayloadType  # TSi or TSr
    selectors: list[TrafficSelector]


@dataclass(frozen=True)
class CfgAttribute:
    type: int
    value: bytes = b""


@dataclass
class CpPayload:
    cfg_type: CfgType | int
    attributes: list[CfgAttribute]
    ptype: ClassVar[PayloadType] = PayloadType.CP


@dataclass
class EapPayload:
    data: bytes  # the whole EAP message (RFC 3748): code, identifier, length, type, type-data
    ptype: ClassVar[PayloadType] = PayloadType.EAP


@dataclass
class SkPayload:
    """Encrypted and authenticated payload, still sealed: IV | ciphertext | ICV."""

    first_inner: int  # the Next Payload field: type of the first payload inside
    data: bytes
    ptype: ClassVar[PayloadType] = PayloadType.SK


@dataclass
class SkfPayload:
    """One encrypted fragment (RFC 7383), still sealed."""

    first_inner: int  # non-zero only in fragment 1
    fragment_number: int
    total_fragments: int
    data: bytes
    ptype: ClassVar[PayloadType] = PayloadType.SKF


@dataclass
class UnknownPayload:
    """A payload type we do not implement; kept so that its critical bit can be judged."""

    type: int
    critical: bool
    data: bytes

    @property
    def ptype(self) -> int:
        return self.type


Payload = (
    SaPayload
    | KePayload
    | IdPayload
    | CertPayload
    | CertReqPayload
    | AuthPayload
    | NoncePayload
    | NotifyPayload
    | DeletePayload
    | VendorPayload
    | TsPayload
    | CpPayload
    | EapPayload
    | SkPayload
    | SkfPayload
    | UnknownPayload
)


@dataclass
class Message:
    """An IKE message. For protected exchanges ``payloads`` are the plaintext inner payloads."""

    spi_i: bytes
    spi_r: bytes
    exchange: int
    flags: HeaderFlag | int
    message_id: int
    payloads: list[Payload] = field(default_factory=list)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & HeaderFlag.RESPONSE)

    @property
    def is_from_initiator(self) -> bool:
        return bool(self.flags & HeaderFlag.INITIATOR)

    def get(self, cls: type, ptype: PayloadType | None = None):
        """First payload of a class (and, for ID/TS, of a payload type), or None."""
        for p in self.payloads:
            if isinstance(p, cls) and (ptype is None or p.ptype == ptype):
                return p
        return None

    def all(self, cls: type) -> list:
        return [p for p in self.payloads if isinstance(p, cls)]

    def notifies(self) -> list[NotifyPayload]:
        return [p for p in self.payloads if isinstance(p, NotifyPayload)]

    def notify(self, ntype: int) -> NotifyPayload | None:
        for p in self.payloads:
            if isinstance(p, NotifyPayload) and p.notify_type == ntype:
                return p
        return None
