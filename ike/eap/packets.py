"""EAP packets (RFC 3748 §4) and the EAP-MSCHAPv2 packets inside them (draft-kamath §2)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ike.errors import DecodeError

REQUEST, RESPONSE, SUCCESS, FAILURE = 1, 2, 3, 4
TYPE_IDENTITY = 1
TYPE_NAK = 3
TYPE_MSCHAPV2 = 26
OP_CHALLENGE, OP_RESPONSE, OP_SUCCESS, OP_FAILURE = 1, 2, 3, 4


@dataclass(frozen=True)
class Eap:
    code: int
    identifier: int
    type: int = 0  # requests and responses only
    data: bytes = b""

    def encode(self) -> bytes:
        if self.code in (SUCCESS, FAILURE):
            return struct.pack("!BBH", self.code, self.identifier, 4)
        length = 5 + len(self.data)
        return struct.pack("!BBHB", self.code, self.identifier, length, self.type) + self.data

    @classmethod
    def decode(cls, raw: bytes) -> Eap:
        if len(raw) < 4:
            raise DecodeError("short EAP packet")
        code, identifier, length = struct.unpack_from("!BBH", raw)
        if length != len(raw):
            raise DecodeError("EAP length mismatch")
        if code in (SUCCESS, FAILURE):
            return cls(code, identifier)
        if code not in (REQUEST, RESPONSE) or len(raw) < 5:
            raise DecodeError(f"bad EAP code {code}")
        return cls(code, identifier, raw[4], raw[5:])


def mschap(op: int, ms_id: int, body: bytes) -> bytes:
    """An MS-CHAPv2 packet; MS-Length counts from the OpCode (the EAP length minus 5)."""
    return struct.pack("!BBH", op, ms_id, 4 + len(body)) + body


def parse_mschap(data: bytes) -> tuple[int, int, bytes]:
    """(OpCode, MS-CHAPv2-ID, body); a bare OpCode (Success/Failure response) has no rest."""
    if len(data) == 1:
        return data[0], 0, b""
    if len(data) < 4:
        raise DecodeError("short MS-CHAPv2 packet")
    op, ms_id, ms_len = struct.unpack_from("!BBH", data)
    if ms_len != len(data):
        raise DecodeError("MS-CHAPv2 length mismatch")
    return op, ms_id, data[4:]
