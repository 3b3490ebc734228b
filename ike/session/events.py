"""Events an IkeSession hands to the daemon: what the data path and status need."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ike.payloads import TrafficSelector

Address = tuple[str, int]


@dataclass(frozen=True)
class ChildSaInfo:
    """A negotiated Child SA: everything the ESP data path needs to install it."""

    child_id: int  # stable id within the session
    name: str  # the ChildConfig it came from
    spi_in: int
    spi_out: int
    encr_id: int
    encr_key_bits: int | None
    integ_id: int
    encr_key_in: bytes = field(repr=False)  # key material never appears in reprs
    integ_key_in: bytes = field(repr=False)
    encr_key_out: bytes = field(repr=False)
    integ_key_out: bytes = field(repr=False)
    esn: bool
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    proposal: str  # e.g. "AES_GCM_16_256/NO_EXT_SEQ"
    udp_encap: bool
    local_addr: Address
    remote_addr: Address
    lifetime_soft: float  # seconds after establishment
    lifetime_hard: float
    lifetime_bytes: int | None
    established_at: float


@dataclass(frozen=True)
class IkeSaUp:
    spi_i: bytes
    spi_r: bytes
    initiator: bool
    proposal: str
    local_addr: Address
    remote_addr: Address
    remote_id: str
    nat_local: bool  # we are behind a NAT
    nat_remote: bool  # the peer is behind a NAT
    established_at: float
    initial_contact: bool = False  # the peer says it has no other SA with us (drop stale ones)


@dataclass(frozen=True)
class IkeSaRekeyed:
    old_spi_i: bytes
    old_spi_r: bytes
    spi_i: bytes
    spi_r: bytes
    proposal: str


@dataclass(frozen=True)
class IkeSaDown:
    spi_i: bytes
    spi_r: bytes
    reason: str  # "deleted by peer", "deleted", "peer dead", "auth failed", "expired", ...


@dataclass(frozen=True)
class ChildSaUp:
    child: ChildSaInfo


@dataclass(frozen=True)
class ChildSaRekeyed:
    """Make-before-break: install new inbound now, switch outbound, old goes at ChildSaDown."""

    old_child_id: int
    child: ChildSaInfo
    outbound_now: bool = True  # False: keep sending on the old SA until its ChildSaDown


@dataclass(frozen=True)
class ChildSaDown:
    child_id: int
    spi_in: int
    spi_out: int
    reason: str
    successor: int | None = None  # child that takes over outbound traffic, if any


@dataclass(frozen=True)
class ChildSaFailed:
    """A Child SA could not be created (the IKE SA may well stay up)."""

    name: str
    reason: str


@dataclass(frozen=True)
class AuthFailed:
    reason: str


@dataclass(frozen=True)
class NegotiationFailed:
    """No proposal, INVALID_KE loop, unacceptable selectors, ...; reason names both offers."""

    reason: str


@dataclass(frozen=True)
class PeerDead:
    reason: str = "no answer to retransmitted request"


@dataclass(frozen=True)
class VirtualIpAssigned:
    """A virtual IP for a remote-access client: given by the gateway or received by a client."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    identity: str = ""  # the client (on the gateway: the pool key to release) or the gateway
    dns: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    subnets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True)
class VirtualIpFailed:
    """No virtual IP (pool exhausted, INTERNAL_ADDRESS_FAILURE): no Child SA in IKE_AUTH."""

    identity: str
    reason: str


@dataclass(frozen=True)
class PeerAddressChanged:
    """MOBIKE (RFC 4555): the IKE SA now runs between new addresses. The responder emits
    it after an authenticated UPDATE_SA_ADDRESSES, the initiator once its update is
    answered. Move the session's outbound ESP SAs to ``new``: in UDP (port ``new[1]``)
    when ``udp``, else plain ESP. Inbound SAs are found by SPI and need no change."""

    old: Address
    new: Address
    udp: bool


@dataclass(frozen=True)
class EapPending:
    """The gateway's EAP backend needs an outside server (RADIUS): relay ``eap_message``
    and give the server's answer to ``IkeSession.eap_answer`` (ike.radius.relay does)."""

    eap_message: bytes = field(repr=False)
    identity: str  # the client's EAP identity (RADIUS User-Name)
    remote_addr: Address  # the client (Calling-Station-Id)
    local_addr: Address  # ours (Called-Station-Id)
    context: bytes = field(default=b"", repr=False)  # server state to echo (RADIUS State)


Event = (
    IkeSaUp
    | IkeSaRekeyed
    | IkeSaDown
    | ChildSaUp
    | ChildSaRekeyed
    | ChildSaDown
    | ChildSaFailed
    | AuthFailed
    | NegotiationFailed
    | PeerDead
    | VirtualIpAssigned
    | VirtualIpFailed
    | EapPending
    | PeerAddressChanged
)
