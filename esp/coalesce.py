"""TCP segment coalescing on the way into a vnet_hdr TUN device (software GRO).

The inbound loop decrypts a batch of ESP packets and hands the inner packets here
(``TunWriter.add``, ``bytes`` or ``memoryview``); ``TunWriter.flush`` writes them to the
TUN device, gluing runs of consecutive TCP segments of one flow into one super-packet
with a ``virtio_net_hdr`` (GSO TCPv4/TCPv6, NEEDS_CSUM). The kernel then pushes one 64 KB
packet through forwarding and delivery instead of ~45, and cuts it again only if the
next hop needs that (TSO/GSO). The packet stream leaving the host is the one that came
in: same payload, sequence numbers, flags, and segment size (gso_size is the run's
segment size).

A segment joins the run when, like Linux's tcp_gro_receive requires, it has the same
addresses, ports, ACK number, header length, window, options, TOS/TTL (IPv6: traffic
class, flow label, hop limit), only ACK (PSH allowed, it ends the run), a payload of the
run's segment size (a shorter one ends the run), and a sequence number right after the
previous one; IPv4 needs DF and no options or fragments. Each segment's TCP checksum is
verified before it joins (the checksum of the super-packet is recomputed by the kernel,
so a bad one would otherwise be laundered); a segment that fails goes out on its own,
unchanged, for the receiving host to drop, and so does the rest of its run. Everything
else is written as it is.

Cost, per batch rather than per segment where it can be: ``add`` is the pending list's
own append. A segment is compared with its run's first one as one big integer of its
header bytes (XOR, then a mask of the bytes that must be equal); a glance at ports and
addresses first spares that in batches of many flows. From 24 segments of one length
on, after a few such comparisons, the segments are joined once into rows of a 2-D numpy
array: masked headers compare as one bytes string, sequence numbers against the ones
expected. The same rows (joined for any run of two or more) give the TCP sums of all
full-size segments in one call (esp.csum.row_sums) and the payload to write in another.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from esp.csum import checksum, fold, row_sums, sum16
from esp.tso import GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM, VNET_HDR, ZERO_VNET_HDR

__all__ = ["MAX_SUPER", "TunWriter"]

MAX_SUPER = 65535 - 60 - 60  # payload bytes of one super-packet: fits IPv4's total length
_ACK, _PSH = 0x10, 0x08
_ACK_ONLY = bytes([_ACK])
_IPPROTO_TCP = 6
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_from_bytes = int.from_bytes
_BE32 = np.dtype(">u4")
_VECTOR_MIN = 24  # candidates from which numpy compares headers faster (measured)
_PROBE = 4  # segments compared one by one first: most short runs end before

Packet = bytes | memoryview

# Header bytes a segment shares with its run's first one: IPv4 version..TOS,
# flags..protocol, addresses, ports, ACK..data offset, window, urgent pointer (not the
# length, ID, checksums); IPv6 version..flow label, next header..ports, ACK..data
# offset, window, urgent pointer. Options too; the sequence number and flags apart.
_EQUAL_V4 = ((0, 2), (6, 10), (12, 24), (28, 33), (34, 36), (38, 40))
_EQUAL_V6 = ((0, 4), (6, 44), (48, 53), (54, 56), (58, 60))


def _mask(ip_len: int, equal: Sequence[tuple[int, int]], seq: int, flags: int) -> bytes:
    """A mask of the longest header (options included): the ``equal`` byte spans and
    options, the sequence number's bytes masked by ``seq``, the flags by ``flags``."""
    mask = bytearray(ip_len + 60)
    for start, end in equal:
        mask[start:end] = b"\xff" * (end - start)
    mask[ip_len + 20 :] = b"\xff" * 40
    mask[ip_len + 4 : ip_len + 8] = bytes([seq]) * 4
    mask[ip_len + 13] = flags
    return bytes(mask)


# One at a time: header as a big-endian integer, compared with the first segment's
# whose sequence number is replaced by the one expected; PSH may differ (0xF7).
_KEY_V4 = int.from_bytes(_mask(20, _EQUAL_V4, 0xFF, 0xF7), "big")
_KEY_V6 = int.from_bytes(_mask(40, _EQUAL_V6, 0xFF, 0xF7), "big")
# In numpy, as rows of bytes: sequence numbers and flags apart.
_ROW_MASK_V4 = np.frombuffer(_mask(20, _EQUAL_V4, 0, 0), np.uint8)
_ROW_MASK_V6 = np.frombuffer(_mask(40, _EQUAL_V6, 0, 0), np.uint8)


class WriterCounters(Protocol):
    """Where a TunWriter counts (esp.datapath.PathCounters)."""

    tun_writes: int  # write calls that succeeded
    tun_super_packets: int  # of those, super-packets
    tun_coalesced: int  # inner packets inside super-packets
    tun_bad_csum: int  # runs cut short by a segment with a wrong TCP checksum
    tun_errors: int  # failed writes


