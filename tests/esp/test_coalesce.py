"""esp.coalesce: decrypted TCP segments glued into super-packets for a vnet_hdr TUN device.

The writer writes to one end of a datagram socket pair, so each write is one message:
the tests read back exactly what the kernel would have been handed. A super-packet is
checked by cutting it again with esp.tso.segment (the kernel's TSO, tested against scapy
in test_tso.py): the segments must be the ones that went in, byte for byte.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt

from esp.coalesce import MAX_SUPER, TunWriter
from esp.csum import fold, sum16
from esp.datapath import PathCounters
from esp.tso import GSO_NONE, GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM, VNET_HDR, VNET_HDR_LEN, segment

MSS = 1000


class Tun:
    """A TunWriter over a socket pair; ``frames()`` returns what it wrote, in order."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.theirs.setblocking(False)
        self.counters = PathCounters()
        self.writer = TunWriter(self.ours.fileno(), self.counters)

    def write(self, packets: Sequence[bytes | memoryview]) -> list[tuple[tuple[int, ...], bytes]]:
        for p in packets:
            self.writer.add(p)
        self.writer.flush()
        out: list[tuple[tuple[int, ...], bytes]] = []
        while True:
            try:
                frame = self.theirs.recv(70000)
            except BlockingIOError:
                return out
            out.append((VNET_HDR.unpack_from(frame), frame[VNET_HDR_LEN:]))

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def tun() -> Iterator[Tun]:
    t = Tun()
    yield t
    t.close()


def flow(
    count: int,
    *,
    v6: bool = False,
    seq: int = 1000,
    size: int = MSS,
    last: int | None = None,
    flags: str = "A",
    **tcp: Any,
) -> list[bytes]:
    """``count`` consecutive segments of one flow, checksums correct (scapy's)."""
    out = []
    first_id = 7 + (seq - 1000) // MSS  # IPv4 IDs count segments, as the kernel's TSO does
    for i in range(count):
        n = last if (last is not None and i == count - 1) else size
        payload = bytes((i + k) & 0xFF for k in range(n))
        ip: Any = (
            IPv6(src="fd00:1::5", dst="fd00:2::9", hlim=63)
            if v6
            else IP(src="10.1.0.5", dst="10.2.0.9", id=first_id + i, flags="DF", ttl=63)
        )
        fields = {"sport": 40000, "dport": 5201, "ack": 77, "window": 501, **tcp}
        options = [("NOP", None), ("NOP", None), ("Timestamp", (11, 22))]
        t = TCP(seq=seq, flags=flags, options=options, **fields)
        out.append(bytes(raw(ip / t / payload)))
        seq += n
    return out


def resegmented(header: tuple[int, ...], packet: bytes) -> list[bytes]:
    flags, gso_type, _hdr_len, gso_size, _csum_start, _csum_offset = header
    assert flags == NEEDS_CSUM
    # NEEDS_CSUM: the field holds the folded pseudo-header sum; the kernel's TSO ignores
    # the rest of the packet's checksum state. esp.tso.segment computes every checksum.
    return segment(packet, gso_type, gso_size)


def assert_one_super_packet(frames: list[Any], segments: list[bytes], gso_type: int) -> None:
    assert len(frames) == 1, [h for h, _ in frames]
    header, packet = frames[0]
    assert header[1] == gso_type and header[3] == MSS
    assert header[4] == (20 if gso_type == GSO_TCPV4 else 40) and header[5] == 16
    assert resegmented(header, packet) == segments


