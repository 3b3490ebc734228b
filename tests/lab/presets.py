"""Ready-made strongSwan descriptions for the common lab shapes."""

from __future__ import annotations

from typing import Any

from .swanctl_conf import Auth, Child, Connection, Secret
from .topology import Site


def psk_site_to_site(
    local: Site,
    remote: Site,
    psk: str,
    *,
    name: str | None = None,
    child: str = "net",
    ike_proposals: list[str] | None = None,
    esp_proposals: list[str] | None = None,
    ipv6_lans: bool = True,
    **conn_kw: Any,
) -> tuple[Connection, Secret]:
    """``local``'s side of a PSK tunnel between the two sites' LANs.

    Identities are the gateways' own WAN addresses (private ones behind a NAT, which is
    what strongSwan sends by default); the peer is reached at its public address.
    Extra keyword arguments go to ``Connection`` (``dpd_delay``, ``rekey_time``, ...).
    """
    lts = [local.lan_net_v4] + ([local.lan_net_v6] if ipv6_lans and local.lan_net_v6 else [])
    rts = [remote.lan_net_v4] + ([remote.lan_net_v6] if ipv6_lans and remote.lan_net_v6 else [])
    conn = Connection(
        name=name or f"{local.name}-{remote.name}",
        local_addrs=[local.gw_wan_v4],
        remote_addrs=[remote.public_v4],
        local=Auth("psk", id=local.gw_wan_v4),
        remote=Auth("psk", id=remote.gw_wan_v4),
        children=[Child(child, lts, rts, esp_proposals=esp_proposals or ["aes256gcm16"])],
        **conn_kw,
    )
    if ike_proposals:
        conn.proposals = ike_proposals
    secret = Secret("ike", secret=psk, ids=[local.gw_wan_v4, remote.gw_wan_v4])
    return conn, secret
