"""TCP segmentation in software, for a TUN device opened with IFF_VNET_HDR + TUNSETOFFLOAD.

With TUN_F_TSO4/TSO6 the kernel hands the TUN reader (esp.datapath's out-loop) one TCP
"super-packet" of up to 64 KB plus a ``struct virtio_net_hdr``; the reader cuts it into
the segments the kernel would have sent (``segment``), and with TUN_F_CSUM it completes
partial checksums of packets that are not segmented (``complete_csum``). The way back
into the TUN, coalescing, is esp.coalesce. Checksum arithmetic: esp.csum (the payload
sums of all segments in one call).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from esp.csum import checksum, sum16, sums_array, sums_of_equal_parts

__all__ = [
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "NEEDS_CSUM",
    "TUNSETOFFLOAD",
    "TUN_F_CSUM",
    "TUN_F_TSO4",
    "TUN_F_TSO6",
    "VNET_HDR",
    "VNET_HDR_LEN",
    "ZERO_VNET_HDR",
    "SegmentError",
    "Segments",
    "complete_csum",
    "segment",
    "segment_headers",
]

# <linux/if_tun.h>, <linux/virtio_net.h>
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
NEEDS_CSUM = 0x01  # virtio_net_hdr.flags
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6 = 0, 1, 3, 4
GSO_ECN = 0x80
# flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (native order: TUN's
# legacy virtio header is in the host's byte order unless TUNSETVNETLE/BE says else)
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size  # 10
ZERO_VNET_HDR = bytes(VNET_HDR_LEN)

_FIN, _PSH, _CWR = 0x01, 0x08, 0x80
_IPPROTO_TCP = 6
_V4_HDR = struct.Struct("!BBHHHBBH4s4s")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_BE16 = np.dtype(">u2")
_VECTOR_MIN = 8  # from this many segments numpy's fixed cost per call pays off


class SegmentError(ValueError):
    """The super-packet does not parse as what its virtio header says."""


def complete_csum(packet: bytearray, csum_start: int, csum_offset: int) -> None:
    """NEEDS_CSUM: the field at csum_start + csum_offset holds the pseudo-header sum;
    fold the sum from csum_start to the end into it (in place)."""
    at = csum_start + csum_offset
    if csum_start >= len(packet) or at + 2 > len(packet):
        raise SegmentError("checksum offsets outside the packet")
    value = checksum(sum16(memoryview(packet)[csum_start:]))
    _U16.pack_into(packet, at, value)


class Segments:
    """A TCP super-packet cut into segments without copying payload: segment i is
    ``headers[i]`` (its IP and TCP headers, lengths and checksums final) followed by
    ``payload[i * size : (i + 1) * size]`` (the last may be shorter)."""

    __slots__ = ("headers", "payload", "size")

    def __init__(self, headers: list[bytes], payload: memoryview, size: int) -> None:
        self.headers = headers
        self.payload = payload
        self.size = size

    def packets(self) -> list[bytes]:
        """Each segment as one IP packet."""
        size, payload, join = self.size, self.payload, b"".join
        return [join((h, payload[i * size : (i + 1) * size])) for i, h in enumerate(self.headers)]


def segment(packet: bytes | memoryview, gso_type: int, gso_size: int) -> list[bytes]:
    """The segments of a TCP super-packet as IP packets (see segment_headers)."""
    return segment_headers(packet, gso_type, gso_size).packets()


def segment_headers(packet: bytes | memoryview, gso_type: int, gso_size: int) -> Segments:
    """The segments of a TCP super-packet of gso_size-byte payloads, each a complete
    IPv4/IPv6 packet with correct lengths, IPv4 id and header checksum, TCP sequence
    number, flags (FIN/PSH on the last only, CWR on the first only) and TCP checksum.
    Only the headers are built; the payload stays where it is (esp.sa seals the pieces)."""
    kind = gso_type & ~GSO_ECN
    n = len(packet)
    if gso_size <= 0:
        raise SegmentError("gso_size must be positive")
    if kind == GSO_TCPV4:
        if n < 20 or packet[0] >> 4 != 4:
            raise SegmentError("not an IPv4 packet")
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or packet[9] != _IPPROTO_TCP:
            raise SegmentError("not IPv4 + TCP")
        ip_hdr_len = ihl
        src, dst = packet[12:16], packet[16:20]
    elif kind == GSO_TCPV6:
        if n < 40 or packet[0] >> 4 != 6 or packet[6] != _IPPROTO_TCP:
            raise SegmentError("not IPv6 + TCP (extension headers are not handled)")
        ip_hdr_len = 40
        src, dst = packet[8:24], packet[24:40]
    else:
        raise SegmentError(f"gso_type {gso_type} is not TCP")
    if n < ip_hdr_len + 20:
        raise SegmentError("truncated TCP header")
    tcp_hdr_len = (packet[ip_hdr_len + 12] >> 4) * 4
    hdr_end = ip_hdr_len + tcp_hdr_len
    if tcp_hdr_len < 20 or n < hdr_end:
        raise SegmentError("bad TCP header length")

    # One buffer holds both headers; each segment's fields are packed into it in place.
    hdr = bytearray(packet[:hdr_end])
    t = ip_hdr_len  # where the TCP header starts
    seq0 = _U32.unpack_from(hdr, t + 4)[0]
    flags0 = hdr[t + 13]
    v4 = kind == GSO_TCPV4
    ip_id0 = _U16.unpack_from(hdr, 4)[0] if v4 else 0
    # Checksums add per segment only what changes: the headers are summed once with those
    # fields zeroed (sequence number, flags, lengths, IPv4 id), then each segment adds its
    # values as 16-bit words (the sum is taken modulo 0xFFFF, esp.csum).
    hdr[t + 4 : t + 8] = b"\0\0\0\0"
    hdr[t + 13] = 0
    hdr[t + 16 : t + 18] = b"\0\0"
    tcp_base = sum16(hdr[t:]) + sum16(src) + sum16(dst) + _IPPROTO_TCP
    if v4:
        hdr[2:6] = b"\0\0\0\0"
        hdr[10:12] = b"\0\0"
        ip_base = sum16(hdr[:t])
    else:
        ip_base = 0
    data = memoryview(packet)[hdr_end:]
    total = len(data)
    count = max(1, -(-total // gso_size))
    shape = _Shape(hdr, t, v4, seq0, flags0, ip_id0, tcp_base % 0xFFFF, ip_base % 0xFFFF)
    if count >= _VECTOR_MIN and not gso_size & 1:
        headers = _headers_vector(shape, data, count, gso_size)
    else:
        whole = total // gso_size  # segments of exactly gso_size bytes: summed in one call
        sums = sums_of_equal_parts(data[: whole * gso_size], gso_size)
        if whole < count:
            sums.append(sum16(data[whole * gso_size :]))
        headers = _headers_scalar(shape, sums, count, gso_size, total)
    return Segments(headers, data, gso_size)


class _Shape(NamedTuple):
    """What every segment's headers share: the header bytes with the per-segment fields
    zeroed, and the sums of those bytes (reduced modulo 0xFFFF)."""

    hdr: bytearray  # IP + TCP headers
    tcp_at: int  # where the TCP header starts (the IP header length)
    v4: bool
    seq0: int
    flags0: int
    ip_id0: int
    tcp_base: int  # TCP header + pseudo-header addresses and protocol
    ip_base: int  # IPv4 header (0 for IPv6)


def _headers_scalar(
    shape: _Shape, sums: list[int], count: int, size: int, total: int
) -> list[bytes]:
    """The headers one segment at a time, packed into one buffer (few segments)."""
    hdr, t, v4 = shape.hdr, shape.tcp_at, shape.v4
    seq0, flags0, ip_id0 = shape.seq0, shape.flags0, shape.ip_id0
    tcp_base, ip_base = shape.tcp_base, shape.ip_base
    tcp_hdr_len = len(hdr) - t
    pack16, pack32 = _U16.pack_into, _U32.pack_into
    flags_at, seq_at, check_at = t + 13, t + 4, t + 16
    middle = flags0 & ~(_FIN | _PSH | _CWR)
    last = count - 1
    headers: list[bytes] = []
    for i in range(count):
        off = i * size
        tcp_len = tcp_hdr_len + (size if i < last else total - off)
        flags = middle if 0 < i < last else _edge_flags(flags0, i, last)
        seq = (seq0 + off) & 0xFFFFFFFF
        hdr[flags_at] = flags
        pack32(hdr, seq_at, seq)
        if v4:
            ip_id = (ip_id0 + i) & 0xFFFF
            pack16(hdr, 2, t + tcp_len)
            pack16(hdr, 4, ip_id)
            pack16(hdr, 10, checksum(ip_base + t + tcp_len + ip_id))
        else:
            pack16(hdr, 4, tcp_len)
        # IPv4 and IPv6 pseudo-headers sum alike: addresses, protocol, TCP length.
        check = checksum(tcp_base + tcp_len + (seq >> 16) + (seq & 0xFFFF) + flags + sums[i])
        pack16(hdr, check_at, check)
        headers.append(bytes(hdr))
    return headers


def _headers_vector(shape: _Shape, data: memoryview, count: int, size: int) -> list[bytes]:
    """The same headers as _headers_scalar, all segments at once with numpy: a row of
    big-endian 16-bit words per segment (every field that changes is a whole word, the
    TCP flags with the data offset); size must be even (the payload sums split into
    16-bit words)."""
    hdr, t = shape.hdr, shape.tcp_at
    h = len(hdr)  # even: IP and TCP header lengths are multiples of 4
    total = len(data)
    last = count - 1
    words = np.tile(np.frombuffer(bytes(hdr), dtype=_BE16), (count, 1))
    k = np.arange(count, dtype=np.int64)
    tcp_len = np.full(count, h - t + size, dtype=np.int64)
    tcp_len[last] = h - t + total - last * size
    seq = (shape.seq0 + k * size) & 0xFFFFFFFF
    flags = np.full(count, shape.flags0 & ~(_FIN | _PSH | _CWR), dtype=np.int64)
    flags[0] = _edge_flags(shape.flags0, 0, last)
    flags[last] = _edge_flags(shape.flags0, last, last)
    tw = t // 2  # the TCP header's first word
    words[:, tw + 2] = seq >> 16
    words[:, tw + 3] = seq & 0xFFFF
    words[:, tw + 6] = flags | hdr[t + 12] << 8  # data offset byte, then the flags
    sums = np.zeros(count, dtype=np.int64)
    sums[: total // size] = sums_array(data[: total // size * size], size)
    if total % size:
        sums[last] = sum16(data[last * size :]) % 0xFFFF
    if shape.v4:
        ip_len = t + tcp_len
        ip_id = (shape.ip_id0 + k) & 0xFFFF
        words[:, 1] = ip_len
        words[:, 2] = ip_id
        words[:, 5] = _checksums(shape.ip_base + ip_len + ip_id)
    else:
        words[:, 2] = tcp_len  # IPv6 payload length
    tcp_sum = shape.tcp_base + tcp_len + (seq >> 16) + (seq & 0xFFFF) + flags + sums
    words[:, tw + 8] = _checksums(tcp_sum)
    blob = words.tobytes()
    return [blob[at : at + h] for at in range(0, count * h, h)]


def _checksums(sums: np.ndarray) -> np.ndarray:
    """esp.csum.checksum for each sum."""
    r = sums % 0xFFFF
    return np.where(r != 0, 0xFFFF - r, 0)


def _edge_flags(flags: int, i: int, last: int) -> int:
    """TCP flags of the first or last segment: FIN/PSH stay on the last, CWR on the first."""
    if i != last:
        flags &= ~(_FIN | _PSH)
    if i:
        flags &= ~_CWR
    return flags
