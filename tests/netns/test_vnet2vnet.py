"""Two gatewayd instances as a VNet-to-VNet pair, a LAN host behind each (issue 3).

``a-lan -- a-gw [gatewayd, site "b"] -- wan -- b-gw [gatewayd, site "a"] -- b-lan``

The WAN router has no route to either LAN, so every LAN-to-LAN packet that arrives went
through the tunnel. Most tests share one running pair (module fixture ``pair``) and first
make sure it is up; tests that break a pair (SIGTERM, wrong PSK, plain ESP) build their
own. Both daemons' log tails are attached to any failure.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab import Capture, Lab, Netns, ping, require_root, require_tools, tcp_transfer
from tests.lab.flood import read_ipsec
from tests.lab.gatewayd import (
    Gatewayd,
    VnetPair,
    configure_vnet_pair,
    site_status,
    spis,
    start_vnet_pair,
)

pytestmark = pytest.mark.netns

FIFTY_MB = 50 * 1024 * 1024
AUTH_RE = re.compile(r"authenticat", re.IGNORECASE)
DELETED_BY_PEER_RE = re.compile(r"delet\w*\b.*\bpeer", re.IGNORECASE)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VnetPair]:
    """One running pair for the module; torn down after its last test."""
    require_root()
    with Lab(tmp_path_factory.mktemp("vnet2vnet") / "lab") as lab:
        yield start_vnet_pair(lab.gatewayd, lab.site_to_site(), name_prefix="shared-")


@pytest.fixture
def up(pair: VnetPair) -> VnetPair:
    """The shared pair, established and pinging (an earlier test may have rekeyed it)."""
    for gw in pair.daemons():
        assert gw.alive, f"{gw.name} died during an earlier test\n{gw.tail()}"
    pair.wait_up()
    return pair


def _child(gw: Gatewayd, site: str) -> dict[str, Any]:
    children = gw.site(site)["child_sas"]
    assert len(children) == 1, f"{gw.name}: expected one Child SA for {site}: {children}"
    return dict(children[0])


def _settled_child(gw: Gatewayd, site: str, timeout: float = 10) -> dict[str, Any]:
    """The site's only Child SA once a rekey has retired the old one."""
    deadline = time.monotonic() + timeout
    while len(children := gw.site(site)["child_sas"]) != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(children) == 1, f"{gw.name}: old Child SA never retired: {children}"
    return dict(children[0])


# -- traffic ------------------------------------------------------------------------------


def test_ipv4_ping_both_ways(up: VnetPair) -> None:
    a, b = up.a, up.b
    assert ping(a.lan, b.lan_host_v4, count=5, interval=0.05).loss == 0
    assert ping(b.lan, a.lan_host_v4, count=5, interval=0.05).loss == 0
    # The kernel half: each site's networks are routed into the TUN device.
    for me, peer in ((a, b), (b, a)):
        gw = up.gw[me.name]
        assert gw.tun_exists(), f"{gw.name}: no {gw.interface} device"
        routes = gw.kernel_routes()
        for net in peer.lan_nets:
            assert any(r.startswith(net) and gw.interface in r for r in routes), (net, routes)


def test_ipv6_ping_both_ways(up: VnetPair) -> None:
    a, b = up.a, up.b
    assert a.lan_host_v6 and b.lan_host_v6, "topology without IPv6"
    assert ping(a.lan, b.lan_host_v6, count=5, interval=0.05).loss == 0
    assert ping(b.lan, a.lan_host_v6, count=5, interval=0.05).loss == 0


def test_50mb_tcp_transfer_arrives_intact(up: VnetPair) -> None:
    a, b = up.a, up.b
    before = _child(up.gw["a"], "b")
    sent, received = tcp_transfer(a.lan, b.lan, b.lan_host_v4, FIFTY_MB, timeout=600)
    assert sent == received
    after = _child(up.gw["a"], "b")
    if after["spi_out"] == before["spi_out"]:  # no rekey in between: the counters add up
        assert after["bytes_out"] - before["bytes_out"] > FIFTY_MB


