"""gatewayd as a hub for strongSwan 5.9.8 sites: many sites, NAT, rekeys, failures (issue 4).

``hub-lan -- hub-gw [gatewayd] -- wan -- sK-gw [strongSwan, kernel-libipsec] -- sK-lan``

Every strongSwan site runs its own charon in its own namespace; the WAN router has no
route to any LAN, so an answered LAN-to-LAN ping went through a tunnel. Each test builds
its own lab (tests/lab/multisite.py), so pytest-xdist spreads the long ones (the 95 s
rekey run and the two 60 s NAT idle gaps) over its workers.

strongSwan's kernel-libipsec always encapsulates ESP in UDP 4500, NAT or not; plain ESP
(IP protocol 50) is covered between two gatewayd instances in test_vnet2vnet.py.
"""

from __future__ import annotations

import datetime
import itertools
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab import (
    Capture,
    Lab,
    ping,
    require_root_and_strongswan,
    require_tools,
    tcp_transfer,
)
from tests.lab.capture import read_udp
from tests.lab.gatewayd import gateway_table, prepare_gateway_host, site_table, spis
from tests.lab.multisite import (
    CHILD,
    PSK,
    BackgroundPing,
    HubLab,
    conntrack_udp,
    ctl_routes,
    hub_with_strongswan_sites,
    shorten_nat_udp_timeouts,
    wait_kernel_routes,
    wait_ping_both,
    wait_routes,
)
from tests.lab.presets import psk_site_to_site

pytestmark = pytest.mark.netns

# Short dead-peer detection so failures show up within a test's time: a liveness check
# after 3 s of silence, the peer declared dead after 10 s without a sign of life.
DPD = {"dpd_timeout": 10, "dpd_interval": 3}
# No liveness checks during a 60 s idle gap: only NAT keepalives may keep the mapping.
NO_DPD_WHILE_IDLE = {"dpd_timeout": 180, "dpd_interval": 150}
NAT_UDP_TIMEOUT = 30
IDLE_GAP = 60
KEEPALIVE = b"\xff"
TRANSFER = 4 << 20


@pytest.fixture(autouse=True)
def _needs_strongswan() -> None:
    require_root_and_strongswan()


def _ts(record: dict[str, Any]) -> float:
    """A gatewayd JSON log record's time stamp as POSIX seconds."""
    stamp = str(record["timestamp"]).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(stamp).timestamp()


def _assert_pings(h: HubLab, *names: str) -> None:
    for name in names:
        spoke = h[name].site
        r = ping(h.hub_site.lan, spoke.lan_host_v4, count=5, interval=0.05)
        assert r.loss == 0, f"hub-lan -> {name}-lan: {r}"


def _assert_no_ping(h: HubLab, name: str) -> None:
    r = ping(h.hub_site.lan, h[name].site.lan_host_v4, count=3, interval=0.2, wait=0.5)
    assert r.received == 0, f"{name} is down, yet its LAN answered: {r}"


def _routes_of(h: HubLab, name: str) -> list[dict[str, Any]]:
    return [r for r in ctl_routes(h.hub) if r["site"] == name]


def _assert_site_routes(h: HubLab, name: str, state: str) -> None:
    rows = _routes_of(h, name)
    assert {r["prefix"] for r in rows} == set(h[name].site.lan_nets), rows
    assert all(r["state"] == state for r in rows), rows
    if state == "up":
        assert all(r["child_sa"] == CHILD for r in rows), rows
    kernel = h.hub.route_prefixes()
    for net in h[name].site.lan_nets:
        assert (net in kernel) == (state == "up"), (name, state, h.hub.kernel_routes())


def _sw_ike_spis(h: HubLab, name: str) -> list[tuple[str, str]]:
    spoke = h[name]
    return [(sa.spi_i, sa.spi_r) for sa in spoke.sw.list_sas(spoke.conn)]


# -- 1. many sites ------------------------------------------------------------------------


