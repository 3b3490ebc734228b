"""Traffic selectors: construction and narrowing (RFC 7296 §2.9)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ike.constants import TsType
from ike.payloads import IPAddress, TrafficSelector

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def from_network(
    net: Network | str, protocol: int = 0, ports: tuple[int, int] = (0, 65535)
) -> TrafficSelector:
    net = ipaddress.ip_network(net) if isinstance(net, str) else net
    ts_type = TsType.TS_IPV4_ADDR_RANGE if net.version == 4 else TsType.TS_IPV6_ADDR_RANGE
    return TrafficSelector(
        ts_type, protocol, ports[0], ports[1], net.network_address, net.broadcast_address
    )


def any_selectors() -> tuple[TrafficSelector, ...]:
    """0.0.0.0/0 and ::/0: a route-based tunnel, where the route table decides."""
    return (from_network("0.0.0.0/0"), from_network("::/0"))


def _intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    if a.ts_type != b.ts_type:
        return None
    if a.ip_protocol and b.ip_protocol and a.ip_protocol != b.ip_protocol:
        return None
    start_port, end_port = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    # Only "<" on addresses: the others are slow total_ordering wrappers (a set-up's hot path).
    start: IPAddress = b.start_addr if a.start_addr < b.start_addr else a.start_addr  # type: ignore[operator]
    end: IPAddress = b.end_addr if b.end_addr < a.end_addr else a.end_addr  # type: ignore[operator]
    if start_port > end_port or end < start:  # type: ignore[operator]
        return None
    return TrafficSelector(
        a.ts_type, a.ip_protocol or b.ip_protocol, start_port, end_port, start, end
    )


def narrow(
    proposed: Iterable[TrafficSelector], allowed: Iterable[TrafficSelector]
) -> list[TrafficSelector]:
    """The parts of the peer's proposal that our configuration allows, without duplicates."""
    allowed = list(allowed)
    result: list[TrafficSelector] = []
    for p in proposed:
        for a in allowed:
            ts = _intersect(p, a)
            if ts is not None and ts not in result:
                result.append(ts)
    return result


def _covered(ts: TrafficSelector, by: Iterable[TrafficSelector]) -> bool:
    return any(_intersect(ts, b) == ts for b in by)


def is_narrowing_of(answer: Iterable[TrafficSelector], proposed: Iterable[TrafficSelector]) -> bool:
    """True when every selector of the responder's answer lies inside what we proposed."""
    proposed = list(proposed)
    answer = list(answer)
    return bool(answer) and all(_covered(ts, proposed) for ts in answer)


def describe(selectors: Iterable[TrafficSelector]) -> list[str]:
    """'10.1.0.0/16' where the range is a prefix, 'a-b' otherwise; protocol/ports if narrowed."""
    out = []
    for ts in selectors:
        nets = list(ipaddress.summarize_address_range(ts.start_addr, ts.end_addr))
        text = str(nets[0]) if len(nets) == 1 else f"{ts.start_addr}-{ts.end_addr}"
        if ts.ip_protocol or (ts.start_port, ts.end_port) != (0, 65535):
            ports = (
                ""
                if (ts.start_port, ts.end_port) == (0, 65535)
                else f"/{ts.start_port}-{ts.end_port}"
            )
            text += f"[{ts.ip_protocol}{ports}]"
        out.append(text)
    return out
