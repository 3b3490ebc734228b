"""The gateway's own IKE and ESP packets never enter the tunnel, even when a site's
networks cover the peer's public address (issue 3, route table engine).

Site "b" on gateway A lists B's whole WAN subnet (which holds B's public address) as
one of its networks, so A's table 2000 routes B's public address into the TUN device.
Without the fwmark bypass, A's ESP to B would loop into its own tunnel and the tunnel
would die; with it, the tunnel stays up and even carries traffic *to* B's public address.
"""

from __future__ import annotations

import ipaddress
import time

import pytest

from tests.lab import Lab, ping, require_root
from tests.lab.gatewayd import configure_vnet_pair

pytestmark = pytest.mark.netns


def test_site_network_covering_the_peer_address_does_not_capture_ike_or_esp(
    tmp_path: object,
) -> None:
    require_root()
    with Lab() as lab:
        topo = lab.site_to_site(ipv6=False)
        a, b = topo["a"], topo["b"]
        b_wan = str(ipaddress.ip_network(f"{b.public_v4}/24", strict=False))
        pair = configure_vnet_pair(lab.gatewayd, topo)
        gw_a, gw_b = pair.gw["a"], pair.gw["b"]
        gw_a.sites[0]["networks"] = [b.lan_net_v4, b_wan]
        gw_b.gateway["networks"] = [b.lan_net_v4, b_wan]
        for gw in (gw_b, gw_a):
            gw.start()
        pair.wait_up()
        assert b_wan in gw_a.route_prefixes(), gw_a.kernel_routes()

        # The tunnel keeps working well past a DPD round and a rekey: the gateway's own
        # packets to b's address took the bypass, not the TUN device.
        ike_before, _ = pair.agreed_spis() or ((None, None), None)
        gw_a.ctl("rekey", "b")
        time.sleep(2)
        assert ping(a.lan, b.lan_host_v4, count=5, interval=0.1).loss == 0
        # LAN traffic to b's public address is the site's traffic: it crosses the tunnel.
        child_before = gw_a.site("b")["child_sas"][-1]["packets_out"]
        assert ping(a.lan, b.public_v4, count=3, interval=0.1).loss == 0
        child_after = gw_a.site("b")["child_sas"][-1]["packets_out"]
        assert child_after - child_before >= 3
        status = gw_a.site("b")
        assert status["state"] == "established"
        assert (status["ike_sa"]["spi_i"], status["ike_sa"]["spi_r"]) == ike_before
        assert gw_a.status()["datapath"]["path"]["send_errors"] == 0