def test_three_strongswan_sites_reach_the_hub_lan(lab: Lab) -> None:
    h = hub_with_strongswan_sites(lab, 3, site_extra={"dpd_timeout": 15})
    hub = h.hub_site
    for name, spoke in h.spokes.items():
        s = spoke.site
        assert s.lan_host_v6 and hub.lan_host_v6
        for src, dst in ((hub.lan, s.lan_host_v4), (hub.lan, s.lan_host_v6),
                         (s.lan, hub.lan_host_v4), (s.lan, hub.lan_host_v6)):  # fmt: skip
            r = ping(src, dst, count=5, interval=0.05)
            assert r.loss == 0, f"{src.host} -> {dst}: {r}"
        sent, received = tcp_transfer(s.lan, hub.lan, hub.lan_host_v4, TRANSFER)
        assert sent == received, f"{name}-lan -> hub-lan: sha256 differs"
        sent, received = tcp_transfer(hub.lan, s.lan, s.lan_host_v4, TRANSFER)
        assert sent == received, f"hub-lan -> {name}-lan: sha256 differs"
        # Both ends agree on the SAs; strongSwan's data path is always ESP in UDP.
        (ike_spis, children) = spis(h.hub.status(), name)
        assert _sw_ike_spis(h, name) == [ike_spis]
        sw_child = spoke.sw.list_sas(spoke.conn)[0].child(CHILD)
        assert sw_child is not None
        assert children == [(sw_child.spi_out, sw_child.spi_in)]
        assert sw_child.encap
        status = h.hub.site(name)
        assert status["ike_sa"]["remote"] == f"{s.public_v4}:4500", status["ike_sa"]
        assert status["ike_sa"]["local"] == f"{hub.gw_wan_v4}:4500", status["ike_sa"]
        assert status["child_sas"][0]["encap"] == "udp"
        assert status["child_sas"][0]["bytes_in"] > TRANSFER
        assert status["child_sas"][0]["bytes_out"] > TRANSFER
        _assert_site_routes(h, name, "up")
    drops = h.hub.status()["datapath"]["drops"]
    bad = ("replay", "bad_icv", "selector", "malformed", "padding", "unknown_spi")
    assert all(drops.get(k, 0) == 0 for k in bad), drops


def test_routes_follow_sites_going_down_and_up(lab: Lab) -> None:
    h = hub_with_strongswan_sites(lab, 3, site_extra={"dpd_timeout": 15})
    for name in h.spokes:
        _assert_site_routes(h, name, "up")

    # The operator takes s2 down: its routes go, the others keep theirs and their traffic.
    h.hub.ctl("down", "s2")
    wait_routes(h.hub, "s2", "down")
    wait_kernel_routes(h.hub, h["s2"].site.lan_nets, present=False)
    h["s2"].sw.wait_no_sa(h["s2"].conn, timeout=10)  # the hub sent a DELETE
    _assert_site_routes(h, "s2", "down")
    for name in ("s1", "s3"):
        _assert_site_routes(h, name, "up")
    _assert_pings(h, "s1", "s3")
    _assert_no_ping(h, "s2")

    h.hub.ctl("up", "s2")
    h.wait_up("s2")
    wait_routes(h.hub, "s2", "up")
    _assert_site_routes(h, "s2", "up")
    _assert_pings(h, "s1", "s2", "s3")

    # s3's charon stops (SIGTERM: it deletes its SAs): routes withdrawn at once.
    mark = h.hub.mark()
    h["s3"].sw.stop()
    h.hub.wait_event("ike_sa_down", since=mark, site="s3", timeout=10)
    wait_routes(h.hub, "s3", "down")
    wait_kernel_routes(h.hub, h["s3"].site.lan_nets, present=False)
    _assert_site_routes(h, "s3", "down")
    _assert_pings(h, "s1", "s2")
    _assert_no_ping(h, "s3")

    # charon is back: the hub's reconnect brings the site back without help.
    restarted = time.monotonic()
    h["s3"].start()
    h.wait_up("s3", timeout=40)
    wait_routes(h.hub, "s3", "up")
    _assert_site_routes(h, "s3", "up")
    print(f"s3 back {time.monotonic() - restarted:.1f}s after charon restarted")
    _assert_pings(h, "s1", "s2", "s3")


# -- 4. dead peer and recovery (also: one failing site leaves the others alone) -----------


