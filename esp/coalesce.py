"""TCP segment coalescing on the way into a vnet_hdr TUN device (software GRO).

The inbound loop decrypts a batch of ESP packets and hands the inner packets here;
``TunWriter.flush`` writes them to the TUN device, gluing runs of consecutive TCP
segments of one flow into one super-packet with a ``virtio_net_hdr`` (GSO TCPv4/TCPv6,
NEEDS_CSUM). The kernel then pushes one 64 KB packet through forwarding and delivery
instead of ~45, and cuts it again only if the next hop needs that (TSO/GSO). The packet
stream leaving the host is the one that came in: same payload, sequence numbers,
flags, and segment size (gso_size is the run's segment size).

A segment joins the run when, like Linux's tcp_gro_receive requires, it has the same
addresses, ports, ACK number, header length, window, options, TOS/TTL (IPv6: traffic
class, flow label, hop limit), only ACK (PSH allowed, it ends the run), a payload of the
run's segment size (a shorter one ends the run), and a sequence number right after the
previous one; IPv4 needs DF and no options or fragments. Each segment's TCP checksum is
verified before it joins (the checksum of the super-packet is recomputed by the kernel,
so a bad one would otherwise be laundered); a segment that fails goes out on its own,
unchanged, for the receiving host to drop. Everything else is written as it is.

Checksums of a run are summed with numpy in one call per run (esp.csum).
"""

from __future__ import annotations

import os
import struct
from typing import Protocol

from esp.csum import checksum, fold, sum16, sums_of_equal_parts
from esp.tso import GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM, VNET_HDR, ZERO_VNET_HDR

__all__ = ["MAX_SUPER", "TunWriter"]

MAX_SUPER = 65535 - 60 - 60  # payload bytes of one super-packet: fits IPv4's total length
_ACK, _PSH = 0x10, 0x08
_IPPROTO_TCP = 6
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class WriterCounters(Protocol):
    """Where a TunWriter counts (esp.datapath.PathCounters)."""

    tun_writes: int  # write calls that succeeded
    tun_super_packets: int  # of those, super-packets
    tun_coalesced: int  # inner packets inside super-packets
    tun_bad_csum: int  # runs cut short by a segment with a wrong TCP checksum
    tun_errors: int  # failed writes


class TunWriter:
    """Collects inner packets of one batch (``add``), writes them at ``flush``.
    Single-threaded: the inbound loop's."""

    __slots__ = ("_c", "_fd", "_pending")

    def __init__(self, fd: int, counters: WriterCounters) -> None:
        self._fd = fd
        self._c = counters
        self._pending: list[bytes] = []

    def add(self, packet: bytes) -> None:
        self._pending.append(packet)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        n = len(pending)
        i = 0
        while i < n:
            j = _run_end(pending, i, n)
            if j - i >= 2:
                self._write_run(pending, i, j)
            else:
                self._write_one(pending[i])
            i = j

    # -- writing -----------------------------------------------------------------------

    def _write_one(self, packet: bytes) -> None:
        try:
            os.writev(self._fd, (ZERO_VNET_HDR, packet))
            self._c.tun_writes += 1
        except OSError:
            self._c.tun_errors += 1

    def _write_run(self, pending: list[bytes], i: int, j: int) -> None:
        """Write pending[i:j] as one super-packet: its longest prefix whose TCP checksums
        verify (a bad segment breaks the run; it and the rest go out one by one)."""
        run = pending[i:j]
        head = run[0]
        ip_len = 20 if head[0] == 0x45 else 40
        hdr_len = ip_len + (head[ip_len + 12] >> 4) * 4
        seg = len(head) - hdr_len
        payload = b"".join([p[hdr_len:] for p in run])
        good = _verified_prefix(run, payload, ip_len, hdr_len, seg)
        if good == len(run):
            self._write_super(run, payload, ip_len, hdr_len, seg)
            return
        self._c.tun_bad_csum += 1
        if good >= 2:
            self._write_super(run[:good], payload[: good * seg], ip_len, hdr_len, seg)
        for packet in run[good if good >= 2 else 0 :]:
            self._write_one(packet)

    def _write_super(
        self, run: list[bytes], payload: bytes, ip_len: int, hdr_len: int, seg: int
    ) -> None:
        head = run[0]
        tcp_len = hdr_len - ip_len + len(payload)
        hdr = bytearray(head[:hdr_len])
        hdr[ip_len + 13] = run[-1][ip_len + 13]  # PSH of the last segment
        if ip_len == 20:
            _U16.pack_into(hdr, 2, hdr_len + len(payload))
            hdr[10:12] = b"\0\0"
            _U16.pack_into(hdr, 10, checksum(sum16(hdr[:20])))
            pseudo = sum16(head[12:20]) + _IPPROTO_TCP + tcp_len
            gso_type = GSO_TCPV4
        else:
            _U16.pack_into(hdr, 4, tcp_len)
            pseudo = sum16(head[8:40]) + _IPPROTO_TCP + tcp_len
            gso_type = GSO_TCPV6
        # NEEDS_CSUM: the field holds the folded pseudo-header sum (not complemented);
        # the kernel adds the rest, per segment when it cuts the packet again.
        _U16.pack_into(hdr, ip_len + 16, fold(pseudo))
        vnet = VNET_HDR.pack(NEEDS_CSUM, gso_type, hdr_len, seg, ip_len, 16)
        try:
            os.writev(self._fd, (vnet, hdr, payload))
        except OSError:
            self._c.tun_errors += 1
            return
        c = self._c
        c.tun_writes += 1
        c.tun_super_packets += 1
        c.tun_coalesced += len(run)


