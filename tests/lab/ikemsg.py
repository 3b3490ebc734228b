"""Just enough IKEv2 header and payload walking to label captured datagrams.

This is lab tooling for writing vector files, not the project's codec (ike/ owns that).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EXCHANGES = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL"}
PAYLOAD_KE, PAYLOAD_NONCE, PAYLOAD_SK = 34, 40, 46
NON_ESP_MARKER = b"\x00\x00\x00\x00"


@dataclass(frozen=True)
class IkeHeader:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange: str
    initiator: bool  # the I flag: sent by the original initiator
    response: bool
    message_id: int
    length: int


def header(msg: bytes) -> IkeHeader:
    spi_i, spi_r, nxt, _ver, ex, flags, mid, length = struct.unpack("!8s8sBBBBII", msg[:28])
    return IkeHeader(
        spi_i,
        spi_r,
        nxt,
        EXCHANGES.get(ex, str(ex)),
        bool(flags & 0x08),
        bool(flags & 0x20),
        mid,
        length,
    )


def payloads(msg: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each cleartext payload; an SK payload ends the walk (encrypted)."""
    out: list[tuple[int, bytes]] = []
    nxt, off = msg[16], 28
    while nxt and off + 4 <= len(msg):
        length = struct.unpack("!H", msg[off + 2 : off + 4])[0]
        out.append((nxt, msg[off + 4 : off + length]))
        if nxt == PAYLOAD_SK or length < 4:
            break
        nxt, off = msg[off], off + length
    return out


def first_payload(msg: bytes, ptype: int) -> bytes | None:
    return next((body for t, body in payloads(msg) if t == ptype), None)