def _ping_sized(ns: Netns, dst: str, count: int, size: int) -> int:
    """Echo requests with ``size`` bytes of payload; returns how many were answered."""
    cp = ns.run(["ping", "-n", "-q", "-c", str(count), "-i", "0.1", "-W", "2", "-s", str(size),
                 dst], check=False, timeout=count * 0.1 + 15)  # fmt: skip
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", cp.stdout)
    assert m, cp.stdout + cp.stderr
    return int(m[2])


def test_status_counters_match_the_traffic_sent(up: VnetPair) -> None:
    """N echo requests of a known size: on each side the Child SA's packets grow by
    exactly N each way and its inner bytes by N x (20 + 8 + size) each way."""
    a, b = up.a, up.b
    n, size = 7, 333
    ip_len = 20 + 8 + size
    gws = (up.gw["a"], "b"), (up.gw["b"], "a")
    time.sleep(1.0)  # let the fixture's pings drain
    before = [_child(gw, site) for gw, site in gws]
    dp_before = [gw.status()["datapath"] for gw, _ in gws]
    assert _ping_sized(a.lan, b.lan_host_v4, n, size) == n
    expected = {"packets_in": n, "packets_out": n, "bytes_in": n * ip_len, "bytes_out": n * ip_len}
    for (gw, site), old, dp_old in zip(gws, before, dp_before, strict=True):
        deadline = time.monotonic() + 5
        while True:
            new = _child(gw, site)
            assert new["spi_in"] == old["spi_in"], "rekeyed during the measurement"
            delta = {k: new[k] - old[k] for k in expected}
            if delta == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert delta == expected, f"{gw.name}: Child SA counters grew by {delta}, sent {expected}"
        dp = gw.status()["datapath"]
        for key in ("packets_in", "packets_out"):
            assert dp[key] - dp_old[key] >= n, f"{gw.name}: datapath {key} {dp_old} -> {dp}"


def test_two_gatewayd_carry_esp_in_udp_by_default(up: VnetPair, tmp_path: Path) -> None:
    """encapsulation "auto" on both and no NAT: they recognise each other's Vendor ID and
    carry ESP in UDP 4500 (UDP GSO/GRO), no plain ESP."""
    require_tools("tcpdump")
    a, b = up.a, up.b
    pcap = tmp_path / "udp.pcap"
    with Capture(a.gw, a.gw_wan_if, pcap, "esp or udp port 4500"):
        assert ping(a.lan, b.lan_host_v4, count=10, interval=0.05).loss == 0
    packets = read_ipsec(pcap)
    kinds = [p.kind for p in packets]
    assert kinds.count("esp-udp") >= 20, kinds
    assert kinds.count("esp") == 0, kinds
    assert all(p.sport == 4500 and p.dport == 4500 for p in packets if p.kind == "esp-udp")
    for gw, site in ((up.gw["a"], "b"), (up.gw["b"], "a")):
        assert _child(gw, site)["encap"] == "udp"


# -- control ------------------------------------------------------------------------------


def _ping_during(up: VnetPair, action: Any, *, seconds: float = 10, at: float = 2) -> Any:
    """Ping a-lan -> b-lan every 50 ms for ``seconds`` and run ``action`` at ``at`` s."""
    a, b = up.a, up.b
    count = int(seconds / 0.05)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pinger = pool.submit(ping, a.lan, b.lan_host_v4, count, 0.05, wait=2)
        time.sleep(at)
        action()
        return pinger.result()


def test_child_rekey_during_ping_loses_nothing(up: VnetPair) -> None:
    gw_a, gw_b = up.gw["a"], up.gw["b"]
    old = _child(gw_a, "b")
    ike_before = spis(gw_a.status(), "b")[0]
    mark_a, mark_b = gw_a.mark(), gw_b.mark()
    result = _ping_during(up, lambda: gw_a.ctl("rekey", "b"))
    gw_a.wait_event("child_sa_rekeyed", since=mark_a, site="b")
    gw_b.wait_event("child_sa_rekeyed", since=mark_b, site="a")
    assert result.loss == 0, result

    new_a, new_b = _settled_child(gw_a, "b"), _settled_child(gw_b, "a")
    assert new_a["spi_in"] != old["spi_in"] and new_a["spi_out"] != old["spi_out"]
    assert (new_a["spi_in"], new_a["spi_out"]) == (new_b["spi_out"], new_b["spi_in"])
    assert spis(gw_a.status(), "b")[0] == ike_before, "a Child rekey must keep the IKE SA"
    assert ping(up.a.lan, up.b.lan_host_v4, count=5, interval=0.05).loss == 0


