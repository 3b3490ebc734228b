"""The lab itself: two strongSwan sites carry LAN traffic, and teardown leaves nothing."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from tests.lab import (
    Auth,
    Lab,
    Netns,
    StrongSwan,
    Topology,
    cleanup_stale,
    iperf3,
    list_namespaces,
    ping,
    psk_site_to_site,
    require_root,
    require_root_and_strongswan,
    requires,
    tcp_transfer,
    wait_ping,
)
from tests.lab.certs import make_ca, make_cert

pytestmark = pytest.mark.netns

PSK = "lab-selftest-psk-5f1c0a7e"
FIVE_MB = 5 * 1024 * 1024


def start_pair(lab: Lab, topo: Topology, **conn_kw: Any) -> dict[str, StrongSwan]:
    """A PSK tunnel between sites a and b; both peers started and loaded."""
    peers = {}
    for me, other in ((topo["a"], topo["b"]), (topo["b"], topo["a"])):
        sw = lab.strongswan(me.gw)
        conn, secret = psk_site_to_site(me, other, PSK, **conn_kw)
        sw.connections.append(conn)
        sw.secrets.append(secret)
        peers[me.name] = sw.start()
    return peers


def test_psk_site_to_site_carries_lan_traffic(lab: Lab) -> None:
    require_root_and_strongswan()
    topo = lab.site_to_site()
    a, b = topo["a"], topo["b"]
    peers = start_pair(lab, topo)

    # The WAN router has no route to the LANs: nothing passes before the tunnel exists.
    assert ping(a.lan, b.lan_host_v4, count=1, wait=0.5).received == 0

    peers["a"].initiate("net")
    sa_a = peers["a"].wait_established("a-b", "net")
    sa_b = peers["b"].wait_established("b-a", "net")
    child_a, child_b = sa_a.child("net"), sa_b.child("net")
    assert child_a and child_b
    assert (child_a.spi_in, child_a.spi_out) == (child_b.spi_out, child_b.spi_in)
    assert child_a.encap  # kernel-libipsec forces ESP-in-UDP

    wait_ping(a.lan, b.lan_host_v4)
    assert ping(a.lan, b.lan_host_v4, count=5, interval=0.05).loss == 0
    assert b.lan_host_v6 and ping(a.lan, b.lan_host_v6, count=3, interval=0.05).loss == 0
    # The gateway's own traffic leaves with its LAN address (route src in table 220).
    assert ping(a.gw, b.lan_host_v4, count=2, interval=0.05).loss == 0

    sent, received = tcp_transfer(a.lan, b.lan, b.lan_host_v4, FIVE_MB)
    assert sent == received

    after = peers["a"].list_sas("a-b")[0].child("net")
    assert after and after.bytes_out > FIVE_MB

    report = iperf3(a.lan, b.lan, b.lan_host_v4, seconds=1)
    assert report["end"]["sum_received"]["bits_per_second"] > 1e6


def test_pubkey_site_to_site(lab: Lab) -> None:
    """Certificates from tests/lab/certs.py, placed with add_cert, identities by IP SAN."""
    require_root_and_strongswan()
    topo = lab.site_to_site(ipv6=False)
    a, b = topo["a"], topo["b"]
    ca = make_ca(lab.workdir / "pki")
    peers = {}
    for me, other in ((a, b), (b, a)):
        mine = make_cert(lab.workdir / "pki", ca, f"{me.name}-gw", ips=[me.gw_wan_v4])
        sw = lab.strongswan(me.gw)
        sw.add_cert(ca.cert, "x509ca")
        sw.add_cert(mine.key, "private")
        conn, _ = psk_site_to_site(me, other, "unused")
        conn.local = Auth("pubkey", id=me.gw_wan_v4, certs=[sw.add_cert(mine.cert)])
        conn.remote = Auth("pubkey", id=other.gw_wan_v4)
        sw.connections.append(conn)
        peers[me.name] = sw.start()
    peers["a"].initiate("net")
    peers["b"].wait_established("b-a", "net")
    peers["b"].wait_for_log(r"authentication of '192\.0\.2\.1' with ECDSA.* successful")
    wait_ping(a.lan, b.lan_host_v4)


def test_site_behind_nat(lab: Lab) -> None:
    require_root_and_strongswan()
    topo = lab.site_to_site(nat_b=True, ipv6=False)
    a, b = topo["a"], topo["b"]
    peers = start_pair(lab, topo)
    peers["b"].initiate("net")  # only the NATed side can open the way
    sa = peers["a"].wait_established("a-b", "net")
    assert sa.remote_host == b.public_v4 and sa.remote_port != 500
    assert b.nat is not None and b.gw_wan_v4 != b.public_v4
    wait_ping(b.lan, a.lan_host_v4)
    assert ping(a.lan, b.lan_host_v4, count=3, interval=0.05).loss == 0


def test_hub_and_spokes_wan_reachability(lab: Lab) -> None:
    require_root()
    topo = lab.hub_and_spokes(3, nat=frozenset({2}))
    hub = topo["hub"]
    for name in ("s1", "s2", "s3"):
        site = topo[name]
        assert ping(site.gw, hub.public_v4, count=1).received == 1
        assert site.lan_host_v6 and ping(site.lan, site.gw_lan_v6 or "", count=1).received == 1
    assert topo["s2"].nat is not None
    assert {s.lan_net_v4 for s in topo.sites.values()} == {
        "10.1.0.0/16",
        "10.2.0.0/16",
        "10.3.0.0/16",
        "10.4.0.0/16",
    }


def test_teardown_leaves_nothing() -> None:
    require_root_and_strongswan()
    with Lab() as lab:
        topo = lab.site_to_site(ipv6=False)
        peers = start_pair(lab, topo)
        peers["a"].initiate("net")
        names = [ns.name for ns in topo.hosts]
        pids = [pid for ns in topo.hosts for pid in ns.pids()]
        assert len(pids) >= 2  # both charons
    left = set(names) & set(list_namespaces())
    assert not left
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}") and not _zombie(pid)]
    assert not alive


def test_interrupted_run_is_cleaned_up() -> None:
    """A namespace whose creator died is removed; one whose creator lives is kept."""
    require_root()
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = f"gwd-{gone.pid}-dead-x"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    mine = Netns("keep")
    try:
        removed = cleanup_stale("gwd")
        assert stale in removed
        assert stale not in list_namespaces()
        assert mine.name in list_namespaces()
    finally:
        mine.delete()
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True)


@pytest.mark.parametrize("strict", ["", "1"])
def test_require_policy_skips_or_fails(monkeypatch: pytest.MonkeyPatch, strict: str) -> None:
    monkeypatch.setenv("GATEWAYD_REQUIRE_INTEROP", strict)
    monkeypatch.setattr(requires, "root_problem", lambda: "pretend")
    expected = pytest.fail.Exception if strict else pytest.skip.Exception
    with pytest.raises(expected, match="needs root/strongSwan: pretend"):
        requires.require_root_and_strongswan()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
