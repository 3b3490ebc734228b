"""Traffic selectors: matching, inner header parsing, the inbound direction rule."""

from __future__ import annotations

import ipaddress

import pytest

from esp.selectors import Selector, SelectorSet, inner_addresses
from tests.esp.packets import (
    ext_fragment,
    ext_opts,
    icmp,
    ipv4,
    ipv6,
    tcp,
    udp,
)


def a(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def parsed(packet: bytes) -> tuple[bytes, bytes, int, int, int]:
    fields = inner_addresses(packet)
    assert fields is not None
    return fields


# Selector


def test_from_network_and_from_ts_agree() -> None:
    s1 = Selector.from_network("10.1.0.0/16", 6, (80, 443))
    s2 = Selector.from_ts("10.1.0.0", "10.1.255.255", 6, 80, 443)
    s3 = Selector.from_ts(a("10.1.0.0"), ipaddress.ip_address("10.1.255.255"), 6, 80, 443)
    assert s1 == s2 == s3
    assert not s1.is_v6
    assert Selector.from_network("2001:db8::/32").is_v6


@pytest.mark.parametrize(
    "args",
    [
        ("10.0.0.1", "2001:db8::1", 0, 0, 65535),  # mixed families
        ("10.0.0.9", "10.0.0.1", 0, 0, 65535),  # start above end
        ("10.0.0.1", "10.0.0.9", 256, 0, 65535),  # protocol
        ("10.0.0.1", "10.0.0.9", 6, 0, 65536),  # port range
        ("10.0.0.1", "10.0.0.9", 6, 500, 400),  # start port above end (not OPAQUE)
    ],
)
def test_invalid_selectors_rejected(args: tuple[str, str, int, int, int]) -> None:
    with pytest.raises(ValueError):
        Selector.from_ts(*args)


def test_bad_packed_length_rejected() -> None:
    with pytest.raises(ValueError):
        Selector.from_ts(b"\x01\x02\x03", b"\x01\x02\x04")


def test_address_range_is_inclusive() -> None:
    s = Selector.from_ts("10.0.0.10", "10.0.0.20")
    assert s.matches(a("10.0.0.10"), 17, 53)
    assert s.matches(a("10.0.0.20"), 17, 53)
    assert not s.matches(a("10.0.0.9"), 17, 53)
    assert not s.matches(a("10.0.0.21"), 17, 53)
    assert not s.matches(a("::ffff:10.0.0.15"), 17, 53)  # other family


def test_range_not_aligned_to_a_prefix() -> None:
    s = Selector.from_ts("10.0.0.250", "10.0.1.3")
    assert s.matches(a("10.0.0.255"), 0, -1)
    assert s.matches(a("10.0.1.0"), 0, -1)
    assert not s.matches(a("10.0.1.4"), 0, -1)


def test_protocol_and_ports() -> None:
    s = Selector.from_network("0.0.0.0/0", 6, (443, 443))
    assert s.matches(a("1.2.3.4"), 6, 443)
    assert not s.matches(a("1.2.3.4"), 17, 443)
    assert not s.matches(a("1.2.3.4"), 6, 444)
    assert not s.matches(a("1.2.3.4"), 6, -1)  # ports unknown: a narrow range can't match


def test_any_port_matches_unknown_ports_and_opaque_only_unknown() -> None:
    any_port = Selector.from_network("10.0.0.0/8")
    assert any_port.matches(a("10.1.1.1"), 47, -1)
    opaque = Selector.from_ts("10.0.0.0", "10.255.255.255", 17, 65535, 0)
    assert opaque.matches(a("10.1.1.1"), 17, -1)
    assert not opaque.matches(a("10.1.1.1"), 17, 53)


def test_is_any() -> None:
    assert Selector.from_network("0.0.0.0/0").is_any
    assert Selector.from_network("::/0").is_any
    assert not Selector.from_network("0.0.0.0/1").is_any
    assert not Selector.from_network("0.0.0.0/0", 6).is_any
    assert not Selector.from_network("0.0.0.0/0", 0, (1, 65535)).is_any


# inner_addresses


def test_ipv4_udp_tcp_icmp() -> None:
    assert inner_addresses(ipv4("10.0.0.1", "10.0.0.2", 17, udp(53, 1024))) == (
        a("10.0.0.1"), a("10.0.0.2"), 17, 53, 1024,
    )  # fmt: skip
    assert parsed(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(80, 9999)))[2:] == (6, 80, 9999)
    echo = inner_addresses(ipv4("10.0.0.1", "10.0.0.2", 1, icmp(8, 0)))
    assert echo is not None and echo[2:] == (1, 8 << 8, 8 << 8)


def test_ipv4_with_options() -> None:
    packet = ipv4("10.0.0.1", "10.0.0.2", 17, udp(7, 9), options=bytes(8))
    assert inner_addresses(packet) == (a("10.0.0.1"), a("10.0.0.2"), 17, 7, 9)