def test_dead_site_is_detected_withdrawn_and_recovers_without_disturbing_others(
    lab: Lab,
) -> None:
    h = hub_with_strongswan_sites(lab, 2, site_extra=DPD)
    other = BackgroundPing(h.hub_site.lan, h["s2"].site.lan_host_v4, interval=0.2)
    with other:
        time.sleep(1)
        mark = h.hub.mark()
        killed = time.time()
        h["s1"].sw.kill()  # no DELETE: only DPD can tell

        dead = h.hub.wait_event("peer_dead", since=mark, site="s1", timeout=30)
        down = h.hub.wait_event("ike_sa_down", since=mark, site="s1", timeout=5)
        detection = _ts(dead) - killed
        # dpd_timeout counts from the peer's last sign of life, at most dpd_interval
        # before the kill (liveness checks while idle); +1.5 s for timers.
        gone = _ts(down) - killed
        print(f"DPD: peer_dead {detection:.1f}s after the kill, ike_sa_down {gone:.1f}s")
        assert detection <= DPD["dpd_timeout"] + 1.5, f"peer_dead {detection:.1f}s after the kill"
        early = DPD["dpd_timeout"] - DPD["dpd_interval"] - 1
        assert detection >= early, f"declared dead too early: {detection:.1f}s"
        wait_routes(h.hub, "s1", "down", timeout=5)
        wait_kernel_routes(h.hub, h["s1"].site.lan_nets, present=False, timeout=5)
        _assert_site_routes(h, "s1", "down")
        status = h.hub.site("s1")
        assert status["state"] in ("connecting", "down") and status["reason"], status

        # charon comes back; nobody touches gatewayd: its reconnect back-off finds it.
        restarted = time.monotonic()
        h["s1"].start()
        h.wait_up("s1", timeout=40)
        print(f"s1 back {time.monotonic() - restarted:.1f}s after charon restarted")
        wait_routes(h.hub, "s1", "up")
        _assert_site_routes(h, "s1", "up")
        assert h.hub.find_events("reconnect_scheduled", since=mark, site="s1")
        time.sleep(1)
    sent, received = other.stop()
    print(f"ping to s2 during the failure: {received}/{sent}")
    assert sent >= 50 and other.lost == 0, f"s2 lost {other.lost}/{sent}: {other.missed_lines()}"
    s1 = h["s1"].site
    sent, received = tcp_transfer(h.hub_site.lan, s1.lan, s1.lan_host_v4, TRANSFER)
    assert sent == received


# -- 2. NAT traversal ---------------------------------------------------------------------


def _keepalives(pcap: Path, src: str, dst: str, until: float) -> tuple[list[float], list[str]]:
    """(times of NAT keepalives src:4500 -> dst:4500, anything else that crossed)."""
    keep, other = [], []
    for d in read_udp(pcap):
        if d.ts > until:
            continue
        if d.payload == KEEPALIVE and (d.src, d.sport, d.dst, d.dport) == (src, 4500, dst, 4500):
            keep.append(d.ts)
        else:
            other.append(f"{d.src}:{d.sport} -> {d.dst}:{d.dport} {len(d.payload)} bytes")
    return keep, other


def _assert_keepalives_held(
    keep: list[float], other: list[str], gap_start: float, gap_end: float
) -> None:
    """Only keepalives crossed during the gap, never more than the NAT's UDP timeout
    apart (nor from the gap's ends): they alone kept the mapping."""
    assert not other, f"traffic other than keepalives during the idle gap: {other}"
    assert len(keep) >= 2, f"{len(keep)} keepalives in {IDLE_GAP}s"
    gaps = [b - a for a, b in itertools.pairwise([gap_start, *keep, gap_end])]
    assert max(gaps) < NAT_UDP_TIMEOUT, gaps