class TunWriter:
    """Collects inner packets of one batch (``add``), writes them at ``flush``, which
    leaves nothing pending even when it raises. Single-threaded: the inbound loop's."""

    __slots__ = ("_c", "_fd", "_pending", "add")

    def __init__(self, fd: int, counters: WriterCounters) -> None:
        self._fd = fd
        self._c = counters
        self._pending: list[Packet] = []
        # The inbound loop calls this per packet: a bound list.append is the cheapest
        # call there is, so the list is never replaced, only cleared.
        self.add = self._pending.append

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        try:
            self._write_all(pending)
        finally:
            pending.clear()

    def _write_all(self, pending: list[Packet]) -> None:
        n = len(pending)
        i = 0
        while i < n:
            head = pending[i]
            hdr_len = _head_header_len(head)
            if not hdr_len or i + 1 == n or _other_flow(head, pending[i + 1]):
                self._write_one(head)
                i += 1
                continue
            j, rows = _find_run(pending, i, n, hdr_len)
            if j - i >= 2:
                self._write_run(pending[i:j], hdr_len, rows)
            else:
                self._write_one(head)
            i = j

    # -- writing -----------------------------------------------------------------------

    def _write_one(self, packet: Packet) -> None:
        try:
            os.writev(self._fd, (ZERO_VNET_HDR, packet))
            self._c.tun_writes += 1
        except OSError:
            self._c.tun_errors += 1

    def _write_run(self, run: list[Packet], hdr_len: int, rows: np.ndarray | None) -> None:
        """Write a run as one super-packet: its longest prefix whose TCP checksums verify
        (a bad segment breaks the run; it and the rest go out one by one). ``rows``:
        the run's first segments as _find_run joined them, if it did."""
        ip_len = 20 if run[0][0] == 0x45 else 40
        good, payloads = _verified_payloads(run, ip_len, hdr_len, rows)
        if good == len(run):
            self._write_super(run, payloads, ip_len, hdr_len)
            return
        self._c.tun_bad_csum += 1
        if good >= 2:
            self._write_super(run[:good], payloads, ip_len, hdr_len)
        else:
            good = 0
        for packet in run[good:]:
            self._write_one(packet)

    def _write_super(
        self, run: list[Packet], payloads: list[Packet], ip_len: int, hdr_len: int
    ) -> None:
        head = run[0]
        seg = len(head) - hdr_len
        payload_len = seg * (len(run) - 1) + len(run[-1]) - hdr_len
        tcp_len = hdr_len - ip_len + payload_len
        hdr = bytearray(head[:hdr_len])
        hdr[ip_len + 13] = run[-1][ip_len + 13]  # PSH of the last segment
        if ip_len == 20:
            _U16.pack_into(hdr, 2, hdr_len + payload_len)
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
            os.writev(self._fd, (vnet, hdr, *payloads))
        except OSError:
            self._c.tun_errors += 1
            return
        c = self._c
        c.tun_writes += 1
        c.tun_super_packets += 1
        c.tun_coalesced += len(run)


# -- deciding runs ----------------------------------------------------------------------


def _head_header_len(p: Packet) -> int:
    """The IP + TCP header length of a segment that may start a run, else 0."""
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
    if p[ip_len + 13] != _ACK:
        return 0  # SYN, FIN, RST, URG, ECE or CWR: the kernel must see these alone;
        # PSH ends a run, so it cannot start one
    if first == 0x45 and not p[6] & 0x40:
        return 0  # without DF the IP IDs would have to be checked too
    return hdr_len


def _other_flow(head: Packet, p: Packet) -> bool:
    """Whether p differs from a run's first segment in ports or (most of) addresses: a
    quick look that spares setting up _find_run in batches of many flows."""
    at = 12 if head[0] == 0x45 else 32  # IPv4 addresses + ports, IPv6 dst[8:] + ports
    return p[at : at + 12] != head[at : at + 12]