# ------------------------------------------------------------------ what coalesces


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_run_becomes_one_super_packet_that_cuts_back_into_the_same_segments(
    tun: Tun, v6: bool
) -> None:
    segments = flow(10, v6=v6, last=300)
    frames = tun.write(segments)
    assert_one_super_packet(frames, segments, GSO_TCPV6 if v6 else GSO_TCPV4)
    header, packet = frames[0]
    # The super-packet's own header: lengths of the whole, IPv4 header checksum valid,
    # TCP checksum field = the folded pseudo-header sum over the whole TCP length.
    hdr_len = header[2]
    assert len(packet) == hdr_len + 9 * MSS + 300
    ip_len = 40 if v6 else 20
    tcp_len = len(packet) - ip_len
    if v6:
        assert int.from_bytes(packet[4:6], "big") == tcp_len
        pseudo = sum16(packet[8:40]) + 6 + tcp_len
    else:
        assert int.from_bytes(packet[2:4], "big") == len(packet)
        assert fold(sum16(packet[:20])) == 0xFFFF
        pseudo = sum16(packet[12:20]) + 6 + tcp_len
    assert int.from_bytes(packet[ip_len + 16 : ip_len + 18], "big") == fold(pseudo)
    c = tun.counters
    assert (c.tun_writes, c.tun_super_packets, c.tun_coalesced, c.tun_bad_csum) == (1, 1, 10, 0)


def test_psh_on_the_last_segment_is_kept_and_ends_the_run(tun: Tun) -> None:
    segments = flow(4)
    pushed = flow(1, seq=1000 + 4 * MSS, flags="PA")
    after = flow(2, seq=1000 + 5 * MSS)
    frames = tun.write(segments + pushed + after)
    assert len(frames) == 2
    assert resegmented(*frames[0]) == segments + pushed
    assert resegmented(*frames[1]) == after


def test_a_short_segment_ends_the_run(tun: Tun) -> None:
    first = flow(3, last=10)
    second = flow(3, seq=1000 + 2 * MSS + 10)
    frames = tun.write(first + second)
    assert [len(resegmented(*f)) for f in frames] == [3, 3]
    assert resegmented(*frames[0]) + resegmented(*frames[1]) == first + second


def test_runs_never_exceed_what_an_ip_packet_can_hold(tun: Tun) -> None:
    segments = flow(140)
    frames = tun.write(segments)
    assert all(len(p) <= 65535 for _, p in frames)
    assert all(len(p) - h[2] <= MAX_SUPER for h, p in frames)
    assert [s for f in frames for s in resegmented(*f)] == segments


# ------------------------------------------------------------------ what stays alone


def _alone(tun: Tun, packets: list[bytes]) -> None:
    frames = tun.write(packets)
    assert [p for _, p in frames] == packets  # each as it was, in order
    assert all(h == (0, GSO_NONE, 0, 0, 0, 0) for h, _ in frames)
    assert tun.counters.tun_super_packets == 0


def test_interleaved_flows_do_not_mix(tun: Tun) -> None:
    a = flow(2)
    b = flow(2, sport=40001)
    _alone(tun, [a[0], b[0], a[1], b[1]])


def test_a_gap_in_sequence_numbers_breaks_the_run(tun: Tun) -> None:
    packets = flow(1) + flow(1, seq=1000 + MSS + 1)
    _alone(tun, packets)


@pytest.mark.parametrize("flags", ["S", "SA", "FA", "RA", "UA", "EA", "CA"])
def test_control_flags_are_never_coalesced(tun: Tun, flags: str) -> None:
    _alone(tun, flow(2, flags=flags))


@pytest.mark.parametrize(
    "change",
    ["ack", "window", "ttl", "tos", "options", "sport"],
)
def test_segments_that_differ_in_more_than_sequence_do_not_join(tun: Tun, change: str) -> None:
    first = flow(1)
    ip = IP(first[0])
    second = IP(flow(1, seq=1000 + MSS)[0])
    if change == "ack":
        second[TCP].ack += 1
    elif change == "window":
        second[TCP].window += 1
    elif change == "ttl":
        second.ttl -= 1
    elif change == "tos":
        second.tos = 0x10
    elif change == "options":
        second[TCP].options = [("NOP", None), ("NOP", None), ("Timestamp", (12, 22))]
    else:
        second[TCP].sport += 1
    del second.chksum, second[TCP].chksum
    assert bytes(raw(ip)) == first[0]
    _alone(tun, [first[0], bytes(raw(second))])


