"""From [p2s] to what the IKE engine negotiates with remote clients: one gateway SessionConfig.

Every client shares it: remote_id %any, the gateway's certificate as our credential, the
client CAs (with the revocation list) for certificate clients, the users file for
EAP-MSCHAPv2 clients, the pools as address provider. One Child SA ("p2s") whose gateway
side is the pushed routes and whose client side the engine narrows to the virtual IP(s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509

from gatewayd.config import Config, P2s
from gatewayd.ikeconf import REKEY_MARGIN, Credentials, ike_identity
from ike.auth.certs import TrustStore, load_certificates
from ike.auth.identity import Identity as IkeIdentity
from ike.constants import ProtocolId
from ike.crypto.proposals import parse_proposals
from ike.p2s.cp import PoolProvider
from ike.p2s.pool import AddressPool
from ike.session import ChildConfig, SessionConfig
from ike.session.config import RetransmitPolicy
from ike.session.ts import any_selectors, from_network

P2S_SESSION = "%p2s"  # the SessionConfig name: never a site's (site names have no '%')
P2S_CHILD = "p2s"


class RevocationHook:
    """The revocation predicate given to the trust store; reload swaps the list inside,
    so sessions already negotiating see the new list too."""

    def __init__(self, revoked: Any = None) -> None:
        self.revoked = revoked  # gatewayd.p2s.revocation.RevocationList or None

    def __call__(self, cert: x509.Certificate) -> bool:
        return self.revoked is not None and bool(self.revoked.is_revoked(cert))


class ClientTrust:
    """The client CAs, remembering the end-entity certificate of the last validation.

    The engine validates a client's chain and emits IkeSaUp within one synchronous call;
    the runner takes the certificate right then, to re-check it against the revocation
    list on reload.
    """

    def __init__(self, store: TrustStore) -> None:
        self.store = store
        self.last: x509.Certificate | None = None

    def validate(
        self,
        end_entity: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        now: datetime,
    ) -> list[x509.Certificate]:
        self.last = None
        path = self.store.validate(end_entity, intermediates, now)
        self.last = end_entity
        return path

    def take_last(self) -> x509.Certificate | None:
        cert, self.last = self.last, None
        return cert

    def __getattr__(self, name: str) -> Any:  # certreq_payload, cas, ...
        return getattr(self.store, name)


def client_trust(p2s: P2s, hook: RevocationHook) -> ClientTrust | None:
    if "certificate" not in p2s.auth:
        return None  # certificate clients are then refused: "no trust anchors"
    cas = [c for path in p2s.client_ca for c in load_certificates(path)]
    try:
        store = TrustStore(cas, revoked=hook)
    except TypeError:  # pragma: no cover - an engine without the revocation hook
        store = TrustStore(cas)
    return ClientTrust(store)


def make_pools(p2s: P2s) -> list[AddressPool]:
    """One pool per address family; max_clients is enforced per session by the runner."""
    pools = []
    for version in (4, 6):
        nets = [n for n in p2s.address_pool if n.version == version]
        if nets:
            pools.append(AddressPool(nets, lease_time=float(p2s.lease_hold)))
    return pools


def child_config(config: Config) -> ChildConfig:
    p2s = config.p2s
    assert p2s is not None
    routes = config.p2s_routes()
    local = tuple(from_network(n) for n in routes) or any_selectors()
    remote = tuple(from_network(n) for n in p2s.address_pool)
    esp = tuple(parse_proposals(p2s.esp_proposals, ProtocolId.ESP))
    return ChildConfig(P2S_CHILD, local, remote, esp)


def session_config(
    config: Config,
    creds: Credentials,
    provider: PoolProvider,
    trust: ClientTrust | None,
    eap_users: Callable[[str], bytes | None] | None,
    eap_backend: Callable[[Any], Any] | None = None,
) -> SessionConfig:
    p2s = config.p2s
    assert p2s is not None
    gw = config.gateway
    return SessionConfig(
        name=P2S_SESSION,
        local_id=ike_identity(gw.identity),
        remote_id=IkeIdentity.ANY,
        ike_proposals=parse_proposals(p2s.ike_proposals, ProtocolId.IKE),
        children=[child_config(config)],
        private_key=creds.private_key,
        certificates=creds.certificates,
        trust=trust,
        remote_auth="pubkey",  # a client's AUTH is a signature; EAP clients send none
        rekey_margin=REKEY_MARGIN,
        dpd_interval=float(max(1, p2s.dpd_timeout // 3)),
        retransmit=RetransmitPolicy(give_up=float(p2s.dpd_timeout)),
        fragment_size=gw.fragment_size,
        nat_t_port=gw.nat_t_port,
        address_provider=provider,
        eap_users=eap_users,
        eap_backend=eap_backend,
        initial_contact=False,  # we never initiate to a client
    )
