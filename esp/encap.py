"""UDP encapsulation of ESP (RFC 3948): demultiplexing what arrives on port 4500."""

from __future__ import annotations

import struct
from typing import Literal

# Same value as ike.constants.NON_ESP_MARKER; esp/ takes nothing from ike/ but algorithm ids.
NON_ESP_MARKER = b"\x00\x00\x00\x00"
NAT_KEEPALIVE = b"\xff"  # RFC 3948 §2.3
ESP_HEADER_LEN = 8  # SPI and sequence number
_RESERVED_SPI_MAX = 255  # RFC 4303 §2.1: 0 is local-only, 1..255 reserved by IANA

_U32 = struct.Struct("!I")

UdpKind = Literal["ike", "esp", "keepalive", "invalid"]


def is_nat_keepalive(data: bytes | memoryview) -> bool:
    return len(data) == 1 and data[0] == 0xFF


def classify_udp4500(data: bytes | memoryview) -> UdpKind:
    """Which handler a UDP/4500 payload belongs to (RFC 3948 §2.2, §2.3)."""
    n = len(data)
    if n == 1 and data[0] == 0xFF:
        return "keepalive"
    if n < ESP_HEADER_LEN:
        return "invalid"
    spi = _U32.unpack_from(data, 0)[0]
    if spi == 0:  # the Non-ESP Marker: an IKE message follows
        return "ike"
    if spi <= _RESERVED_SPI_MAX:
        return "invalid"
    return "esp"


def spi_of(data: bytes | memoryview, offset: int = 0) -> int:
    """SPI of the ESP packet at offset (0 for UDP payloads; the IP header length on raw)."""
    return _U32.unpack_from(data, offset)[0]
