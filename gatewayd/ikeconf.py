"""From the validated config to what the IKE engine negotiates: one SessionConfig per site.

Route-based sites negotiate one Child SA ("net") with 0.0.0.0/0 and ::/0 selectors: the
route table decides what enters it. Policy-based sites negotiate one Child SA per
(local network, site network) pair of the same family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from esp.selectors import Selector
from gatewayd.config import Config, Gateway, Site
from ike.auth.certs import TrustStore, load_certificates, load_private_key
from ike.auth.identity import Identity as IkeIdentity
from ike.constants import ProtocolId
from ike.crypto.proposals import parse_proposals
from ike.session import ChildConfig, SessionConfig
from ike.session.config import RetransmitPolicy
from ike.session.ts import any_selectors, from_network

ROUTE_BASED_CHILD = "net"
REKEY_MARGIN = 0.1  # rekey at 90% of a lifetime; the config's lifetime is the hard limit


@dataclass
class Credentials:
    """The gateway's certificate chain, key and trust anchors, loaded once per config."""

    private_key: Any = None
    certificates: list[Any] = field(default_factory=list)
    trust: TrustStore | None = None

    @classmethod
    def load(cls, gw: Gateway) -> Credentials:
        creds = cls()
        if gw.certificate and gw.private_key:
            creds.certificates = load_certificates(gw.certificate)
            creds.private_key = load_private_key(gw.private_key)
        cas = [c for path in gw.ca for c in load_certificates(path)]
        if cas:
            creds.trust = TrustStore(cas)
        return creds


def ike_identity(identity: Any) -> IkeIdentity:
    """gatewayd.config.Identity -> the engine's Identity."""
    return IkeIdentity(*identity.ike_id())


def pair_child_name(local: str, remote: str) -> str:
    return f"{local}={remote}"


def child_configs(site: Site, gw: Gateway) -> list[ChildConfig]:
    esp = tuple(parse_proposals(site.esp_proposals, ProtocolId.ESP))
    if not site.policy_based_traffic_selectors:
        return [ChildConfig(ROUTE_BASED_CHILD, any_selectors(), any_selectors(), esp)]
    return [
        ChildConfig(
            pair_child_name(str(local), str(remote)),
            (from_network(local),),
            (from_network(remote),),
            esp,
        )
        for local in gw.networks
        for remote in site.networks
        if local.version == remote.version
    ]


def session_config(config: Config, site: Site, creds: Credentials) -> SessionConfig:
    gw = config.gateway
    return SessionConfig(
        name=site.name,
        local_id=ike_identity(gw.identity),
        remote_id=ike_identity(site.identity),  # the loader requires an id for %any
        ike_proposals=parse_proposals(site.ike_proposals, ProtocolId.IKE),
        children=child_configs(site, gw),
        psk=config.psk(site) if site.auth == "psk" else None,
        private_key=creds.private_key if site.auth == "pubkey" else None,
        certificates=creds.certificates if site.auth == "pubkey" else [],
        trust=creds.trust,
        remote_auth=site.auth,
        ike_lifetime=float(site.ike_lifetime),
        child_lifetime=float(site.child_lifetime),
        child_lifetime_bytes=site.child_lifetime_kb * 1024,
        rekey_margin=REKEY_MARGIN,
        dpd_interval=float(site.dpd_interval or max(1, site.dpd_timeout // 3)),
        retransmit=RetransmitPolicy(give_up=float(site.dpd_timeout)),
        fragment_size=site.fragment_size or gw.fragment_size,
        nat_t_port=gw.nat_t_port,
        force_udp_encap=site.encapsulation == "udp",
        udp_encap_with_gatewayd=site.encapsulation == "auto",
    )


def site_source_selectors(site: Site) -> list[Selector]:
    """What inner source addresses a site may send us: its networks (anti-spoofing)."""
    return [Selector.from_network(str(net)) for net in site.networks]