def test_not_tcp_fragments_options_and_pure_acks_stay_alone(tun: Tun) -> None:
    udp = [bytes(raw(IP(src="10.1.0.5", dst="10.2.0.9") / UDP() / bytes(100)))] * 2
    _alone(tun, udp)
    no_df = []
    for p in flow(2):
        ip = IP(p)
        ip.flags = 0
        del ip.chksum
        no_df.append(bytes(raw(ip)))
    _alone(tun, no_df)
    acks = flow(2, size=0)
    _alone(tun, acks)
    v6_ext = [
        bytes(
            raw(
                IPv6(src="fd00:1::5", dst="fd00:2::9")
                / IPv6ExtHdrDestOpt()
                / TCP(seq=1000 + i * MSS, flags="A")
                / bytes(MSS)
            )
        )
        for i in range(2)
    ]
    _alone(tun, v6_ext)


# ------------------------------------------------------------------ checksums


def test_a_segment_with_a_wrong_checksum_is_not_laundered(tun: Tun) -> None:
    segments = flow(6)
    broken = bytearray(segments[3])
    broken[-1] ^= 0xFF  # payload changed after the checksum was computed
    packets = [*segments[:3], bytes(broken), *segments[4:]]
    frames = tun.write(packets)
    # The verified prefix coalesces; the broken one and the rest go out as they were.
    assert resegmented(*frames[0]) == segments[:3]
    assert [p for _, p in frames[1:]] == packets[3:]
    assert tun.counters.tun_bad_csum == 1


def test_a_wrong_checksum_on_the_first_segment_coalesces_nothing(tun: Tun) -> None:
    segments = flow(3)
    broken = bytearray(segments[0])
    broken[-1] ^= 0x01
    packets = [bytes(broken), *segments[1:]]
    frames = tun.write(packets)
    assert [p for _, p in frames] == packets
    assert tun.counters.tun_super_packets == 0 and tun.counters.tun_bad_csum == 1


def test_odd_segment_sizes_are_verified_too(tun: Tun) -> None:
    segments = flow(3, size=999)
    frames = tun.write(segments)
    assert len(frames) == 1
    header, packet = frames[0]
    assert segment(packet, header[1], header[3]) == segments
    broken = bytearray(segments[1])
    broken[-1] ^= 0x10
    frames = tun.write([segments[0], bytes(broken), segments[2]])
    assert [p for _, p in frames] == [segments[0], bytes(broken), segments[2]]


def test_nothing_pending_writes_nothing(tun: Tun) -> None:
    assert tun.write([]) == []
    assert tun.counters.tun_writes == 0


def test_a_failed_write_is_counted_not_raised(tun: Tun) -> None:
    tun.theirs.close()
    tun.writer.add(flow(1)[0])
    tun.writer.flush()
    tun.writer.add(flow(2)[0])
    tun.writer.add(flow(2)[1])
    tun.writer.flush()
    assert tun.counters.tun_errors == 2


# ------------------------------------------------------------------ long batches
# From 24 segments of one length on, headers are compared in numpy (rows of a joined
# batch); these check that path against what one at a time decides.


def _shape(frames: list[Any]) -> list[int]:
    """Segments per frame: 0 for a packet written alone."""
    return [len(resegmented(h, p)) if h[1] != GSO_NONE else 0 for h, p in frames]


def _unrolled(frames: list[Any]) -> list[bytes]:
    return [s for h, p in frames for s in (resegmented(h, p) if h[1] != GSO_NONE else [p])]