def test_ipv4_non_first_fragment_has_no_ports() -> None:
    packet = ipv4("10.0.0.1", "10.0.0.2", 17, bytes(16), frag_offset=100)
    assert inner_addresses(packet) == (a("10.0.0.1"), a("10.0.0.2"), 17, -1, -1)
    first = ipv4("10.0.0.1", "10.0.0.2", 17, udp(5, 6), more_fragments=True)
    assert parsed(first)[3:] == (5, 6)


def test_protocol_without_ports() -> None:
    assert parsed(ipv4("10.0.0.1", "10.0.0.2", 47, bytes(8)))[3:] == (-1, -1)


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45" + bytes(18),  # shorter than 20
        b"\x44" + bytes(30),  # IHL 4
        b"\x4f" + bytes(30),  # IHL 15 but only 31 bytes
        b"\x60" + bytes(38),  # IPv6 shorter than 40
        b"\x50" + bytes(60),  # version 5
    ],
)
def test_unparseable_packets(packet: bytes) -> None:
    assert inner_addresses(packet) is None


def test_truncated_transport_header_gives_no_ports() -> None:
    packet = ipv4("10.0.0.1", "10.0.0.2", 6, b"\x00\x50")
    assert parsed(packet)[3:] == (-1, -1)


def test_ipv6_udp_and_icmpv6() -> None:
    packet = ipv6("2001:db8::1", "2001:db8::2", 17, udp(500, 4500))
    assert inner_addresses(packet) == (a("2001:db8::1"), a("2001:db8::2"), 17, 500, 4500)
    echo = inner_addresses(ipv6("2001:db8::1", "2001:db8::2", 58, icmp(128, 0)))
    assert echo is not None and echo[2:] == (58, 128 << 8, 128 << 8)


def test_ipv6_walks_extension_headers() -> None:
    ext = ext_opts(60) + ext_opts(6, units=2)  # Hop-by-Hop -> Destination Options -> TCP
    packet = ipv6("2001:db8::1", "2001:db8::2", 0, tcp(1234, 22), ext=ext)
    assert parsed(packet)[2:] == (6, 1234, 22)


def test_ipv6_fragments() -> None:
    first = ipv6("::1", "::2", 44, udp(1, 2), ext=ext_fragment(17, 0, more=True))
    assert parsed(first)[2:] == (17, 1, 2)
    later = ipv6("::1", "::2", 44, bytes(16), ext=ext_fragment(17, 185))
    assert parsed(later)[2:] == (17, -1, -1)


def test_ipv6_extension_chain_is_bounded() -> None:
    eight = b"".join(ext_opts(60) for _ in range(7)) + ext_opts(17)
    ok = ipv6("::1", "::2", 60, udp(1, 2), ext=eight)
    assert parsed(ok)[2:] == (17, 1, 2)
    nine = ext_opts(60) + eight
    assert inner_addresses(ipv6("::1", "::2", 60, udp(1, 2), ext=nine)) is None


def test_ipv6_truncated_extension_header() -> None:
    packet = ipv6("::1", "::2", 0, b"", ext=b"\x06")  # one byte of a Hop-by-Hop header
    assert inner_addresses(packet) is None


# SelectorSet

LOCAL = [Selector.from_network("10.2.0.0/16")]
REMOTE = [Selector.from_network("10.1.0.0/16"), Selector.from_network("192.168.5.0/24")]


def test_inbound_direction_source_is_remote_destination_is_local() -> None:
    sel = SelectorSet.inbound(local=LOCAL, remote=REMOTE)
    assert sel.allows_packet(ipv4("10.1.3.4", "10.2.0.9", 17, udp(1, 2)))
    assert sel.allows_packet(ipv4("192.168.5.7", "10.2.0.9", 6, tcp(1, 2)))
    assert not sel.allows_packet(ipv4("10.2.0.9", "10.1.3.4", 17, udp(1, 2)))  # reversed
    assert not sel.allows_packet(ipv4("10.1.3.4", "10.3.0.9", 17, udp(1, 2)))  # dst out
    assert not sel.allows_packet(ipv4("10.9.3.4", "10.2.0.9", 17, udp(1, 2)))  # src out


def test_outbound_direction() -> None:
    sel = SelectorSet.outbound(local=LOCAL, remote=REMOTE)
    assert sel.allows_packet(ipv4("10.2.0.9", "10.1.3.4", 17, udp(1, 2)))
    assert not sel.allows_packet(ipv4("10.1.3.4", "10.2.0.9", 17, udp(1, 2)))


def test_ports_apply_to_their_own_side() -> None:
    # Peer's web server: remote TS says TCP 443, ours says TCP any port.
    sel = SelectorSet.inbound(
        local=[Selector.from_network("10.2.0.0/16", 6)],
        remote=[Selector.from_network("10.1.0.1/32", 6, (443, 443))],
    )
    assert sel.allows_packet(ipv4("10.1.0.1", "10.2.0.1", 6, tcp(443, 50000)))
    assert not sel.allows_packet(ipv4("10.1.0.1", "10.2.0.1", 6, tcp(50000, 443)))
    assert not sel.allows_packet(ipv4("10.1.0.1", "10.2.0.1", 17, udp(443, 50000)))
    # A later fragment carries no ports: a narrow port selector cannot admit it.
    frag = ipv4("10.1.0.1", "10.2.0.1", 6, bytes(24), frag_offset=3)
    assert not sel.allows_packet(frag)


