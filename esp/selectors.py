"""Traffic selectors enforced on inner packets (RFC 4301 §4.4.1, RFC 7296 §3.13.1).

Addresses are packed bytes (4 bytes for IPv4, 16 for IPv6): same-length big-endian bytes
compare like the numbers they encode, so a range check is two memcmp calls and needs no
int conversion per packet.

Ports are ints; -1 stands for "not available" (a protocol without ports, or a non-first
fragment: RFC 4301 OPAQUE). A selector whose port range is ANY (0..65535) matches -1 too,
a narrower range does not, and an OPAQUE selector (RFC 7296: start 65535, end 0) matches
only -1. For ICMP and ICMPv6 the "port" is type << 8 | code (RFC 7296 §3.13.1), used for
both the source and the destination check.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

IPPROTO_ANY = 0
_PORTS_ANY = (0, 0xFFFF)
_PORTS_OPAQUE = (0xFFFF, 0)

_ICMP = 1
_ICMPV6 = 58
# Protocols whose first 4 header bytes are source and destination port.
_PORT_PROTOS = frozenset({6, 17, 33, 132, 136})  # TCP, UDP, DCCP, SCTP, UDP-Lite
# IPv6 extension headers we walk over (the fragment header is handled apart).
_EXT_OPTS = frozenset({0, 43, 60})  # Hop-by-Hop, Routing, Destination Options
_EXT_FRAGMENT = 44
_EXT_AH = 51
_MAX_EXT_HEADERS = 8  # bound the walk: a longer chain is not worth parsing, drop it
_MEMO_MAX = 256  # flows remembered per selector set (SelectorSet.allows_packet)

_U16 = struct.Struct("!H")
_PORTS = struct.Struct("!HH")

AddressLike = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address
Fields = tuple[bytes, bytes, int, int, int]  # src, dst, proto, sport, dport


def _packed(addr: AddressLike) -> bytes:
    if isinstance(addr, bytes):
        if len(addr) not in (4, 16):
            raise ValueError(f"packed address must be 4 or 16 bytes, not {len(addr)}")
        return addr
    if isinstance(addr, str):
        return ipaddress.ip_address(addr).packed
    return addr.packed


@dataclass(frozen=True, slots=True)
class Selector:
    """One address range, an IP protocol (0 = any) and one port range, for one side."""

    start: bytes
    end: bytes
    proto: int = IPPROTO_ANY
    start_port: int = 0
    end_port: int = 0xFFFF
    # Derived bounds for the per-packet check (see the module docstring).
    _port_lo: int = field(init=False, repr=False, compare=False)
    _port_hi: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.start) not in (4, 16) or len(self.start) != len(self.end):
            raise ValueError("selector addresses must both be IPv4 or both IPv6")
        if self.start > self.end:
            raise ValueError("selector start address is above its end address")
        if not 0 <= self.proto <= 255:
            raise ValueError(f"IP protocol {self.proto} out of range")
        ports = (self.start_port, self.end_port)
        if not (0 <= self.start_port <= 0xFFFF and 0 <= self.end_port <= 0xFFFF):
            raise ValueError("selector ports out of range")
        if ports == _PORTS_ANY:
            lo, hi = -1, 0xFFFF
        elif ports == _PORTS_OPAQUE:
            lo, hi = -1, -1
        elif self.start_port <= self.end_port:
            lo, hi = ports
        else:
            raise ValueError("selector start port is above its end port")
        object.__setattr__(self, "_port_lo", lo)
        object.__setattr__(self, "_port_hi", hi)

    @classmethod
    def from_ts(
        cls,
        start_addr: AddressLike,
        end_addr: AddressLike,
        ip_protocol: int = IPPROTO_ANY,
        start_port: int = 0,
        end_port: int = 0xFFFF,
    ) -> Selector:
        """From the fields of an IKEv2 traffic selector (RFC 7296 §3.13.1), as plain values."""
        return cls(_packed(start_addr), _packed(end_addr), ip_protocol, start_port, end_port)

    @classmethod
    def from_network(
        cls, network: str, proto: int = IPPROTO_ANY, ports: tuple[int, int] = _PORTS_ANY
    ) -> Selector:
        """From CIDR notation, e.g. ``Selector.from_network("10.0.0.0/8", 6, (443, 443))``."""
        net = ipaddress.ip_network(network, strict=False)
        return cls(
            net.network_address.packed, net.broadcast_address.packed, proto, ports[0], ports[1]
        )

    @property
    def is_v6(self) -> bool:
        return len(self.start) == 16

    @property
    def is_any(self) -> bool:
        """Whole address family, any protocol, any port."""
        n = len(self.start)
        return (
            self.start == bytes(n)
            and self.end == b"\xff" * n
            and self.proto == IPPROTO_ANY
            and self._port_lo == -1
            and self._port_hi == 0xFFFF
        )

    def matches(self, addr: bytes, proto: int, port: int) -> bool:
        return (
            len(addr) == len(self.start)
            and self.start <= addr <= self.end
            and (self.proto == IPPROTO_ANY or self.proto == proto)
            and self._port_lo <= port <= self._port_hi
        )


_Bound = tuple[bytes, bytes, int, int, int]  # start, end, proto, port_lo, port_hi


def _bounds(selectors: Iterable[Selector], v6: bool) -> tuple[_Bound, ...]:
    return tuple(
        (s.start, s.end, s.proto, s._port_lo, s._port_hi) for s in selectors if s.is_v6 == v6
    )


def _any_match(bounds: tuple[_Bound, ...], addr: bytes, proto: int, port: int) -> bool:
    for start, end, sproto, lo, hi in bounds:
        if start <= addr <= end and (sproto == 0 or sproto == proto) and lo <= port <= hi:
            return True
    return False


class SelectorSet:
    """Source and destination selectors of one SA direction; traffic is the cross product.

    Build with inbound()/outbound() to get the direction right: on an inbound SA the inner
    source must be in the peer's selectors and the destination in ours.
    """

    __slots__ = ("_all4", "_all6", "_dst4", "_dst6", "_memo", "_src4", "_src6", "dst", "src")

    def __init__(self, src: Iterable[Selector], dst: Iterable[Selector]) -> None:
        self.src = tuple(src)
        self.dst = tuple(dst)
        self._src4 = _bounds(self.src, v6=False)
        self._src6 = _bounds(self.src, v6=True)
        self._dst4 = _bounds(self.dst, v6=False)
        self._dst6 = _bounds(self.dst, v6=True)
        # Route-based (0.0.0.0/0 <-> 0.0.0.0/0) sets skip all parsing per family.
        self._all4 = _covers_family(self.src, False) and _covers_family(self.dst, False)
        self._all6 = _covers_family(self.src, True) and _covers_family(self.dst, True)
        # allows_packet's answers for recent port-carrying flows, keyed by the header bytes
        # that decide them (addresses and ports) with the protocol kept in the value. A bulk
        # flow then costs a slice and a dict probe per packet instead of a parse. Bounded:
        # a peer that sends many flows only makes it start over.
        self._memo: dict[bytes, tuple[int, bool]] = {}

    @classmethod
    def inbound(cls, local: Iterable[Selector], remote: Iterable[Selector]) -> SelectorSet:
        return cls(src=remote, dst=local)

    @classmethod
    def outbound(cls, local: Iterable[Selector], remote: Iterable[Selector]) -> SelectorSet:
        return cls(src=local, dst=remote)

    @classmethod
    def any(cls) -> SelectorSet:
        every = (Selector(bytes(4), b"\xff" * 4), Selector(bytes(16), b"\xff" * 16))
        return cls(every, every)

    def allows(self, src: bytes, dst: bytes, proto: int, sport: int, dport: int) -> bool:
        if len(src) == 4:
            if self._all4:
                return len(dst) == 4
            src_b, dst_b = self._src4, self._dst4
        elif len(src) == 16:
            if self._all6:
                return len(dst) == 16
            src_b, dst_b = self._src6, self._dst6
        else:
            return False
        if len(dst) != len(src):
            return False
        return _any_match(src_b, src, proto, sport) and _any_match(dst_b, dst, proto, dport)

    def allows_packet(self, packet: bytes | bytearray | memoryview) -> bool:
        """Check an inner IP packet; False for anything that does not parse."""
        n = len(packet)
        if not n:
            return False
        first = packet[0]
        version = first >> 4
        key = None
        if version == 4:
            if self._all4:
                return True
            # No options, not a later fragment, TCP/UDP/...: bytes 12..24 are addresses
            # and ports, all that decides (with the protocol).
            if first == 0x45 and n >= 24 and not (packet[6] & 0x1F or packet[7]):
                proto = packet[9]
                if proto in _PORT_PROTOS:
                    key = bytes(packet[12:24])
        elif version == 6:
            if self._all6:
                return True
            proto = packet[6]
            if n >= 44 and proto in _PORT_PROTOS:  # no extension headers
                key = bytes(packet[8:44])
        memo = self._memo
        if key is not None:
            hit = memo.get(key)
            if hit is not None and hit[0] == proto:
                return hit[1]
        fields = inner_addresses(packet)
        allowed = fields is not None and self.allows(*fields)
        if key is not None:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[key] = (proto, allowed)
        return allowed

    def __repr__(self) -> str:
        return f"SelectorSet(src={list(self.src)!r}, dst={list(self.dst)!r})"


def _covers_family(selectors: tuple[Selector, ...], v6: bool) -> bool:
    return any(s.is_v6 == v6 and s.is_any for s in selectors)


def inner_addresses(packet: bytes | bytearray | memoryview) -> Fields | None:
    """(src, dst, proto, sport, dport) of an IPv4/IPv6 packet; None if it does not parse."""
    n = len(packet)
    if not n:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or n < ihl:
            return None
        proto = packet[9]
        src, dst = bytes(packet[12:16]), bytes(packet[16:20])
        first_fragment = not _U16.unpack_from(packet, 6)[0] & 0x1FFF
        off = ihl
    elif version == 6:
        if n < 40:
            return None
        src, dst = bytes(packet[8:24]), bytes(packet[24:40])
        proto = packet[6]
        off = 40
        first_fragment = True
        for _ in range(_MAX_EXT_HEADERS + 1):  # +1: the last round meets the upper layer
            if proto in _EXT_OPTS:
                if n < off + 2:
                    return None
                proto, off = packet[off], off + (packet[off + 1] + 1) * 8
            elif proto == _EXT_FRAGMENT:
                if n < off + 8:
                    return None
                if _U16.unpack_from(packet, off + 2)[0] >> 3:
                    first_fragment = False
                proto, off = packet[off], off + 8
            elif proto == _EXT_AH:
                if n < off + 2:
                    return None
                proto, off = packet[off], off + (packet[off + 1] + 2) * 4
            else:
                break
        else:
            return None
    else:
        return None
    return (src, dst, proto, *_ports(packet, n, off, proto, first_fragment))


def _ports(
    packet: bytes | bytearray | memoryview, n: int, off: int, proto: int, first_fragment: bool
) -> tuple[int, int]:
    if not first_fragment:
        return -1, -1
    if proto in _PORT_PROTOS:
        if n < off + 4:
            return -1, -1
        sport, dport = _PORTS.unpack_from(packet, off)
        return sport, dport
    if proto in (_ICMP, _ICMPV6):
        if n < off + 2:
            return -1, -1
        type_code = _U16.unpack_from(packet, off)[0]
        return type_code, type_code
    return -1, -1
