"""RADIUS packets and attributes (RFC 2865 §3, §5), EAP-Message splitting (RFC 3579 §3.1).

``decode`` is the only way bytes from the network become a Packet; it raises DecodeError
(never anything else) on malformed input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ike.errors import DecodeError

# Codes (RFC 2865 §3)
ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE = 1, 2, 3, 11
RESPONSE_CODES = (ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE)
CODE_NAMES = {1: "Access-Request", 2: "Access-Accept", 3: "Access-Reject", 11: "Access-Challenge"}

# Attribute types
USER_NAME = 1
NAS_IP_ADDRESS = 4
SERVICE_TYPE = 6
FRAMED_MTU = 12
REPLY_MESSAGE = 18
STATE = 24
VENDOR_SPECIFIC = 26
CALLED_STATION_ID = 30
CALLING_STATION_ID = 31
NAS_IDENTIFIER = 32
NAS_PORT_TYPE = 61
EAP_MESSAGE = 79
MESSAGE_AUTHENTICATOR = 80
NAS_IPV6_ADDRESS = 95  # RFC 3162

SERVICE_TYPE_FRAMED = 2
NAS_PORT_TYPE_VIRTUAL = 5

VENDOR_MICROSOFT = 311
MS_MPPE_SEND_KEY = 16
MS_MPPE_RECV_KEY = 17

HEADER_LEN = 20
MAX_PACKET = 4096  # RFC 2865 §3: longer packets are not RADIUS
MAX_VALUE = 253  # an attribute's value: 255 minus type and length


@dataclass
class Packet:
    code: int
    identifier: int
    authenticator: bytes  # Request or Response Authenticator, 16 octets
    attributes: list[tuple[int, bytes]] = field(default_factory=list)

    def get(self, attr_type: int) -> bytes | None:
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def all(self, attr_type: int) -> list[bytes]:
        return [v for t, v in self.attributes if t == attr_type]

    def vendor(self, vendor_id: int, vendor_type: int) -> list[bytes]:
        """Values of one vendor attribute inside Vendor-Specific (RFC 2865 §5.26)."""
        out: list[bytes] = []
        for raw in self.all(VENDOR_SPECIFIC):
            if len(raw) < 4 or int.from_bytes(raw[:4], "big") != vendor_id:
                continue
            pos = 4
            while pos + 2 <= len(raw):
                vt, vl = raw[pos], raw[pos + 1]
                if vl < 2 or pos + vl > len(raw):
                    break  # a broken sub-attribute ends this VSA; the rest is not trusted
                if vt == vendor_type:
                    out.append(raw[pos + 2 : pos + vl])
                pos += vl
        return out

    def encode_attributes(self) -> bytes:
        out = bytearray()
        for t, v in self.attributes:
            if len(v) > MAX_VALUE:
                raise ValueError(f"RADIUS attribute {t} longer than {MAX_VALUE} octets")
            out += bytes([t, len(v) + 2]) + v
        return bytes(out)

    def encode(self) -> bytes:
        attrs = self.encode_attributes()
        length = HEADER_LEN + len(attrs)
        if length > MAX_PACKET:
            raise ValueError(f"RADIUS packet of {length} octets exceeds {MAX_PACKET}")
        if len(self.authenticator) != 16:
            raise ValueError("RADIUS authenticator must be 16 octets")
        return struct.pack("!BBH", self.code, self.identifier, length) + self.authenticator + attrs


def decode(data: bytes) -> Packet:
    """Parse a packet; octets beyond the Length field are padding (RFC 2865 §3)."""
    if len(data) < HEADER_LEN:
        raise DecodeError("short RADIUS packet")
    code, identifier, length = struct.unpack_from("!BBH", data)
    if length < HEADER_LEN or length > MAX_PACKET:
        raise DecodeError(f"RADIUS length {length} out of range")
    if length > len(data):
        raise DecodeError("RADIUS packet shorter than its Length field")
    attributes: list[tuple[int, bytes]] = []
    pos = HEADER_LEN
    while pos < length:
        if pos + 2 > length:
            raise DecodeError("truncated RADIUS attribute header")
        t, alen = data[pos], data[pos + 1]
        if alen < 2 or pos + alen > length:
            raise DecodeError(f"bad length {alen} of RADIUS attribute {t}")
        attributes.append((t, bytes(data[pos + 2 : pos + alen])))
        pos += alen
    return Packet(code, identifier, bytes(data[4:20]), attributes)


def split_eap(eap: bytes) -> list[tuple[int, bytes]]:
    """An EAP packet as EAP-Message attributes of at most 253 octets each (RFC 3579 §3.1)."""
    if not eap:
        return [(EAP_MESSAGE, b"")]
    return [(EAP_MESSAGE, eap[i : i + MAX_VALUE]) for i in range(0, len(eap), MAX_VALUE)]


def join_eap(packet: Packet) -> bytes | None:
    """The EAP packet carried by a RADIUS packet, None without EAP-Message.

    The pieces are concatenated in order; the EAP header's length must cover exactly the
    joined octets, or the packet is malformed."""
    pieces = packet.all(EAP_MESSAGE)
    if not pieces:
        return None
    eap = b"".join(pieces)
    if len(eap) < 4 or int.from_bytes(eap[2:4], "big") != len(eap):
        raise DecodeError("EAP-Message attributes do not join into one EAP packet")
    return eap


def vsa(vendor_id: int, vendor_type: int, value: bytes) -> tuple[int, bytes]:
    """One Vendor-Specific attribute holding one vendor sub-attribute."""
    sub = bytes([vendor_type, len(value) + 2]) + value
    return (VENDOR_SPECIFIC, vendor_id.to_bytes(4, "big") + sub)
