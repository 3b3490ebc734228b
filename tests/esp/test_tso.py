"""esp.tso: software TCP segmentation and checksums, against scapy's packets."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("scapy")

from scapy.compat import raw
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from esp.csum import checksum
from esp.tso import (
    GSO_ECN,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    SegmentError,
    complete_csum,
    segment,
)


def reference(ip: object, seq: int, flags: str, payload: bytes, mss: int) -> list[bytes]:
    """What the kernel's TSO would send: scapy builds and checksums each segment."""
    out = []
    chunks = [payload[i : i + mss] for i in range(0, len(payload), mss)] or [b""]
    for i, chunk in enumerate(chunks):
        f = flags
        if i != len(chunks) - 1:
            f = f.replace("F", "").replace("P", "")
        if i:
            f = f.replace("C", "")
        hdr = ip.copy()  # type: ignore[attr-defined]
        if isinstance(hdr, IP):
            hdr.id = (ip.id + i) & 0xFFFF  # type: ignore[attr-defined]
        opts = [("MSS", 1400), ("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]
        tcp = TCP(sport=40000, dport=5201, seq=(seq + i * mss) & 0xFFFFFFFF, flags=f, options=opts)
        out.append(bytes(raw(hdr / tcp / chunk)))
    return out


def super_packet(ip: object, seq: int, flags: str, payload: bytes) -> bytes:
    opts = [("MSS", 1400), ("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]
    tcp = TCP(sport=40000, dport=5201, seq=seq, flags=flags, options=opts, chksum=0x1234)
    data = bytearray(raw(ip / tcp / payload))  # type: ignore[operator]
    return bytes(data)


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 4000, 4001, 65000 - 60])
@pytest.mark.parametrize("flags", ["A", "PA", "FPA", "CA", "CFPA"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_segments_match_the_kernels(size: int, flags: str, v6: bool) -> None:
    payload = os.urandom(size)
    if v6:
        ip: object = IPv6(src="fd01::5", dst="fd02::7", hlim=63)
        gso = GSO_TCPV6
    else:
        ip = IP(src="10.1.0.5", dst="10.2.0.7", id=0xFFFE, flags="DF", ttl=63)
        gso = GSO_TCPV4
    seq = 0xFFFFF000  # wraps inside the packet
    mss = 1000
    got = segment(super_packet(ip, seq, flags, payload), gso, mss)
    want = reference(ip, seq, flags, payload, mss)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g == w


def test_ecn_bit_and_ip_options() -> None:
    from scapy.layers.inet import IPOption_NOP

    ip = IP(src="10.1.0.5", dst="10.2.0.7", id=7, options=[IPOption_NOP()] * 4)
    payload = os.urandom(2500)
    got = segment(super_packet(ip, 1, "CA", payload), GSO_TCPV4 | GSO_ECN, 1200)
    assert got == reference(ip, 1, "CA", payload, 1200)


def test_refuses_what_it_cannot_segment() -> None:
    v4 = super_packet(IP(src="10.0.0.1", dst="10.0.0.2"), 1, "A", b"x" * 100)
    with pytest.raises(SegmentError):
        segment(v4, GSO_UDP, 50)
    with pytest.raises(SegmentError):
        segment(v4, GSO_TCPV6, 50)
    with pytest.raises(SegmentError):
        segment(v4[:30], GSO_TCPV4, 50)
    with pytest.raises(SegmentError):
        segment(v4, GSO_TCPV4, 0)


def test_complete_csum_matches_scapy() -> None:
    for size in (0, 1, 2, 1399, 1400):
        pkt = IP(src="10.1.0.5", dst="10.2.0.7") / TCP(sport=1, dport=2) / os.urandom(size)
        want = bytes(raw(pkt))
        # As the kernel hands it over: the pseudo-header sum (length included) in place.
        partial = bytearray(want)
        tcp_len = len(want) - 20
        pseudo = int.from_bytes(partial[12:20], "big") + 6 + tcp_len
        s = pseudo % 0xFFFF or 0xFFFF
        partial[36:38] = s.to_bytes(2, "big")
        complete_csum(partial, 20, 16)
        assert bytes(partial) == want


def test_checksum_edges() -> None:
    assert checksum(0xFFFF) == 0  # a sum of 0xFFFF gives checksum 0
    assert checksum(0) == 0
    assert checksum(0x1234) == 0xFFFF - 0x1234


@pytest.mark.parametrize("mss", [1001, 1448, 8])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_many_segments_of_any_size(mss: int, v6: bool) -> None:
    """Odd sizes take the one-at-a-time path, even ones from 8 segments the numpy one."""
    payload = os.urandom(20 * mss + 3)
    if v6:
        ip: object = IPv6(src="fd01::5", dst="fd02::7", hlim=63)
    else:
        ip = IP(src="10.1.0.5", dst="10.2.0.7", id=0xFFF0, flags="DF", ttl=63)
    gso = GSO_TCPV6 if v6 else GSO_TCPV4
    got = segment(super_packet(ip, 0xFFFFFF00, "CFPA", payload), gso, mss)
    assert got == reference(ip, 0xFFFFFF00, "CFPA", payload, mss)


def test_numpy_and_one_at_a_time_headers_agree() -> None:
    """The two header builders, on the same super-packets (random headers and sizes)."""
    import random

    from esp import tso

    rng = random.Random(5)
    for _ in range(200):
        mss = rng.randrange(2, 1500, 2)
        count = rng.randrange(tso._VECTOR_MIN, 50)
        payload = os.urandom(mss * (count - 1) + rng.randrange(1, mss + 1))
        ip = IP(src="10.1.0.5", dst="10.2.0.7", id=rng.randrange(65536), tos=rng.randrange(256))
        flags = rng.choice(["A", "PA", "FPA", "CA", "CFPA", "EA"])
        packet = super_packet(ip, rng.randrange(1 << 32), flags, payload)
        vector = tso.segment_headers(packet, GSO_TCPV4, mss).headers
        original = tso._VECTOR_MIN
        tso._VECTOR_MIN = 10**9
        try:
            scalar = tso.segment_headers(packet, GSO_TCPV4, mss).headers
        finally:
            tso._VECTOR_MIN = original
        assert vector == scalar