def test_strongswan_site_behind_nat_keepalives_hold_the_mapping(lab: Lab, tmp_path: Path) -> None:
    require_tools("tcpdump")
    h = hub_with_strongswan_sites(lab, 1, nat=frozenset({1}), site_extra=NO_DPD_WHILE_IDLE,
                                  start=False)  # fmt: skip
    s1 = h["s1"]
    nat = s1.site.nat
    assert nat is not None
    timeouts = shorten_nat_udp_timeouts(nat, NAT_UDP_TIMEOUT)
    assert set(timeouts.values()) == {NAT_UDP_TIMEOUT}, timeouts
    h.start()

    # NAT-T: the hub sees the site behind a NAT; IKE and ESP moved to UDP 4500.
    status = h.hub.site("s1")
    ike, child = status["ike_sa"], status["child_sas"][0]
    assert ike["nat_remote"] and not ike["nat_local"], ike
    assert ike["remote"] == f"{s1.site.public_v4}:4500", ike
    assert ike["local"] == f"{h.hub_site.gw_wan_v4}:4500", ike
    assert ike["remote_id"] == s1.site.gw_wan_v4  # the private address, as proven
    assert child["encap"] == "udp" and child["remote"] == f"{s1.site.public_v4}:4500", child
    sa = s1.sw.list_sas(s1.conn)[0]
    assert (sa.local_host, sa.local_port, sa.remote_port) == (s1.site.gw_wan_v4, 4500, 4500)
    s1.sw.wait_for_log(r"local host is behind NAT, sending keep alives", timeout=5)
    before = spis(h.hub.status(), "s1")
    keepalives_before = h.hub.status()["datapath"]["path"].get("keepalives_in", 0)

    pcap = tmp_path / "nat-wan.pcap"
    with Capture(nat, "wan", pcap, "udp"):
        gap_start = time.time()
        time.sleep(IDLE_GAP)
        gap_end = time.time()
        mapped = [e for e in conntrack_udp(nat) if "sport=4500" in e]
        # The hub-to-site direction needs the NAT's mapping: it works at once.
        first = ping(h.hub_site.lan, s1.site.lan_host_v4, count=1, wait=2)
        rest = ping(h.hub_site.lan, s1.site.lan_host_v4, count=5, interval=0.2)
    assert mapped, f"the NAT forgot the 4500 mapping: {conntrack_udp(nat)}"
    assert first.received == 1, "the first packet after the idle gap was lost"
    assert rest.loss == 0, rest
    assert spis(h.hub.status(), "s1") == before, "the SAs changed during the idle gap"
    sw_child = s1.sw.list_sas(s1.conn)[0].child(CHILD)
    assert sw_child is not None and (sw_child.spi_out, sw_child.spi_in) == before[1][0]

    keep, other = _keepalives(pcap, s1.site.public_v4, h.hub_site.public_v4, gap_end)
    print(f"NAT-T: {len(keep)} keepalives from strongSwan in {IDLE_GAP}s")
    _assert_keepalives_held(keep, other, gap_start, gap_end)
    counted = h.hub.status()["datapath"]["path"].get("keepalives_in", 0) - keepalives_before
    assert counted >= len(keep), f"hub counted {counted} keepalives, {len(keep)} crossed"


def test_gatewayd_behind_nat_sends_keepalives(lab: Lab, tmp_path: Path) -> None:
    """The roles swapped: strongSwan is the hub, a gatewayd site sits behind the NAT."""
    require_tools("tcpdump")
    topo = lab.hub_and_spokes(1, nat=frozenset({1}))
    hub, s1 = topo["hub"], topo["s1"]
    assert s1.nat is not None
    shorten_nat_udp_timeouts(s1.nat, NAT_UDP_TIMEOUT)
    sw = lab.strongswan(hub.gw, "hub")
    conn, secret = psk_site_to_site(hub, s1, PSK, name="hub-s1")
    sw.connections.append(conn)
    sw.secrets.append(secret)
    sw.start()
    prepare_gateway_host(s1.gw)
    gw = lab.gatewayd(s1.gw, "s1")
    gw.gateway = gateway_table(s1)  # its own (private) address
    gw.sites = [site_table(hub, PSK, **NO_DPD_WHILE_IDLE)]
    gw.start()
    status = gw.wait_established("hub")
    sw.wait_established("hub-s1", CHILD)
    wait_ping_both(hub, s1)
    ike = status["ike_sa"]
    assert ike["nat_local"], ike
    assert ike["remote"] == f"{hub.public_v4}:4500", ike
    assert ike["local"] == f"{s1.gw_wan_v4}:4500", ike  # its private address, floated
    sa = sw.list_sas("hub-s1")[0]
    assert (sa.remote_host, sa.remote_port) == (s1.public_v4, 4500), sa
    before = spis(gw.status(), "hub")

    pcap = tmp_path / "nat-wan.pcap"
    with Capture(s1.nat, "wan", pcap, "udp"):
        gap_start = time.time()
        time.sleep(IDLE_GAP)
        gap_end = time.time()
        first = ping(hub.lan, s1.lan_host_v4, count=1, wait=2)
        rest = ping(hub.lan, s1.lan_host_v4, count=5, interval=0.2)
    assert first.received == 1, "the first packet after the idle gap was lost"
    assert rest.loss == 0, rest
    assert spis(gw.status(), "hub") == before, "the SAs changed during the idle gap"
    keep, other = _keepalives(pcap, s1.public_v4, hub.public_v4, gap_end)
    print(f"NAT-T: {len(keep)} keepalives from gatewayd in {IDLE_GAP}s")
    _assert_keepalives_held(keep, other, gap_start, gap_end)