def test_ipv6_selectors() -> None:
    sel = SelectorSet.inbound(
        local=[Selector.from_network("2001:db8:2::/48")],
        remote=[Selector.from_network("2001:db8:1::/48", 17, (53, 53))],
    )
    assert sel.allows_packet(ipv6("2001:db8:1::5", "2001:db8:2::7", 17, udp(53, 3333)))
    assert not sel.allows_packet(ipv6("2001:db8:1::5", "2001:db8:2::7", 17, udp(54, 3333)))
    assert not sel.allows_packet(ipv6("2001:db8:3::5", "2001:db8:2::7", 17, udp(53, 3333)))
    assert not sel.allows_packet(ipv4("10.1.0.1", "10.2.0.1", 17, udp(53, 3333)))


def test_route_based_any_short_circuits_per_family() -> None:
    every_v4 = [Selector.from_network("0.0.0.0/0")]
    v4_only = SelectorSet(every_v4, every_v4)
    assert v4_only._all4 and not v4_only._all6
    assert v4_only.allows_packet(ipv4("1.2.3.4", "5.6.7.8", 17, udp(1, 2)))
    assert v4_only.allows_packet(b"\x45")  # the flag skips parsing entirely
    assert not v4_only.allows_packet(ipv6("::1", "::2", 17, udp(1, 2)))
    both = SelectorSet.any()
    assert both.allows_packet(ipv6("::1", "::2", 17, udp(1, 2)))
    assert both.allows(a("::1"), a("::2"), 17, 1, 2)
    assert not both.allows(a("::1"), a("1.2.3.4"), 17, 1, 2)  # mixed lengths


def test_any_on_one_side_only_still_checks_the_other() -> None:
    sel = SelectorSet([Selector.from_network("0.0.0.0/0")], [Selector.from_network("10.0.0.0/8")])
    assert not sel._all4
    assert sel.allows_packet(ipv4("8.8.8.8", "10.0.0.1", 17, udp(1, 2)))
    assert not sel.allows_packet(ipv4("8.8.8.8", "11.0.0.1", 17, udp(1, 2)))


def test_garbage_is_not_allowed() -> None:
    sel = SelectorSet.inbound(local=LOCAL, remote=REMOTE)
    assert not sel.allows_packet(b"")
    assert not sel.allows_packet(b"\x45\x00")
    assert not sel.allows_packet(b"\x70" * 40)
    assert not sel.allows(b"\x01\x02", b"\x01\x02", 17, 1, 2)


def test_empty_set_allows_nothing() -> None:
    sel = SelectorSet([], [])
    assert not sel.allows_packet(ipv4("10.1.0.1", "10.2.0.1", 17, udp(1, 2)))


# allows_packet's memo of recent flows


def _memo_set() -> SelectorSet:
    local = [Selector.from_network("10.1.0.0/24", 6, (80, 80)), Selector.from_network("fd01::/64")]
    remote = [Selector.from_network("10.2.0.0/24"), Selector.from_network("fd02::/64", 17)]
    return SelectorSet.outbound(local, remote)


def test_memo_answers_exactly_like_a_parse() -> None:
    """Remembered flows answer as the parse does, also for the same addresses and ports
    under another protocol, later fragments and ICMP (which are never remembered)."""
    import random

    rng = random.Random(7)
    sel = _memo_set()
    fresh = _memo_set()
    for _ in range(3000):
        v6 = rng.random() < 0.4
        proto = rng.choice([6, 17, 1, 58, 50])
        ports = udp(rng.choice([80, 81]), rng.choice([80, 443]))
        if v6:
            src = rng.choice(["fd01::5", "fd03::5"])
            packet = ipv6(src, rng.choice(["fd02::7", "fd09::7"]), proto, ports)
        else:
            packet = ipv4(
                rng.choice(["10.1.0.5", "10.3.0.5"]),
                rng.choice(["10.2.0.7", "10.9.0.7"]),
                proto,
                ports,
                frag_offset=rng.choice([0, 0, 0, 8]),
            )
        fields = inner_addresses(packet)
        expected = fields is not None and fresh.allows(*fields)
        assert sel.allows_packet(packet) is expected
        assert sel.allows_packet(memoryview(packet)) is expected


def test_memo_is_bounded() -> None:
    from esp.selectors import _MEMO_MAX

    sel = _memo_set()
    for port in range(3 * _MEMO_MAX):
        assert sel.allows_packet(ipv4("10.1.0.5", "10.2.0.7", 6, udp(80, port)))
        assert not sel.allows_packet(ipv4("10.1.0.5", "10.2.0.7", 6, udp(81, port)))
        assert len(sel._memo) <= _MEMO_MAX
