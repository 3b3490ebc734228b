"""One negotiated Child SA as the data path holds it: the ESP SAs of both directions, the
route-table key it serves, and what status reports about it."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from esp.datapath import Transport
from esp.sa import EspParams, InboundSa, OutboundSa
from esp.selectors import Selector, SelectorSet
from ike.payloads import TrafficSelector
from ike.session.events import ChildSaInfo

SOFT_BYTES_FRACTION = 0.9  # ask for a rekey at 90% of child_lifetime_kb

Address = tuple[str, int]


class EspSockets(Protocol):
    """The sockets an outbound SA may send on (gatewayd.netio.Endpoints has them)."""

    @property
    def nat_t(self) -> Any: ...  # UDP nat_t_port: ESP in UDP

    @property
    def esp(self) -> Any: ...  # raw IP protocol 50: plain ESP


def transport_to(sockets: EspSockets, remote: Address, udp: bool) -> Transport:
    """Where ESP for a peer at ``remote`` goes: in UDP to its port, or plain ESP."""
    if udp:
        return Transport(sockets.nat_t, (remote[0], remote[1]), udp=True)
    return Transport(sockets.esp, (remote[0], 0), udp=False)


def selector(ts: TrafficSelector) -> Selector:
    return Selector.from_ts(ts.start_addr, ts.end_addr, ts.ip_protocol, ts.start_port, ts.end_port)


def ts_text(ts: TrafficSelector) -> str:
    """A selector as a prefix when it is one (the usual case), else as a range."""
    start, end = ts.start_addr, ts.end_addr
    try:
        nets = list(ipaddress.summarize_address_range(start, end))
    except (TypeError, ValueError):
        nets = []
    text = str(nets[0]) if len(nets) == 1 else f"{start}-{end}"
    if ts.ip_protocol:
        text += f"[{ts.ip_protocol}/{ts.start_port}-{ts.end_port}]"
    return text


def esp_params(info: ChildSaInfo, inbound: bool) -> EspParams:
    soft = int(info.lifetime_bytes * SOFT_BYTES_FRACTION) if info.lifetime_bytes else None
    return EspParams(
        spi=info.spi_in if inbound else info.spi_out,
        encr_id=info.encr_id,  # type: ignore[arg-type]
        encr_key=info.encr_key_in if inbound else info.encr_key_out,
        integ_id=info.integ_id,  # type: ignore[arg-type]
        integ_key=info.integ_key_in if inbound else info.integ_key_out,
        esn=info.esn,
        soft_bytes=soft,
    )


@dataclass(eq=False)
class ChildRecord:
    """A Child SA installed in the SA table. ``eligible``: may carry outbound traffic
    (false for an SA being replaced, until make-before-break hands over)."""

    session: Any  # ike.session.IkeSession
    info: ChildSaInfo
    key: tuple[str, str]  # (site, child name): the route table's target
    inbound: InboundSa
    outbound: OutboundSa
    eligible: bool = True
    seen_packets_in: int = 0
    rekey_requested: bool = False
    created_mono: float = field(default_factory=time.monotonic)

    @classmethod
    def build(
        cls,
        session: Any,
        info: ChildSaInfo,
        site: str,
        transport: Transport,
        replay_window: int,
        inbound_sources: list[Selector] | None,
    ) -> ChildRecord:
        """inbound_sources: restricts inner sources beyond the selectors (a route-based
        site may only send from its own networks); None keeps the selectors alone."""
        local = [selector(t) for t in info.local_ts]
        remote = [selector(t) for t in info.remote_ts]
        inbound = InboundSa(
            esp_params(info, inbound=True),
            replay_window,
            SelectorSet.inbound(local, inbound_sources if inbound_sources is not None else remote),
        )
        outbound = OutboundSa(
            esp_params(info, inbound=False),
            SelectorSet.outbound(local, remote),
            transport=transport,
        )
        return cls(session, info, (site, info.name), inbound, outbound)

    @property
    def transport(self) -> Transport:
        t: Transport = self.outbound.transport  # type: ignore[assignment]
        return t

    @property
    def child_id(self) -> int:
        return self.info.child_id

    def over_hard_bytes(self) -> bool:
        limit = self.info.lifetime_bytes
        return bool(limit) and max(self.inbound.bytes, self.outbound.bytes) >= limit  # type: ignore[operator]

    def status(self, now: float) -> dict[str, Any]:
        info = self.info
        drops = {k.value: v for k, v in self.inbound.drops.items() if v}
        if self.outbound.selector_drops:
            drops["selector_out"] = self.outbound.selector_drops
        transport = self.transport
        return {
            "name": info.name,
            "spi_in": f"{info.spi_in:08x}",
            "spi_out": f"{info.spi_out:08x}",
            "proposal": info.proposal,
            "local_ts": [ts_text(t) for t in info.local_ts],
            "remote_ts": [ts_text(t) for t in info.remote_ts],
            "bytes_in": self.inbound.bytes,
            "bytes_out": self.outbound.bytes,
            "packets_in": self.inbound.packets,
            "packets_out": self.outbound.packets,
            "established_s": round(max(0.0, now - info.established_at), 1),
            "encap": transport.label,
            "remote": f"{transport.addr[0]}:{transport.addr[1]}"
            if transport.udp
            else transport.addr[0],
            "active": self.eligible,
            "drops": drops,
        }


def retarget(
    records: Iterable[ChildRecord], sockets: EspSockets, remote: Address, udp: bool
) -> list[ChildRecord]:
    """MOBIKE moved the peer (ike.session.events.PeerAddressChanged): send each record's
    outbound ESP to ``remote``, in UDP or as plain ESP. One reference swap per SA, which
    the packet thread picks up with its next packet: the same OutboundSa keeps its
    sequence numbers and counters, and inbound SAs (found by SPI, from any source) stay.
    Returns the records moved."""
    transport = transport_to(sockets, remote, udp)
    moved = []
    for rec in records:
        rec.outbound.transport = transport
        rec.info = replace(rec.info, remote_addr=(remote[0], remote[1]), udp_encap=udp)
        moved.append(rec)
    return moved