def test_ike_rekey_during_ping_loses_nothing(up: VnetPair) -> None:
    gw_a, gw_b = up.gw["a"], up.gw["b"]
    (old_ike, old_children) = spis(gw_a.status(), "b")
    mark_a, mark_b = gw_a.mark(), gw_b.mark()
    result = _ping_during(up, lambda: gw_a.ctl("rekey", "b", "--ike"))
    gw_a.wait_event("ike_sa_rekeyed", since=mark_a, site="b")
    gw_b.wait_event("ike_sa_rekeyed", since=mark_b, site="a")
    assert result.loss == 0, result

    new_ike, new_children = spis(gw_a.status(), "b")
    assert new_ike[0] != old_ike[0] and new_ike[1] != old_ike[1], (old_ike, new_ike)
    assert spis(gw_b.status(), "a")[0] == new_ike, "both sides must show the new IKE SA"
    # RFC 7296 §2.18: the new IKE SA inherits the Child SAs.
    assert new_children == old_children
    assert gw_a.site("b")["state"] == "established"
    assert ping(up.a.lan, up.b.lan_host_v4, count=5, interval=0.05).loss == 0


def test_down_removes_the_tunnel_and_up_restores_it(up: VnetPair) -> None:
    a, b = up.a, up.b
    gw_a, gw_b = up.gw["a"], up.gw["b"]
    old = _child(gw_a, "b")
    mark_b = gw_b.mark()

    gw_a.ctl("down", "b")
    gw_a.wait_state("b", "down", timeout=10)
    gw_b.wait_event("ike_sa_down", since=mark_b, site="a")
    assert not set(b.lan_nets) & gw_a.route_prefixes(), gw_a.kernel_routes()
    routes = [r for r in gw_a.routes() if r["site"] == "b"]
    assert routes and all(r["state"] == "down" for r in routes), routes
    assert ping(a.lan, b.lan_host_v4, count=3, interval=0.2, wait=0.5).received == 0
    # An administrative down sticks: nobody brings it back behind the operator's back.
    time.sleep(3)
    site = gw_a.site("b")
    assert site["state"] == "down" and site["ike_sa"] is None and not site["child_sas"], site

    gw_a.ctl("up", "b")
    up.wait_up()
    new = _child(gw_a, "b")
    assert (new["spi_in"], new["spi_out"]) != (old["spi_in"], old["spi_out"])
    assert set(b.lan_nets) <= gw_a.route_prefixes(), gw_a.kernel_routes()
    assert all(r["state"] != "down" for r in gw_a.routes() if r["site"] == "b")
    assert ping(a.lan, b.lan_host_v4, count=5, interval=0.05).loss == 0


def test_reload_adds_and_removes_a_site_without_touching_the_tunnel(up: VnetPair) -> None:
    """SIGHUP with a new site, then ``gatewayctl reload`` without it: the existing
    site keeps its IKE and Child SAs (same SPIs) and traffic throughout."""
    gw_a = up.gw["a"]
    before = spis(gw_a.status(), "b")
    extra = {
        "name": "c",
        "address": "203.0.113.1",  # no such host in this topology: it stays unanswered
        "networks": ["10.3.0.0/16"],
        "psk": "lab-site-c-psk-0d6e41b5",
    }
    gw_a.sites.append(extra)
    try:
        assert gw_a.check().returncode == 0
        mark = gw_a.mark()
        gw_a.signal(signal.SIGHUP)
        gw_a.wait_event("config reloaded", since=mark)
        gw_a.wait_event("site added", since=mark, site="c")
        status = gw_a.status()
        assert site_status(status, "c")["state"] in ("down", "connecting")
        assert spis(status, "b") == before
    finally:
        gw_a.sites.remove(extra)

    gw_a.write_config()
    mark = gw_a.mark()
    gw_a.ctl("reload")
    gw_a.wait_event("site removed", since=mark, site="c")
    status = gw_a.status()
    assert [s["name"] for s in status["sites"]] == ["b"]
    assert spis(status, "b") == before
    assert not gw_a.find_events("ike_sa_down", since=mark, site="b")
    assert ping(up.a.lan, up.b.lan_host_v4, count=5, interval=0.05).loss == 0
    # The log records every reload, whichever way it was asked for.
    gw_a.wait_event("config reloaded", since=mark, timeout=2)