def _changed(packet: bytes, change: str) -> bytes:
    """packet with one header field changed (checksums recomputed), or its payload
    corrupted (``csum``)."""
    if change == "csum":
        broken = bytearray(packet)
        broken[-1] ^= 0x40
        return bytes(broken)
    ip = IP(packet) if packet[0] >> 4 == 4 else IPv6(packet)
    tcp = ip[TCP]
    if change == "window":
        tcp.window += 1
    elif change == "ack":
        tcp.ack += 1
    elif change == "fin":
        tcp.flags = "FA"
    elif change == "psh":
        tcp.flags = "PA"
    if isinstance(ip, IP):
        del ip.chksum
    del tcp.chksum
    return bytes(raw(ip))


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize(
    ("change", "shape"),
    [
        ("window", [20, 0, 24]),  # it differs from both sides: alone
        ("ack", [20, 0, 24]),
        ("fin", [20, 0, 24]),
        ("psh", [21, 24]),  # ends the run it is in
        ("csum", [20] + [0] * 25),  # it and the rest of the run alone
    ],
)
def test_a_long_run_is_cut_where_a_middle_segment_differs(
    tun: Tun, v6: bool, change: str, shape: list[int]
) -> None:
    segments = flow(45, v6=v6)
    packets = [*segments[:20], _changed(segments[20], change), *segments[21:]]
    frames = tun.write(packets)
    assert _shape(frames) == shape
    assert _unrolled(frames) == packets
    assert tun.counters.tun_bad_csum == (change == "csum")


def test_a_long_run_is_cut_by_a_gap_or_a_short_segment(tun: Tun) -> None:
    gap = flow(20) + flow(25, seq=1000 + 20 * MSS + 1)
    frames = tun.write(gap)
    assert _shape(frames) == [20, 25] and _unrolled(frames) == gap
    short = flow(31, last=500) + flow(14, seq=1000 + 30 * MSS + 500)
    frames = tun.write(short)
    assert _shape(frames) == [31, 14] and _unrolled(frames) == short
    longer = flow(30) + flow(15, seq=1000 + 30 * MSS, size=MSS + 4)
    frames = tun.write(longer)
    assert _shape(frames) == [30, 15] and _unrolled(frames) == longer


def test_two_flows_in_one_batch_each_coalesce(tun: Tun) -> None:
    a = flow(30)
    b = flow(30, v6=True, seq=5000)
    c = flow(30, sport=40001)
    frames = tun.write(a + b + c)
    assert _shape(frames) == [30, 30, 30]
    assert _unrolled(frames) == a + b + c
    interleaved = [p for pair in zip(flow(20), flow(20, sport=40001), strict=True) for p in pair]
    frames = tun.write(interleaved)
    assert _shape(frames) == [0] * 40


@pytest.mark.parametrize("size", [1002, 999], ids=["even", "odd"])
def test_long_runs_of_sizes_that_are_not_whole_words(tun: Tun, size: int) -> None:
    segments = flow(30, size=size)
    frames = tun.write(segments)
    assert len(frames) == 1 and frames[0][0][3] == size
    assert segment(frames[0][1], frames[0][0][1], size) == segments
    broken = bytearray(segments[7])
    broken[-1] ^= 0x10
    packets = [*segments[:7], bytes(broken), *segments[8:]]
    frames = tun.write(packets)
    assert [len(segment(p, h[1], size)) if h[1] else 0 for h, p in frames] == [7] + [0] * 23


# ------------------------------------------------------------------ the writer itself


def test_add_is_the_pending_lists_append() -> None:
    assert "add" in TunWriter.__slots__
    writer = TunWriter(-1, PathCounters())
    assert writer.add.__self__ is writer._pending  # type: ignore[attr-defined]


def test_memoryviews_are_written_as_bytes_are(tun: Tun) -> None:
    packets = [*flow(30), *flow(3, v6=True), *flow(2, size=999)]
    expected = tun.write(packets)
    assert tun.write([memoryview(p) for p in packets]) == expected
    assert _shape(expected) == [30, 3, 2]


def test_an_exception_in_flush_leaves_nothing_pending(
    tun: Tun, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int, buffers: Any) -> int:
        raise RuntimeError("not an OSError")

    with monkeypatch.context() as m:
        m.setattr("os.writev", broken)
        for p in flow(3):
            tun.writer.add(p)
        with pytest.raises(RuntimeError):
            tun.writer.flush()
    segments = flow(2, seq=9000)
    frames = tun.write(segments)  # only what was added since
    assert _shape(frames) == [2] and _unrolled(frames) == segments