def _find_run(pending: list[Packet], i: int, n: int, hdr_len: int) -> tuple[int, np.ndarray | None]:
    """The end (exclusive) of the run that starts at pending[i], a segment of header
    length hdr_len that may start one (i + 1 if it is alone); and, when it compared them
    in numpy, the equal-length segments from pending[i] as rows, for _write_run."""
    head = pending[i]
    size = len(head)
    seg = size - hdr_len
    stop = min(n, i + MAX_SUPER // seg)  # full-size segments that fit
    if stop - i < _VECTOR_MIN:
        return _run_end(pending, i, n, hdr_len), None
    j = _run_end(pending, i, i + _PROBE, hdr_len)
    if j < i + _PROBE:
        return j, None  # a short run (mixed packets): numpy would not pay
    candidates = pending[i:stop]
    lengths = [*map(len, candidates)]
    if lengths.count(size) != len(lengths):  # rows need one length: up to the first other
        candidates = candidates[: next(k for k, other in enumerate(lengths) if other != size)]
        if len(candidates) < _VECTOR_MIN:
            return _run_end(pending, i, n, hdr_len), None
    rows = np.frombuffer(b"".join(candidates), np.uint8).reshape(len(candidates), size)
    k = _matching_rows(rows, hdr_len, seg)
    # The segment after the last matching row may still end the run: pushed or short.
    room = MAX_SUPER - (k - 1) * seg
    return _run_end(pending, i + k - 1, min(n, i + k + 1), hdr_len, room), rows


def _matching_rows(rows: np.ndarray, hdr_len: int, seg: int) -> int:
    """How many rows from the first (segments of one length) have its header but for
    IP length, ID and checksums, and TCP checksum, consecutive sequence numbers, and
    only ACK set (a pushed segment is not counted: it is looked at alone)."""
    count = len(rows)
    ip_len = 20 if rows[0, 0] == 0x45 else 40
    seq_at = ip_len + 4
    # Compared as bytes first (one memcmp); where they differ, numpy finds the row.
    k = count - len(rows[:, ip_len + 13].tobytes().lstrip(_ACK_ONLY))
    keys = rows[:, :hdr_len] & (_ROW_MASK_V4 if ip_len == 20 else _ROW_MASK_V6)[:hdr_len]
    if keys.tobytes() != keys[0].tobytes() * count:
        k = min(k, int((keys != keys[0]).any(axis=1).argmax()))
    seq0 = _U32.unpack_from(rows[0], seq_at)[0]
    seqs = np.arange(seq0, seq0 + count * seg, seg, dtype=np.uint64).astype(_BE32)
    got = rows[:, seq_at : seq_at + 4]
    if got.tobytes() != seqs.tobytes():
        k = min(k, int((got.view(_BE32)[:, 0] != seqs).argmax()))
    return k


def _run_end(pending: list[Packet], i: int, n: int, hdr_len: int, room: int = MAX_SUPER) -> int:
    """_find_run one segment at a time, looking no further than pending[n - 1];
    ``room``: payload bytes the run may take from pending[i] on."""
    head = pending[i]
    ip_len = 20 if head[0] == 0x45 else 40
    flags_at = ip_len + 13
    seg = len(head) - hdr_len
    # A segment's header as an integer, XOR the head's with the sequence number it
    # should have put in place of the head's, must be zero in the key bytes.
    shift = (hdr_len - ip_len - 8) * 8  # of the sequence number, from the right
    key = (_KEY_V4 if ip_len == 20 else _KEY_V6) >> (60 + ip_len - hdr_len) * 8
    ref = _from_bytes(head[:hdr_len], "big")
    seq = (ref >> shift) & 0xFFFFFFFF
    ref ^= seq << shift
    j = i + 1
    while j < n:
        p = pending[j]
        size = len(p) - hdr_len
        seq = (seq + seg) & 0xFFFFFFFF
        if (
            not 0 < size <= seg
            or (j - i) * seg + size > room
            or (_from_bytes(p[:hdr_len], "big") ^ ref ^ seq << shift) & key
        ):
            break
        j += 1
        if size < seg or p[flags_at] & _PSH:
            break  # a short or pushed segment ends the run, as in the kernel's GRO
    return j


# -- verifying checksums ----------------------------------------------------------------


def _pseudo_sum(p: Packet, ip_len: int) -> int:
    """The pseudo-header sum of a segment but its TCP length: addresses and protocol."""
    return (sum16(p[12:20]) if ip_len == 20 else sum16(p[8:40])) + _IPPROTO_TCP


def _verified_payloads(
    run: list[Packet], ip_len: int, hdr_len: int, rows: np.ndarray | None
) -> tuple[int, list[Packet]]:
    """How many segments from the start of the run carry a correct TCP checksum, and
    their payloads (buffers to write one after the other). ``rows``: the run's first
    segments joined (maybe more), if they are."""
    size = len(run[0])
    count = len(run)
    full = count if len(run[-1]) == size else count - 1  # the last one may be shorter
    if rows is None:
        rows = np.frombuffer(b"".join(run), np.uint8, count=full * size).reshape(full, size)
    else:
        rows = rows[:full]
    good = _verified_rows(rows[:, ip_len:], run[0], ip_len)
    payloads: list[Packet] = [rows[:good, hdr_len:].tobytes()]
    if good == full < count and _verified_one_by_one(run[full:], ip_len):
        good = count
        payloads.append(run[-1][hdr_len:])
    return good, payloads


def _verified_rows(tcp: np.ndarray, head: Packet, ip_len: int) -> int:
    """How many rows from the first carry a correct TCP checksum; ``tcp``: the TCP bytes
    of equal-length segments, a row each. Correct: the sum of pseudo-header and TCP
    bytes, checksum field included, is 0 modulo 0xFFFF."""
    want = -(_pseudo_sum(head, ip_len) + tcp.shape[1]) % 0xFFFF
    residues: list[int] = row_sums(tcp).tolist()
    if residues.count(want) == len(residues):
        return len(residues)
    return next(k for k, r in enumerate(residues) if r != want)


def _verified_one_by_one(run: Sequence[Packet], ip_len: int) -> int:
    """_verified_rows for segments of any length, one sum each."""
    base = _pseudo_sum(run[0], ip_len)
    for k, p in enumerate(run):
        if (base + len(p) - ip_len + sum16(p[ip_len:])) % 0xFFFF:
            return k
    return len(run)
