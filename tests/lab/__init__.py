"""The namespace lab: hosts as network namespaces, strongSwan peers, traffic helpers.

Typical use (pytest, with ``tests.lab.plugin`` loaded)::

    def test_tunnel(lab):
        topo = lab.site_to_site()
        a, b = topo["a"], topo["b"]
        for me, peer in ((a, b), (b, a)):
            sw = lab.strongswan(me.gw)
            conn, secret = psk_site_to_site(me, peer, "secret")
            sw.connections.append(conn); sw.secrets.append(secret); sw.start()
        ...

Outside pytest: ``with Lab() as lab: ...`` does the same and cleans up on exit.
See README.md in this folder for the address plan and the pitfalls.
"""

from .capture import Capture, Datagram, read_udp
from .certs import CertFiles, make_ca, make_cert
from .gatewayd import Gatewayd, GatewaydError, VnetPair, start_vnet_pair
from .lab import Lab
from .netns import DEFAULT_PREFIX, Netns, NetnsError, cleanup_stale, list_namespaces, veth
from .presets import psk_site_to_site
from .requires import require_root, require_root_and_strongswan, require_tools
from .sas import ChildSa, IkeSa, parse_list_sas
from .strongswan import DEFAULT_LOG_LEVELS, KEYMAT_LOG_LEVELS, StrongSwan, StrongSwanError
from .swanctl_conf import Auth, Child, Connection, Secret
from .topology import Site, Topology, hub_and_spokes, site_to_site
from .traffic import PingResult, iperf3, ping, tcp_transfer, wait_ping

__all__ = [
    "DEFAULT_LOG_LEVELS",
    "DEFAULT_PREFIX",
    "KEYMAT_LOG_LEVELS",
    "Auth",
    "Capture",
    "CertFiles",
    "Child",
    "ChildSa",
    "Connection",
    "Datagram",
    "Gatewayd",
    "GatewaydError",
    "IkeSa",
    "Lab",
    "Netns",
    "NetnsError",
    "PingResult",
    "Secret",
    "Site",
    "StrongSwan",
    "StrongSwanError",
    "Topology",
    "VnetPair",
    "cleanup_stale",
    "hub_and_spokes",
    "iperf3",
    "list_namespaces",
    "make_ca",
    "make_cert",
    "parse_list_sas",
    "ping",
    "psk_site_to_site",
    "read_udp",
    "require_root",
    "require_root_and_strongswan",
    "require_tools",
    "site_to_site",
    "start_vnet_pair",
    "tcp_transfer",
    "veth",
    "wait_ping",
]
