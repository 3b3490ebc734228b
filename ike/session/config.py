"""What an IKE session needs to know about its peer: identities, credentials, proposals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ike.auth.identity import Identity
from ike.payloads import Proposal, TrafficSelector


@dataclass(frozen=True)
class RetransmitPolicy:
    """Exponential back-off: timeout * base**n, until give_up seconds after the first send."""

    timeout: float = 2.0
    base: float = 1.8
    give_up: float = 45.0


@dataclass(frozen=True)
class ChildConfig:
    """One Child SA to negotiate: its selectors (ours / the peer's) and ESP proposals."""

    name: str
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    esp_proposals: tuple[Proposal, ...]


@dataclass
class SessionConfig:
    """Everything one IKE SA is negotiated from. Built by the daemon from the site config."""

    name: str
    local_id: Identity
    remote_id: Identity  # may be the wildcard (%any)
    ike_proposals: list[Proposal]
    children: list[ChildConfig]
    # Credentials: a PSK, or a private key with our chain and the trust store for the peer.
    psk: bytes | None = None
    private_key: Any = None
    certificates: list[Any] = field(
        default_factory=list
    )  # our end entity first, then intermediates
    trust: Any = None  # ike.auth.certs.TrustStore
    remote_auth: str = "psk"  # how the peer must authenticate: "psk" or "pubkey"
    ike_lifetime: float = 28800.0
    child_lifetime: float = 27000.0
    child_lifetime_bytes: int | None = None
    rekey_margin: float = 0.1  # rekey this fraction before the hard lifetime
    jitter: float = 0.05  # randomise soft lifetimes by up to this fraction
    dpd_interval: float = 30.0  # seconds of silence before a liveness check
    retransmit: RetransmitPolicy = field(default_factory=RetransmitPolicy)
    fragment_size: int = 1280  # fragment our protected messages above this (RFC 7383)
    nat_t_port: int = 4500
    force_udp_encap: bool = False  # carry ESP in UDP even without a NAT (fake NAT-D)
    # Announce GATEWAYD_VENDOR_ID in IKE_SA_INIT and, as responder, carry ESP in UDP
    # (fake NAT-D) when the initiator announced it too: between two gatewayd, ESP in UDP
    # is the fast path (UDP GSO/GRO); every other peer sees an unknown Vendor ID only.
    udp_encap_with_gatewayd: bool = False
    initial_contact: bool = True
    # MOBIKE (RFC 4555): offer MOBIKE_SUPPORTED and follow UPDATE_SA_ADDRESSES (roaming).
    mobike: bool = True
    max_init_retries: int = 5  # INVALID_KE and COOKIE rounds before giving up
    # Remote access (RFC 7296 §2.19). Gateway: an ike.p2s.cp.AddressProvider answering
    # CFG_REQUEST. Client: the address families (4, 6) to ask a virtual IP for.
    address_provider: Any = None
    request_virtual_ip: tuple[int, ...] = ()
    # EAP-MSCHAPv2 in IKE_AUTH (RFC 7296 §2.16). Gateway: user name -> NT hash, None if
    # unknown; peers that send no AUTH payload then authenticate with EAP. Client: our login.
    eap_users: Callable[[str], bytes | None] | None = None
    # Gateway, instead of eap_users: makes the EAP backend (ike.eap.method.EapBackend) of
    # one session, e.g. ike.eap.method.RelayEapBackend for RADIUS. Given the IkeSession.
    eap_backend: Callable[[Any], Any] | None = None
    eap_identity: str | None = None
    eap_password: str | None = None

    def __repr__(self) -> str:  # credentials never appear in logs
        return (
            f"SessionConfig(name={self.name!r}, local_id={self.local_id}, "
            f"remote_id={self.remote_id})"
        )