# -- 3. rekeying under traffic ------------------------------------------------------------

REKEY_RUN = 95.0


def test_rekeys_from_both_sides_under_continuous_ping_lose_nothing(lab: Lab) -> None:
    """strongSwan rekeys its Child SA every ~20 s and its IKE SA every ~40 s; gatewayd
    rekeys both once on command; a 0.2 s ping runs through all of it."""
    h = hub_with_strongswan_sites(
        lab, 1, ipv6=False,
        conn_kw={"rekey_time": 40},
        child_kw={"rekey_time": 20, "life_time": 30, "rand_time": 2},
    )  # fmt: skip
    s1 = h["s1"]
    mark = h.hub.mark()
    sw_log_start = len(s1.sw.log_text())
    first_spis = spis(h.hub.status(), "s1")
    started = time.monotonic()
    commands = [(27.0, ("rekey", "s1")), (52.0, ("rekey", "s1", "--ike")), (75.0, ("rekey", "s1"))]
    with BackgroundPing(h.hub_site.lan, s1.site.lan_host_v4, interval=0.2) as pinger:
        for at, args in commands:
            time.sleep(max(0.0, started + at - time.monotonic()))
            h.hub.ctl(*args)
        time.sleep(max(0.0, started + REKEY_RUN - time.monotonic()))
        sent, received = pinger.stop()
    elapsed = time.monotonic() - started

    # strongSwan's log tells who started each exchange: a Child rekey carries
    # N(REKEY_SA), an IKE rekey is [ SA No KE ] without it.
    sw_log = s1.sw.log_text()[sw_log_start:]
    sw_child = len(re.findall(r"generating CREATE_CHILD_SA request \d+ \[ N\(REKEY_SA\)", sw_log))
    sw_ike = len(re.findall(r"generating CREATE_CHILD_SA request \d+ \[ SA No KE \]", sw_log))
    gw_child = len(re.findall(r"parsed CREATE_CHILD_SA request \d+ \[ N\(REKEY_SA\)", sw_log))
    gw_ike = len(re.findall(r"parsed CREATE_CHILD_SA request \d+ \[ SA No KE \]", sw_log))
    hub_child = len(h.hub.find_events("child_sa_rekeyed", since=mark, site="s1"))
    hub_ike = len(h.hub.find_events("ike_sa_rekeyed", since=mark, site="s1"))
    print(
        f"rekey run {elapsed:.0f}s: ping {received}/{sent}; strongSwan started {sw_child} Child "
        f"and {sw_ike} IKE rekeys, gatewayd {gw_child} and {gw_ike}; the hub logged "
        f"{hub_child} Child and {hub_ike} IKE rekeys"
    )
    assert sent >= int(90 / 0.2), f"only {sent} pings in {elapsed:.0f}s"
    assert pinger.lost == 0, f"lost {pinger.lost}/{sent}: {pinger.missed_lines()}"
    # strongSwan's timers (Child ~20 s, IKE ~40 s; a gatewayd rekey restarts the Child
    # timer) and gatewayd's three commands, all completed on the hub.
    assert sw_child >= 3 and sw_ike >= 1, (sw_child, sw_ike)
    assert (gw_child, gw_ike) == (2, 1)
    assert hub_child >= sw_child + gw_child - 1, (hub_child, sw_child, gw_child)
    assert hub_ike >= sw_ike + gw_ike - 1, (hub_ike, sw_ike, gw_ike)

    # Settled: one IKE SA and one Child SA, the same on both sides, all new.
    def settled() -> bool:
        (ike, children), sas = spis(h.hub.status(), "s1"), s1.sw.list_sas(s1.conn)
        if len(children) != 1 or len(sas) != 1 or len(sas[0].children) != 1:
            return False
        c = sas[0].children[0]
        return ike == (sas[0].spi_i, sas[0].spi_r) and children[0] == (c.spi_out, c.spi_in)

    h.hub.wait_for(settled, 20, "one agreed IKE SA and Child SA")
    last = spis(h.hub.status(), "s1")
    assert last[0] != first_spis[0] and last[1] != first_spis[1]
    assert ping(h.hub_site.lan, s1.site.lan_host_v4, count=5, interval=0.05).loss == 0


