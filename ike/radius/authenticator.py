"""RADIUS authenticators: Response Authenticator (RFC 2865 §3), Message-Authenticator
(RFC 3579 §3.2), and the salt-encrypted MS-MPPE keys (RFC 2548 §2.4.2).

Every comparison of a received authenticator is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac

from ike.errors import DecodeError
from ike.radius.packet import MESSAGE_AUTHENTICATOR, Packet

_ZERO16 = bytes(16)


def _md5(*parts: bytes) -> bytes:
    return hashlib.md5(b"".join(parts)).digest()  # noqa: S324 - RFC 2865 prescribes MD5


def _with_zeroed_ma(packet: Packet, authenticator: bytes) -> bytes:
    """The packet's octets with Message-Authenticator zeroed and ``authenticator`` in the
    header: what the HMAC covers (RFC 3579 §3.2)."""
    attrs = [(t, _ZERO16 if t == MESSAGE_AUTHENTICATOR else v) for t, v in packet.attributes]
    return Packet(packet.code, packet.identifier, authenticator, attrs).encode()


def message_authenticator(packet: Packet, secret: bytes, request_authenticator: bytes) -> bytes:
    """HMAC-MD5 over the packet; responses use the request's authenticator in the header."""
    data = _with_zeroed_ma(packet, request_authenticator)
    return hmac.new(secret, data, "md5").digest()


def sign_request(packet: Packet, secret: bytes) -> bytes:
    """Encode an Access-Request, filling its Message-Authenticator (which must be present)."""
    value = message_authenticator(packet, secret, packet.authenticator)
    packet.attributes = [
        (t, value if t == MESSAGE_AUTHENTICATOR else v) for t, v in packet.attributes
    ]
    return packet.encode()


def response_authenticator(packet: Packet, secret: bytes, request_authenticator: bytes) -> bytes:
    """MD5(Code | ID | Length | RequestAuth | Attributes | Secret)."""
    raw = Packet(packet.code, packet.identifier, request_authenticator, packet.attributes).encode()
    return _md5(raw, secret)


def sign_response(packet: Packet, secret: bytes, request_authenticator: bytes) -> bytes:
    """Encode a response as a server would: Message-Authenticator first, then the
    Response Authenticator over the result (for tests and our fake servers)."""
    if packet.get(MESSAGE_AUTHENTICATOR) is not None:
        value = message_authenticator(packet, secret, request_authenticator)
        packet.attributes = [
            (t, value if t == MESSAGE_AUTHENTICATOR else v) for t, v in packet.attributes
        ]
    packet.authenticator = response_authenticator(packet, secret, request_authenticator)
    return packet.encode()


def verify_response(packet: Packet, secret: bytes, request_authenticator: bytes) -> str | None:
    """None when the response is authentic, else why not (a drop-counter name).

    The Message-Authenticator is required in every response: RFC 3579 §3.2 demands it
    with EAP, and requiring it always closes the Blast-RADIUS forgery (CVE-2024-3596)."""
    expected = response_authenticator(packet, secret, request_authenticator)
    if not hmac.compare_digest(expected, packet.authenticator):
        return "bad_response_authenticator"
    values = packet.all(MESSAGE_AUTHENTICATOR)
    if len(values) != 1:
        return "missing_message_authenticator" if not values else "bad_message_authenticator"
    if not hmac.compare_digest(
        message_authenticator(packet, secret, request_authenticator), values[0]
    ):
        return "bad_message_authenticator"
    return None


def verify_request(packet: Packet, secret: bytes) -> bool:
    """A server's check of an Access-Request's Message-Authenticator (tests' fake servers)."""
    values = packet.all(MESSAGE_AUTHENTICATOR)
    if len(values) != 1:
        return False
    expected = message_authenticator(packet, secret, packet.authenticator)
    return hmac.compare_digest(expected, values[0])


# ------------------------------------------------------------------ MS-MPPE keys (RFC 2548)


def encrypt_mppe_key(key: bytes, secret: bytes, request_authenticator: bytes, salt: bytes) -> bytes:
    """Salt | ciphertext of (key length | key | zero padding), as a server sends it."""
    if len(salt) != 2 or not salt[0] & 0x80:
        raise ValueError("MPPE salt must be 2 octets with the high bit set")
    if len(key) > 250:
        raise ValueError("MPPE key too long")
    plain = bytes([len(key)]) + key
    plain += bytes(-len(plain) % 16)
    out = bytearray()
    prev = request_authenticator + salt
    for i in range(0, len(plain), 16):
        b = _md5(secret, prev)
        c = bytes(x ^ y for x, y in zip(plain[i : i + 16], b, strict=True))
        out += c
        prev = c
    return salt + bytes(out)


def decrypt_mppe_key(value: bytes, secret: bytes, request_authenticator: bytes) -> bytes:
    """The key inside an MS-MPPE-Send-Key / MS-MPPE-Recv-Key value; DecodeError when the
    value is malformed or was not encrypted for this request with this secret."""
    if len(value) < 18 or (len(value) - 2) % 16 != 0:
        raise DecodeError("MPPE key attribute has a bad length")
    salt, cipher = value[:2], value[2:]
    if not salt[0] & 0x80:
        raise DecodeError("MPPE key salt lacks its high bit")
    plain = bytearray()
    prev = request_authenticator + salt
    for i in range(0, len(cipher), 16):
        c = cipher[i : i + 16]
        b = _md5(secret, prev)
        plain += bytes(x ^ y for x, y in zip(c, b, strict=True))
        prev = c
    length = plain[0]
    if length == 0 or length > len(plain) - 1:
        raise DecodeError("MPPE key length does not fit its attribute (wrong secret?)")
    # The padding is zeros; anything else means the wrong secret or request.
    if any(plain[1 + length :]):
        raise DecodeError("MPPE key padding is not zero (wrong secret?)")
    return bytes(plain[1 : 1 + length])
