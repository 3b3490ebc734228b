"""Hand-built inner packets and SA parameters for the ESP tests (no scapy needed)."""

from __future__ import annotations

import ipaddress
import os
import struct

from esp.sa import EspParams
from ike.constants import EncrId, IntegId

# name -> (cipher, key bytes incl. salt, integrity, integrity key bytes)
SUITES: dict[str, tuple[EncrId, int, IntegId, int]] = {
    "aes128gcm16": (EncrId.AES_GCM_16, 16 + 4, IntegId.NONE, 0),
    "aes256gcm16": (EncrId.AES_GCM_16, 32 + 4, IntegId.NONE, 0),
    "chacha20poly1305": (EncrId.CHACHA20_POLY1305, 32 + 4, IntegId.NONE, 0),
    "aes128-sha1": (EncrId.AES_CBC, 16, IntegId.HMAC_SHA1_96, 20),
    "aes128-sha256": (EncrId.AES_CBC, 16, IntegId.HMAC_SHA2_256_128, 32),
    "aes256-sha384": (EncrId.AES_CBC, 32, IntegId.HMAC_SHA2_384_192, 48),
    "aes256-sha512": (EncrId.AES_CBC, 32, IntegId.HMAC_SHA2_512_256, 64),
}
AEAD_SUITES = ["aes128gcm16", "aes256gcm16", "chacha20poly1305"]
CBC_SUITES = ["aes128-sha1", "aes128-sha256", "aes256-sha384", "aes256-sha512"]


def make_params(
    suite: str,
    *,
    spi: int = 0x1000,
    esn: bool = False,
    soft_bytes: int | None = None,
    soft_packets: int | None = None,
) -> EspParams:
    encr, klen, integ, ilen = SUITES[suite]
    return EspParams(
        spi, encr, os.urandom(klen), integ, os.urandom(ilen), esn,
        soft_bytes=soft_bytes, soft_packets=soft_packets,
    )  # fmt: skip


def _packed(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def udp(sport: int, dport: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def tcp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)


def icmp(type_: int, code: int, data: bytes = b"") -> bytes:
    return struct.pack("!BBHI", type_, code, 0, 0) + data


def ipv4(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    *,
    frag_offset: int = 0,
    more_fragments: bool = False,
    options: bytes = b"",
    total_len: int | None = None,
) -> bytes:
    ihl = 5 + len(options) // 4
    length = ihl * 4 + len(payload) if total_len is None else total_len
    flags = (0x2000 if more_fragments else 0) | frag_offset
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, length, 0x1234, flags, 64, proto, 0,
        _packed(src), _packed(dst),
    )  # fmt: skip
    return header + options + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes, *, ext: bytes = b"") -> bytes:
    """ext: extension headers already chained (their first byte is the next one's type)."""
    body = ext + payload
    header = struct.pack("!IHBB16s16s", 6 << 28, len(body), nh, 64, _packed(src), _packed(dst))
    return header + body


def ext_opts(next_header: int, units: int = 0) -> bytes:
    """A Hop-by-Hop or Destination Options header of (units + 1) * 8 bytes (PadN filled)."""
    size = (units + 1) * 8
    return bytes((next_header, units, 1, size - 4)) + bytes(size - 4)


def ext_fragment(next_header: int, offset: int, more: bool = False) -> bytes:
    return struct.pack("!BBHI", next_header, 0, offset << 3 | int(more), 0xABCD)


def v4_udp(src: str = "10.1.0.5", dst: str = "10.2.0.7", size: int = 100) -> bytes:
    return ipv4(src, dst, 17, udp(1111, 2222, os.urandom(max(0, size - 28))))


def v6_udp(src: str = "2001:db8:1::5", dst: str = "2001:db8:2::7", size: int = 120) -> bytes:
    return ipv6(src, dst, 17, udp(1111, 2222, os.urandom(max(0, size - 48))))
