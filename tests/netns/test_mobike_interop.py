"""MOBIKE (RFC 4555) with a real strongSwan 5.9.8 that changes its address (issue 6).

``a-lan -- a-gw [strongSwan, two uplinks] == wan -- b-gw [gatewayd] -- b-lan``

1. A site: strongSwan in site a's gateway has two links to the WAN router, its usual
   one (192.0.2.1) and a second one (198.18.77.1, a lower-priority default route).
   gatewayd knows the peer only by identity (``address = "%any"``). Once the tunnel
   carries a LAN ping, the first address is deleted: charon's kernel monitor sees it
   go and moves the IKE SA with UPDATE_SA_ADDRESSES (``mobike = yes``; nothing is asked
   of swanctl). Both sides must still hold the same IKE SA (SPIs unchanged), gatewayd's
   status must show the new remote address, its log the move, and the ping must go on
   with at most a few replies lost.
2. A road warrior of the hub's [p2s] (certificate, virtual IP) does the same: same IKE
   SA, same virtual IP, still listed once, traffic goes on.
3. A NAT in front of strongSwan changes its public address. gatewayd, a MOBIKE
   responder, does not follow by itself; strongSwan finds the new mapping with NAT
   detection in its liveness check (which gatewayd answers, RFC 4555 §3.8) and sends
   the update.

The Child SA: gatewayd moves it in place (same SPIs, same sequence numbers; the
``peer_address_changed`` event lists it). strongSwan's kernel-libipsec cannot update an
installed SA's addresses (its update_sa answers NOT_SUPPORTED), so charon rekeys each
Child SA right after the move; gatewayd must follow that make-before-break rekey, and
both sides must then agree on the successor's SPIs. With a data path that can update
SAs (the kernel's), charon would keep the Child SPIs too.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.lab import Lab, Site, require_root_and_strongswan
from tests.lab.gatewayd import Gatewayd, prepare_gateway_host
from tests.lab.multisite import BackgroundPing
from tests.lab.netns import Netns, veth
from tests.lab.roadwarrior import p2s_lab, use_certificate
from tests.lab.strongswan import StrongSwan
from tests.lab.swanctl_conf import Auth, Child, Connection, Secret
from tests.lab.topology import Topology
from tests.lab.traffic import ping, wait_ping

pytestmark = pytest.mark.netns

PSK = "gatewayd-mobike-interop-psk-1d9c"
ROAMER_ID = "roamer.example.org"
CONN, CHILD = "roam", "net"
SECOND_NET = "198.18.77"  # the roamer's second uplink: router .254, roamer .1
MAX_LOST = 3  # pings lost around the move, at most (one every 0.2 s)


def add_uplink(topo: Topology, site: Site) -> None:
    """A second link from the site's gateway to the WAN router, with a default route
    that only wins once the first address (and its default route) is gone."""
    assert topo.wan is not None
    veth(
        topo.wan, site.gw, a_ifname=f"{site.name}2", b_ifname="wan2",
        a_addrs=[f"{SECOND_NET}.254/24"], b_addrs=[f"{SECOND_NET}.1/24"],
    )  # fmt: skip
    site.gw.ip("route", "add", "default", "via", f"{SECOND_NET}.254", "metric", "100")


def drop_first_address(site: Site) -> None:
    """Take the address in use away: charon notices and roams by itself."""
    site.gw.ip("addr", "del", f"{site.gw_wan_v4}/24", "dev", site.gw_wan_if)


def roamer_and_gateway(
    lab: Lab, a: Site, b: Site, *, dpd_delay: int = 30
) -> tuple[StrongSwan, Gatewayd]:
    """strongSwan in a.gw (MOBIKE on, any local address) and gatewayd in b.gw knowing it
    only by identity; both started, the tunnel up."""
    sw = lab.strongswan(a.gw, "roamer")
    sw.connections.append(
        Connection(
            CONN,
            ["%any"],  # any local address: the one in use may go away
            [b.public_v4],
            local=Auth("psk", id=ROAMER_ID),
            remote=Auth("psk", id=b.gw_wan_v4),
            children=[Child(CHILD, [a.lan_net_v4], [b.lan_net_v4])],
            mobike=True,
            dpd_delay=dpd_delay,
        )
    )
    sw.secrets.append(Secret("ike", secret=PSK, ids=[ROAMER_ID, b.gw_wan_v4]))
    prepare_gateway_host(b.gw)
    gw = lab.gatewayd(b.gw)
    gw.gateway = {"name": "b", "address": b.gw_wan_v4, "networks": [b.lan_net_v4]}
    gw.sites = [
        {
            "name": "roamer",
            "address": "%any",
            "id": ROAMER_ID,
            "mode": "responder_only",
            "networks": [a.lan_net_v4],
            "psk": PSK,
        }
    ]
    gw.start()
    sw.start()
    sw.initiate(CHILD)
    return sw, gw


def test_strongswan_roams_to_second_address_and_keeps_its_sas(lab: Lab) -> None:
    require_root_and_strongswan()
    topo = lab.site_to_site(ipv6=False)
    a, b = topo["a"], topo["b"]
    add_uplink(topo, a)
    sw, gw = roamer_and_gateway(lab, a, b)
    site = gw.wait_established("roamer")
    wait_ping(a.lan, b.lan_host_v4, timeout=15)

    before_sw = sw.wait_established(CONN, CHILD)
    before_gw = gw.site("roamer")
    ike = before_gw["ike_sa"]
    assert ike["remote"].startswith(f"{a.gw_wan_v4}:"), ike
    assert ike["mobike"] is True, ike
    assert (ike["spi_i"], ike["spi_r"]) == (before_sw.spi_i, before_sw.spi_r)
    children_sw = {(c.spi_in, c.spi_out) for c in before_sw.children if c.state == "INSTALLED"}
    children_gw = {(c["spi_in"], c["spi_out"]) for c in before_gw["child_sas"]}
    assert children_gw == {(o, i) for i, o in children_sw}, (children_gw, children_sw)
    assert site["ike_sa"]["remote"].endswith(":4500")  # charon floated for MOBIKE
    sw.wait_for_log(r"peer supports MOBIKE", timeout=1)

    mark = gw.mark()
    with BackgroundPing(a.lan, b.lan_host_v4, interval=0.2) as bg:
        time.sleep(1.5)
        drop_first_address(a)
        moved = gw.wait_event("peer_address_changed", since=mark, timeout=30, site="roamer")
        time.sleep(3)  # pings keep going over the new path
        bg.stop()
    print(f"roaming site: {bg.lost} of {bg.sent} pings lost")
    assert bg.sent >= 15, bg.output
    assert bg.lost <= MAX_LOST, f"{bg.lost} of {bg.sent} lost: {bg.missed_lines()}"

    assert moved["old"].startswith(f"{a.gw_wan_v4}:"), moved
    assert moved["new"].startswith(f"{SECOND_NET}.1:"), moved
    assert (moved["spi_i"], moved["spi_r"]) == (ike["spi_i"], ike["spi_r"])
    assert sorted(moved["child_sas"]) == sorted(f"{i}/{o}" for i, o in children_gw)

    after_gw = gw.site("roamer")
    after_sw = sw.wait_established(CONN, CHILD)
    assert after_gw["state"] == "established"
    assert after_gw["ike_sa"]["remote"].startswith(f"{SECOND_NET}.1:"), after_gw["ike_sa"]
    assert (after_gw["ike_sa"]["spi_i"], after_gw["ike_sa"]["spi_r"]) == (
        ike["spi_i"],
        ike["spi_r"],
    )
    assert (after_sw.spi_i, after_sw.spi_r) == (before_sw.spi_i, before_sw.spi_r)
    assert after_sw.local_host == f"{SECOND_NET}.1", after_sw
    # charon (kernel-libipsec) replaces the moved Child SA by a rekey; gatewayd follows.
    sw.wait_for_log(r"local endpoint changed from .* to " + SECOND_NET.replace(".", r"\."))
    rekeyed = gw.wait_event("child_sa_rekeyed", since=mark, timeout=15, site="roamer")
    assert (rekeyed["old_spi_in"], rekeyed["old_spi_out"]) in children_gw, rekeyed
    gw.wait_event("child_sa_down", since=mark, reason="rekeyed by peer", timeout=15)
    successor = (rekeyed["spi_in"], rekeyed["spi_out"])
    deadline = time.monotonic() + 15
    while True:
        after_gw = gw.site("roamer")
        after_sw = sw.wait_established(CONN, CHILD)
        ours = {(c["spi_in"], c["spi_out"]) for c in after_gw["child_sas"]}
        theirs = {(c.spi_out, c.spi_in) for c in after_sw.children if c.state == "INSTALLED"}
        if ours == theirs == {successor} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ours == theirs == {successor}, (ours, theirs, successor)
    for child in after_gw["child_sas"]:
        assert child["remote"].split(":")[0] == f"{SECOND_NET}.1", child
        assert child["encap"] == "udp", child  # kernel-libipsec: ESP in UDP, always
    # No new IKE SA was made for the move, and traffic still flows both ways.
    assert not gw.find_events("ike_sa_up", since=mark)
    assert after_gw["ike_sas"] == 1
    wait_ping(b.lan, a.lan_host_v4, timeout=5)


def test_roadwarrior_moves_and_keeps_its_sa_and_virtual_ip(lab: Lab, tmp_path: Path) -> None:
    """A P2S client (certificate, virtual IP from the pool) changes its address."""
    require_root_and_strongswan()
    p2s = p2s_lab(lab, tmp_path / "p2s", clients=1)
    hub = p2s.hub_site
    rw = p2s.clients[0]
    add_uplink(p2s.topo, rw.site)
    use_certificate(rw, p2s, "mover")
    conn = rw.sw.connections[0]
    conn.mobike = True
    conn.local_addrs = ["%any"]
    rw.sw.load_all()
    rw.connect()
    before = p2s.wait_clients({rw.identity})[rw.identity]
    (vip,) = before["virtual_ips"]
    assert rw.virtual_ips() == [vip]
    assert before["remote"].startswith(f"{rw.site.gw_wan_v4}:"), before
    wait_ping(rw.ns, hub.lan_host_v4, timeout=15)
    before_sw = rw.sw.wait_established("rw", "rw")

    mark = p2s.hub.mark()
    with BackgroundPing(rw.ns, hub.lan_host_v4, interval=0.2) as bg:
        time.sleep(1.5)
        drop_first_address(rw.site)
        moved = p2s.hub.wait_event("p2s_client_moved", since=mark, timeout=30)
        time.sleep(3)
        bg.stop()
    print(f"roaming client: {bg.lost} of {bg.sent} pings lost")
    assert bg.sent >= 15, bg.output
    assert bg.lost <= MAX_LOST, f"{bg.lost} of {bg.sent} lost: {bg.missed_lines()}"
    assert moved["new"].startswith(f"{SECOND_NET}.1:"), moved

    after = p2s.connected()[rw.identity]
    assert after["remote"].startswith(f"{SECOND_NET}.1:"), after
    assert (after["ike_spi_i"], after["ike_spi_r"]) == (before["ike_spi_i"], before["ike_spi_r"])
    assert after["virtual_ips"] == [vip] and rw.virtual_ips() == [vip]
    after_sw = rw.sw.wait_established("rw", "rw")
    assert (after_sw.spi_i, after_sw.spi_r) == (before_sw.spi_i, before_sw.spi_r)
    assert after_sw.local_host == f"{SECOND_NET}.1", after_sw
    assert len(p2s.connected()) == 1
    wait_ping(rw.ns, hub.lan_host_v4, timeout=5)
    wait_ping(hub.lan, vip, timeout=5)  # and the network reaches the client's address


NAT_NEW_PUBLIC = "192.0.2.3"  # the NAT's second public address, in site a's WAN /24


def change_nat_mapping(nat: Netns, public: str) -> None:
    """The NAT in front of the roamer now maps it to another public address: new
    source NAT rule, and its connection tracking forgotten (a NAT reboot, say)."""
    nat.add_addr("wan", f"{public}/24")
    ruleset = (
        "table inet lab_nat\n"
        "delete table inet lab_nat\n"
        "table ip lab_nat2 {\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    oifname "wan" snat to {public}\n'
        "  }\n"
        "}\n"
    )
    nat.run(["nft", "-f", "-"], input=ruleset)
    nat.run([sys.executable, "-c", "from pyroute2 import Conntrack; Conntrack().flush()"])


def test_nat_mapping_change_is_found_by_the_roamer_and_followed(lab: Lab) -> None:
    """RFC 4555 §3.8: a MOBIKE responder does not follow a NAT mapping change by
    itself; the initiator behind the NAT checks its mapping with NAT detection in its
    liveness checks, which gatewayd answers, and then sends UPDATE_SA_ADDRESSES."""
    require_root_and_strongswan()
    topo = lab.site_to_site(nat_a=True, ipv6=False)
    a, b = topo["a"], topo["b"]
    assert a.nat is not None
    sw, gw = roamer_and_gateway(lab, a, b, dpd_delay=2)
    gw.wait_established("roamer")
    wait_ping(a.lan, b.lan_host_v4, timeout=15)
    before = gw.site("roamer")
    assert before["ike_sa"]["remote"] == f"{a.public_v4}:4500", before["ike_sa"]
    assert before["ike_sa"]["nat_remote"] is True
    sw.wait_for_log(r"peer supports MOBIKE", timeout=1)
    # Idle, charon checks the path with NAT detection in its liveness check, and we
    # answer with ours: its reference for the mapping (charon compares later answers).
    sw.wait_for_log(r"parsed INFORMATIONAL response \d+ \[ N\(NATD_S_IP\) N\(NATD_D_IP\) \]")

    mark = gw.mark()
    with BackgroundPing(a.lan, b.lan_host_v4, interval=0.2) as bg:
        time.sleep(1.5)
        change_nat_mapping(a.nat, NAT_NEW_PUBLIC)
        moved = gw.wait_event("peer_address_changed", since=mark, timeout=30, site="roamer")
        time.sleep(3)
        bg.stop()
    print(f"NAT mapping change: {bg.lost} of {bg.sent} pings lost")
    assert moved["old"] == f"{a.public_v4}:4500", moved
    assert moved["new"].startswith(f"{NAT_NEW_PUBLIC}:"), moved
    assert moved["encap"] == "udp"
    # The answers are lost from the change until the roamer's liveness check (2 s of
    # silence, then one round trip) found the new mapping: a bounded gap, then none.
    assert bg.lost <= 25, f"{bg.lost} of {bg.sent} lost: {bg.missed_lines()}"
    tail = ping(a.lan, b.lan_host_v4, count=10, interval=0.1)
    assert tail.loss == 0, tail

    after = gw.site("roamer")
    assert after["ike_sa"]["remote"] == moved["new"], after["ike_sa"]
    spis = ("spi_i", "spi_r")
    assert [after["ike_sa"][k] for k in spis] == [before["ike_sa"][k] for k in spis]
    assert not gw.find_events("ike_sa_up", since=mark)
    for child in after["child_sas"]:
        assert child["remote"] == moved["new"], child
