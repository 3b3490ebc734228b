"""The strongSwan pair: charon-systemd with kernel-libipsec in each gateway namespace."""

from __future__ import annotations

from typing import Any

from bench.machine import package_version
from bench.pairs import Pair
from tests.lab import Lab, psk_site_to_site
from tests.lab.strongswan import StrongSwan
from tests.lab.topology import Topology

PSK = "bench-datapath-psk-5b0e7c29a1d4"


class StrongSwanPair(Pair):
    """strongSwan 5.9.8 with kernel-libipsec (userspace ESP, always in UDP), aes256gcm16
    for IKE (with PRF SHA-256, ECP-256) and ESP."""

    key, label = "strongswan", "strongSwan"

    def __init__(self, lab: Lab, topo: Topology) -> None:
        super().__init__(lab, topo)
        self.peers: dict[str, StrongSwan] = {}

    def start(self) -> None:
        for me, peer in (("a", "b"), ("b", "a")):
            sw = self.lab.strongswan(self.topo[me].gw, f"bench-strongswan-{me}")
            conn, secret = psk_site_to_site(
                self.topo[me], self.topo[peer], PSK, ipv6_lans=False,
                ike_proposals=["aes256gcm16-prfsha256-ecp256"], esp_proposals=["aes256gcm16"],
            )  # fmt: skip
            sw.connections.append(conn)
            sw.secrets.append(secret)
            self.peers[me] = sw
            sw.start()
        self.peers["a"].initiate("net")
        self.peers["b"].wait_established("b-a", "net")
        self.wait_pings()

    def pids(self) -> list[int]:
        return [sw.proc.pid for sw in self.peers.values() if sw.proc is not None]

    def tunnel_interface(self, site: str) -> str | None:
        return "ipsec0"  # kernel-libipsec's TUN device

    def details(self) -> dict[str, Any]:
        return {"version": package_version("charon-systemd")}

    def stop(self) -> None:
        for sw in self.peers.values():
            sw.stop(timeout=5)