def test_status_cli_json_and_routes(up: VnetPair) -> None:
    """``gatewayctl status --json`` / ``routes --json`` print what the socket returns."""
    gw_a = up.gw["a"]
    status = json.loads(gw_a.ctl("status", "--json").stdout)
    assert status["gateway"]["name"] == "a"
    assert status["gateway"]["address"] == up.a.gw_wan_v4
    site = site_status(status, "b")
    assert site["state"] == "established"
    assert site["ike_sa"]["remote"].rsplit(":", 1)[0].strip("[]") == up.b.public_v4
    child = site["child_sas"][0]
    for key in ("spi_in", "spi_out"):
        assert re.fullmatch(r"[0-9a-f]{8}", child[key]), child
    routes = json.loads(gw_a.ctl("routes", "--json").stdout)["routes"]
    assert {r["prefix"] for r in routes if r["site"] == "b"} == set(up.b.lan_nets)
    assert all(r["state"] != "down" for r in routes), routes


# -- pairs of their own -------------------------------------------------------------------


def test_sigterm_deletes_at_the_peer_and_cleans_up(lab: Lab) -> None:
    pair = start_vnet_pair(lab.gatewayd, lab.site_to_site(ipv6=False))
    gw_a, gw_b = pair.gw["a"], pair.gw["b"]
    assert gw_b.tun_exists() and gw_b.kernel_routes() and gw_b.tunnel_rules()
    mark_a = gw_a.mark()

    assert gw_b.stop(timeout=15) == 0, gw_b.tail()
    down = gw_a.wait_event("ike_sa_down", since=mark_a, site="b", timeout=10)
    assert DELETED_BY_PEER_RE.search(str(down.get("reason"))), down
    assert gw_b.find_events("gateway stopped")
    assert not gw_b.tun_exists(), gw_b.ns.ip("-br", "link")
    assert gw_b.kernel_routes() == []
    assert gw_b.tunnel_rules() == []
    # The survivor took its routes to b away too.
    deadline = time.monotonic() + 5
    while set(pair.b.lan_nets) & gw_a.route_prefixes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not set(pair.b.lan_nets) & gw_a.route_prefixes(), gw_a.kernel_routes()
    assert gw_a.site("b")["state"] != "established"


def _reason(gw: Gatewayd, site: str) -> str | None:
    reason: str | None = gw.site(site)["reason"]
    return reason


def test_wrong_psk_is_an_authentication_failure(lab: Lab) -> None:
    topo = lab.site_to_site(ipv6=False)
    pair = configure_vnet_pair(
        lab.gatewayd, topo, psk={"a": "the-right-psk-8c1f2a", "b": "a-wrong-psk-19b3e7"}
    )
    for gw in pair.daemons():
        gw.start()
    gws = ((pair.gw["a"], "b"), (pair.gw["b"], "a"))
    deadline = time.monotonic() + 30
    while not any(gw.find_events("auth_failed") for gw, _ in gws):
        assert time.monotonic() < deadline, "no auth_failed event on either side"
        time.sleep(0.2)
    failed = [e for gw, _ in gws for e in gw.find_events("auth_failed")]
    assert all(e.get("reason") for e in failed), failed
    # Each side saw the failure (as responder, or as initiator told AUTHENTICATION_FAILED).
    for gw, site in gws:
        gw.wait_for(functools.partial(_reason, gw, site), 15, "a failure reason")
        s = gw.site(site)
        assert s["state"] != "established", s
        assert AUTH_RE.search(s["reason"]), s
        assert not gw.find_events("child_sa_up"), f"{gw.name} brought a Child SA up"
    assert ping(topo["a"].lan, topo["b"].lan_host_v4, count=2, wait=0.5).received == 0