# -- 5. restarting gatewayd -----------------------------------------------------------------


def _sw_log_after(spoke: Any, offset: int) -> str:
    return str(spoke.sw.log_text()[offset:])


def _wait_sw_agrees(h: HubLab, name: str, timeout: float = 30) -> None:
    """strongSwan holds exactly one IKE SA for the hub, the one the hub shows."""
    spoke = h[name]

    def ok() -> bool:
        ike, _children = spis(h.hub.status(), name)
        return _sw_ike_spis(h, name) == [ike]

    h.hub.wait_for(ok, timeout, f"strongSwan {name} holding only the hub's IKE SA")
    assert spoke.sw.list_sas(spoke.conn)[0].state == "ESTABLISHED"


def test_gatewayd_restart_after_sigterm_sites_come_back(lab: Lab) -> None:
    h = hub_with_strongswan_sites(lab, 2, site_extra={"dpd_timeout": 15})
    offsets = {n: len(s.sw.log_text()) for n, s in h.spokes.items()}
    assert h.hub.stop() == 0
    for name, spoke in h.spokes.items():
        spoke.sw.wait_no_sa(spoke.conn, timeout=10)  # gatewayd said goodbye
        log = _sw_log_after(spoke, offsets[name])
        assert re.search(r"received DELETE for IKE_SA", log), log[-2000:]
        offsets[name] = len(spoke.sw.log_text())
    assert not h.hub.route_prefixes() and not h.hub.tun_exists()

    h.hub.start()
    h.wait_all_up()
    for name, spoke in h.spokes.items():
        _wait_sw_agrees(h, name)
        log = _sw_log_after(spoke, offsets[name])
        # No SA left at strongSwan: the hub's new IKE_AUTH still says INITIAL_CONTACT.
        assert re.search(r"parsed IKE_AUTH request 1 \[[^]]*N\(INIT_CONTACT\)", log), log[-2000:]
        assert "destroying duplicate" not in log, "the DELETE should have left nothing stale"
        _assert_site_routes(h, name, "up")
    _assert_pings(h, "s1", "s2")
    sent, received = tcp_transfer(h.hub_site.lan, h["s1"].site.lan, h["s1"].site.lan_host_v4,
                                  TRANSFER)  # fmt: skip
    assert sent == received


def test_gatewayd_killed_and_restarted_replaces_stale_sas(lab: Lab) -> None:
    h = hub_with_strongswan_sites(lab, 2, site_extra={"dpd_timeout": 15})
    stale = {n: _sw_ike_spis(h, n) for n in h.spokes}
    offsets = {n: len(s.sw.log_text()) for n, s in h.spokes.items()}
    h.hub.signal(9)  # SIGKILL: no DELETE, strongSwan keeps its SAs
    assert h.hub.proc is not None
    h.hub.proc.wait(10)
    for name in h.spokes:
        assert _sw_ike_spis(h, name) == stale[name], "strongSwan should still hold the old SA"

    h.hub.start()
    h.wait_all_up()
    for name, spoke in h.spokes.items():
        _wait_sw_agrees(h, name)
        assert _sw_ike_spis(h, name) != stale[name]
        log = _sw_log_after(spoke, offsets[name])
        assert re.search(r"parsed IKE_AUTH request 1 \[[^]]*N\(INIT_CONTACT\)", log), log[-2000:]
        hub = re.escape(h.hub_site.public_v4)
        stale_gone = rf"destroying duplicate IKE_SA for peer '{hub}', received INITIAL_CONTACT"
        assert re.search(stale_gone, log), log[-2000:]
        _assert_site_routes(h, name, "up")
    _assert_pings(h, "s1", "s2")
    sent, received = tcp_transfer(h.hub_site.lan, h["s2"].site.lan, h["s2"].site.lan_host_v4,
                                  TRANSFER)  # fmt: skip
    assert sent == received
