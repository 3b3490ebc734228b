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

from esp.csum import checksum, sum16, sums_of_equal_parts

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
    "complete_csum",
    "segment",
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


def segment(packet: bytes | memoryview, gso_type: int, gso_size: int) -> list[bytes]:
    """The segments of a TCP super-packet of gso_size-byte payloads, each a complete
    IPv4/IPv6 packet with correct lengths, IPv4 id and header checksum, TCP sequence
    number, flags (FIN/PSH on the last only, CWR on the first only) and TCP checksum."""
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

    ip_hdr = bytearray(packet[:ip_hdr_len])
    tcp_hdr = bytearray(packet[ip_hdr_len:hdr_end])
    seq0 = _U32.unpack_from(tcp_hdr, 4)[0]
    flags0 = tcp_hdr[13]
    v4 = kind == GSO_TCPV4
    ip_id0 = _U16.unpack_from(ip_hdr, 4)[0] if v4 else 0
    # Checksums add per segment only what changes: the headers are summed once with those
    # fields zeroed (sequence number, flags, lengths, IPv4 id), then each segment adds its
    # values as 16-bit words (the sum is taken modulo 0xFFFF, esp.csum).
    tcp_hdr[4:8] = b"\0\0\0\0"
    tcp_hdr[13] = 0
    tcp_hdr[16:18] = b"\0\0"
    tcp_base = sum16(tcp_hdr) + sum16(src) + sum16(dst) + _IPPROTO_TCP
    if v4:
        ip_hdr[2:6] = b"\0\0\0\0"
        ip_hdr[10:12] = b"\0\0"
        ip_base = sum16(ip_hdr)
    data = memoryview(packet)[hdr_end:]
    total = len(data)
    count = max(1, -(-total // gso_size))
    whole = total // gso_size  # segments of exactly gso_size bytes: summed in one call
    sums = sums_of_equal_parts(data[: whole * gso_size], gso_size)
    if whole < count:
        sums.append(sum16(data[whole * gso_size :]))
    pack16, pack32, join = _U16.pack_into, _U32.pack_into, b"".join
    out: list[bytes] = []
    for i in range(count):
        off = i * gso_size
        payload = data[off : off + gso_size]
        tcp_len = tcp_hdr_len + len(payload)
        flags = flags0
        if i != count - 1:
            flags &= ~(_FIN | _PSH)
        if i:
            flags &= ~_CWR
        seq = (seq0 + off) & 0xFFFFFFFF
        tcp_hdr[13] = flags
        pack32(tcp_hdr, 4, seq)
        if v4:
            ip_id = (ip_id0 + i) & 0xFFFF
            pack16(ip_hdr, 2, ip_hdr_len + tcp_len)
            pack16(ip_hdr, 4, ip_id)
            pack16(ip_hdr, 10, checksum(ip_base + ip_hdr_len + tcp_len + ip_id))
        else:
            pack16(ip_hdr, 4, tcp_len)
        # IPv4 and IPv6 pseudo-headers sum alike: addresses, protocol, TCP length.
        check = checksum(tcp_base + tcp_len + (seq >> 16) + (seq & 0xFFFF) + flags + sums[i])
        pack16(tcp_hdr, 16, check)
        out.append(join((ip_hdr, tcp_hdr, payload)))
    return out