# -- deciding runs ----------------------------------------------------------------------


def _tcp_header_len(p: bytes) -> int:
    """The IP + TCP header length of a segment that may coalesce, else 0."""
    n = len(p)
    first = p[0]
    if first == 0x45:  # IPv4 without options
        if n < 40 or p[9] != _IPPROTO_TCP or (p[6] & 0xBF) or p[7]:
            return 0  # not TCP, or a fragment, or MF/reserved set; DF alone is fine
        ip_len = 20
    elif first >> 4 == 6:
        if n < 60 or p[6] != _IPPROTO_TCP:
            return 0  # extension headers: never coalesced
        ip_len = 40
    else:
        return 0
    hdr_len = ip_len + (p[ip_len + 12] >> 4) * 4
    if hdr_len < ip_len + 20 or hdr_len >= n:
        return 0  # bad data offset, or no payload (a pure ACK)
    if (p[ip_len + 13] | _PSH) != (_ACK | _PSH):
        return 0  # SYN, FIN, RST, URG, ECE or CWR: the kernel must see these alone
    if first == 0x45 and not p[6] & 0x40:
        return 0  # without DF the IP IDs would have to be checked too
    return hdr_len


def _flow_key(p: bytes, ip_len: int, hdr_len: int) -> bytes:
    """The header bytes that must be equal within a run: all but IP length, ID and
    checksum, TCP sequence number, flags and checksum."""
    if ip_len == 20:  # version..TOS, flags..protocol, addresses, ports, ACK..offset, window
        return p[0:2] + p[6:10] + p[12:24] + p[28:33] + p[34:36] + p[38:hdr_len]
    # version..flow label, next header..ports, ACK..offset, window, urgent..options
    return p[0:4] + p[6:44] + p[48:53] + p[54:56] + p[58:hdr_len]


def _run_end(pending: list[bytes], i: int, n: int) -> int:
    """The end (exclusive) of the run that starts at pending[i]: i + 1 if it is alone."""
    head = pending[i]
    hdr_len = _tcp_header_len(head)
    if not hdr_len:
        return i + 1
    ip_len = 20 if head[0] == 0x45 else 40
    flags_at, seq_at = ip_len + 13, ip_len + 4
    if head[flags_at] & _PSH:
        return i + 1
    seg = len(head) - hdr_len
    key = _flow_key(head, ip_len, hdr_len)
    flow_key = _flow_key
    pack_seq = _U32.pack
    seq = (_U32.unpack_from(head, seq_at)[0] + seg) & 0xFFFFFFFF
    total = seg
    j = i + 1
    while j < n:
        p = pending[j]
        size = len(p) - hdr_len
        if (
            not 0 < size <= seg
            or total + size > MAX_SUPER
            or p[seq_at : seq_at + 4] != pack_seq(seq)
            or (p[flags_at] | _PSH) != _ACK | _PSH
            or flow_key(p, ip_len, hdr_len) != key
        ):
            break
        j += 1
        total += size
        if size < seg or p[flags_at] & _PSH:
            break  # a short or pushed segment ends the run, as in the kernel's GRO
        seq = (seq + size) & 0xFFFFFFFF
    return j


def _verified_prefix(run: list[bytes], payload: bytes, ip_len: int, hdr_len: int, seg: int) -> int:
    """How many segments from the start of the run carry a correct TCP checksum: the sum
    of pseudo-header, TCP header and payload, checksum field included, is 0xFFFF (0 mod
    0xFFFF). ``payload`` is the run's payloads joined, all ``seg`` bytes but maybe the
    last: the payload sums come from it and the header sums from the headers, one numpy
    call each."""
    head = run[0]
    count = len(run)
    tcp_hdr = hdr_len - ip_len
    base = (sum16(head[12:20]) if ip_len == 20 else sum16(head[8:40])) + _IPPROTO_TCP + tcp_hdr
    if seg & 1:  # an odd segment size (rare): one at a time
        for k, p in enumerate(run):
            if fold(base + len(p) - hdr_len + sum16(p[ip_len:])) != 0xFFFF:
                return k
        return count
    last = len(run[-1]) - hdr_len
    equal = count if last == seg else count - 1
    view = memoryview(payload)
    sums = sums_of_equal_parts(view[: equal * seg], seg)
    if equal < count:
        sums.append(sum16(view[equal * seg :]))
    headers = sums_of_equal_parts(b"".join([p[ip_len:hdr_len] for p in run]), tcp_hdr)
    for k in range(count):
        if (base + (seg if k < equal else last) + headers[k] + sums[k]) % 0xFFFF:
            return k
    return count