def test_plain_esp_when_asked(lab: Lab, tmp_path: Path) -> None:
    """encapsulation = "esp" and no NAT: ESP as IP protocol 50, no ESP in UDP on 4500."""
    require_tools("tcpdump")
    pair = start_vnet_pair(
        lab.gatewayd, lab.site_to_site(ipv6=False), site_extra={"encapsulation": "esp"}
    )
    a, b = pair.a, pair.b
    pcap = tmp_path / "esp.pcap"
    with Capture(a.gw, a.gw_wan_if, pcap, "esp or udp port 4500"):
        assert ping(a.lan, b.lan_host_v4, count=10, interval=0.05).loss == 0
    kinds = [p.kind for p in read_ipsec(pcap)]
    assert kinds.count("esp") >= 20, kinds
    assert kinds.count("esp-udp") == 0, kinds
    for gw, site in ((pair.gw["a"], "b"), (pair.gw["b"], "a")):
        assert _child(gw, site)["encap"] == "esp"


# -- the fast path: on by default, and forced off ----------------------------------------

FAST_PATH_COUNTERS = (
    "tso_frames",
    "tun_super_packets",
    "gso_sends",
    "gro_batches",
    "mmsg_sends",
    "mmsg_batches",
)


@pytest.mark.parametrize("encapsulation", ["esp", "auto"], ids=["esp", "esp-in-udp"])
@pytest.mark.parametrize("offload", [True, False], ids=["fast-path", "forced-off"])
def test_tcp_both_ways_and_every_packet_size_with_fast_path_on_and_off(
    lab: Lab, offload: bool, encapsulation: str
) -> None:
    """20 MB each way (IPv4 one way, IPv6 the other) arrive intact, and pings from the
    smallest to the MTU pass, with the offloads on (TSO segmentation, coalescing into the
    TUN, UDP GSO/GRO) and with GATEWAYD_OFFLOAD=off; the counters show which path ran."""
    pair = configure_vnet_pair(
        lab.gatewayd, lab.site_to_site(), site_extra={"encapsulation": encapsulation}
    )
    for gw in pair.daemons():
        gw.env = {} if offload else {"GATEWAYD_OFFLOAD": "off"}
        gw.start()
    pair.wait_up()
    a, b = pair.a, pair.b
    assert b.lan_host_v6 and a.lan_host_v6
    for src, dst, host in ((a, b, b.lan_host_v4), (b, a, a.lan_host_v6)):
        sent, received = tcp_transfer(src.lan, dst.lan, host, 20 << 20, timeout=300)
        assert sent == received
    for size in (0, 1, 100, 1372):  # 1372 + 28 = the tunnel MTU of 1400
        assert _ping_sized(a.lan, b.lan_host_v4, 3, size) == 3, size
    for size in (0, 1352):  # IPv6: 1352 + 48 = 1400
        assert _ping_sized(b.lan, a.lan_host_v6, 3, size) == 3, size
    paths = {name: gw.status()["datapath"]["path"] for name, gw in pair.gw.items()}
    for name, path in paths.items():
        assert path["unexpected"] == 0 and path["tun_errors"] == 0, (name, path)
        if offload:
            # Each side sent bulk TCP once (read as super-packets) and received it once.
            assert path["tso_frames"] > 0 and path["tun_super_packets"] > 0, (name, path)
            assert path["tun_bad_csum"] == 0, (name, path)
            if encapsulation == "auto":  # ESP in UDP between two gatewayd
                assert path["gso_sends"] > 0 and path["gro_batches"] > 0, (name, path)
            else:
                assert path["mmsg_sends"] > 0 and path["mmsg_batches"] > 0, (name, path)
        else:
            assert all(path[k] == 0 for k in FAST_PATH_COUNTERS), (name, path)
