"""Point-to-site with strongSwan 5.9.8 road warriors (issue 6): certificates, EAP-MSCHAPv2.

``hub-lan -- hub-gw [gatewayd + p2s] -- wan -- s1-gw [strongSwan site] -- s1-lan``, and
three client hosts ``c1..c3`` on the WAN, each with its own charon (kernel-libipsec,
``vips = 0.0.0.0``). One lab serves the whole module (building it and starting the hub
and the site costs seconds); each test leaves no client connected and the [p2s] config
as it found it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab import Lab, ping, require_root_and_strongswan
from tests.lab.roadwarrior import (
    POOL,
    P2sLab,
    RoadWarrior,
    p2s_lab,
    use_certificate,
    use_eap,
    wait_until,
)
from tests.lab.traffic import wait_ping

pytestmark = pytest.mark.netns

USERS = {"alice": "alice-Secret-1", "bob": "bob-Secret-22", "carol": "carol-Secret-333"}
HUB_LAN_HOST = "10.1.0.2"
SITE_LAN_HOST = "10.2.0.2"


@pytest.fixture(scope="module")
def p2s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[P2sLab]:
    require_root_and_strongswan()
    workdir = tmp_path_factory.mktemp("p2s-interop")
    with Lab(workdir / "lab") as lab:
        yield p2s_lab(lab, workdir, clients=3, users=USERS)


@pytest.fixture(autouse=True)
def _no_clients_left(p2s: P2sLab) -> Iterator[None]:
    yield
    for rw in p2s.clients:
        if rw.sw.running:
            rw.sw.stop()
    wait_until(lambda: not p2s.connected(), 20, "every client gone from the hub")


def _reload(p2s: P2sLab, **changes: Any) -> None:
    table = p2s.hub.tables["p2s"]
    for key, value in changes.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    p2s.hub.write_config()
    p2s.hub.ctl("reload")


def _events(p2s: P2sLab, name: str, since: int) -> list[dict[str, Any]]:
    return p2s.hub.find_events(name, since=since)


def _check_connected(p2s: P2sLab, rws: list[RoadWarrior], auth: str) -> None:
    """Distinct pool addresses, the DNS attribute, pings both ways, listed in status."""
    clients = p2s.wait_clients({rw.identity for rw in rws})
    pool = ipaddress.ip_network(POOL)
    seen: set[str] = set()
    for rw in rws:
        (vip,) = rw.virtual_ips()
        assert ipaddress.ip_address(vip) in pool
        seen.add(vip)
        row = clients[rw.identity]
        assert row["virtual_ips"] == [vip] and row["auth"] == auth
        assert row["remote"].split(":")[0] == rw.site.gw_wan_v4
        rw.sw.wait_for_log(r"processing INTERNAL_IP4_DNS attribute")
        assert re.search(r"installing new virtual IP " + re.escape(vip), rw.sw.log_text())
        for dst in (HUB_LAN_HOST, SITE_LAN_HOST):
            wait_ping(rw.ns, dst)  # first packets may meet ARP and fresh routes; then none lost
            result = ping(rw.ns, dst, count=3, interval=0.1)
            assert result.loss == 0, f"{rw.identity} ({vip}) -> {dst}: {result}"
        # The site's LAN reaches the client too (its selectors cover the pool).
        wait_ping(p2s.s1.lan, vip)
        assert ping(p2s.s1.lan, vip, count=2, interval=0.1).loss == 0
    assert len(seen) == len(rws)
    status = p2s.p2s_status()
    assert status["pool"]["used"] == len(rws)
    for row in status["clients"]:
        assert row["packets_in"] >= 6 and row["packets_out"] >= 6, row
        assert row["child_sas"] and row["child_sas"][0]["spi_in"]
    text = p2s.hub.ctl("status").stdout
    assert f"point-to-site: {len(rws)} clients" in text
    for rw in rws:
        assert rw.identity.split(",")[0] in text


def test_three_certificate_clients(p2s: P2sLab) -> None:
    mark = p2s.hub.mark()
    for k, rw in enumerate(p2s.clients, 1):
        use_certificate(rw, p2s, f"rw-cert-{k}")
    for rw in p2s.clients:
        rw.connect()
    _check_connected(p2s, p2s.clients, "certificate")
    connected = _events(p2s, "p2s_client_connected", mark)
    assert len(connected) == 3 and {e["auth"] for e in connected} == {"certificate"}


def test_three_eap_mschapv2_clients(p2s: P2sLab) -> None:
    for rw, (user, password) in zip(p2s.clients, USERS.items(), strict=True):
        use_eap(rw, p2s, user, password)
    for rw in p2s.clients:
        rw.connect()
    _check_connected(p2s, p2s.clients, "eap-mschapv2")


def test_reconnect_keeps_the_address_and_delete_frees_the_lease(p2s: P2sLab) -> None:
    rw = p2s.clients[0]
    use_certificate(rw, p2s, "rw-again")
    rw.connect()
    (vip,) = rw.virtual_ips()
    p2s.wait_clients({rw.identity})
    mark = p2s.hub.mark()
    rw.disconnect()
    gone = p2s.hub.wait_event("p2s_client_disconnected", since=mark, timeout=10)
    assert gone["virtual_ip"] == [vip]
    status = p2s.p2s_status()
    assert status["clients"] == [] and status["pool"]["used"] == 0
    routes = json.loads(p2s.hub.ctl("routes", "--json").stdout)["routes"]
    assert not [r for r in routes if r["prefix"] == f"{vip}/32"]
    assert ping(p2s.hub_site.lan, vip, count=1, wait=0.5).received == 0
    # Another identity meanwhile gets another address: the lease is held for this one.
    other = p2s.clients[1]
    use_certificate(other, p2s, "rw-other")
    other.connect()
    assert other.virtual_ips() != [vip]
    rw.connect()
    assert rw.virtual_ips() == [vip]
    wait_ping(rw.ns, HUB_LAN_HOST)
    assert ping(rw.ns, HUB_LAN_HOST, count=2, interval=0.1).loss == 0


def test_refusals_are_logged_and_notified(p2s: P2sLab) -> None:
    revoked, stranger, wrong = p2s.clients
    use_certificate(revoked, p2s, "rw-revoked")
    serial = _serial(p2s.pki.client("rw-revoked").cert)
    (p2s.pki.dir / "revoked.txt").write_text(f"# revoked for the test\nserial:{serial:x}\n")
    p2s.hub.ctl("reload")
    use_certificate(stranger, p2s, "rw-stranger", stranger=True)
    use_eap(wrong, p2s, "alice", "not-alices-password")
    mark = p2s.hub.mark()
    try:
        for rw in (revoked, stranger, wrong):
            assert not rw.try_connect(), f"{rw.identity} was let in"
    finally:
        (p2s.pki.dir / "revoked.txt").write_text("")
        p2s.hub.ctl("reload")
    reasons = [e["reason"] for e in _events(p2s, "p2s_auth_failed", mark)]
    assert any(r.startswith("certificate revoked") for r in reasons), reasons
    assert any(r.startswith("unknown CA") for r in reasons), reasons
    assert any("wrong password for user 'alice'" in r for r in reasons), reasons
    for rw in (revoked, stranger, wrong):
        assert "received AUTHENTICATION_FAILED notify error" in rw.sw.log_text()
    # The wrong password: EAP-Failure and AUTHENTICATION_FAILED in one IKE_AUTH response.
    assert re.search(r"parsed IKE_AUTH response \d+ \[ EAP/FAIL N\(AUTH_FAILED\) \]",
                     wrong.sw.log_text())  # fmt: skip
    assert p2s.connected() == {}
    # Nothing of the refused clients is left behind: a good client still gets in.
    use_certificate(revoked, p2s, "rw-fine")
    revoked.connect()
    wait_ping(revoked.ns, HUB_LAN_HOST)
    assert ping(revoked.ns, HUB_LAN_HOST, count=2, interval=0.1).loss == 0


def test_pool_exhausted_answers_internal_address_failure(p2s: P2sLab) -> None:
    # Two addresses, and no reservations: earlier tests' identities hold none of them.
    _reload(p2s, address_pool=["172.16.201.0/30"], lease_hold=0)
    try:
        first, second, third = p2s.clients
        for k, rw in enumerate(p2s.clients, 1):
            use_certificate(rw, p2s, f"rw-small-{k}")
        first.connect()
        second.connect()
        mark = p2s.hub.mark()
        assert not third.try_connect()
        third.sw.wait_for_log(r"received INTERNAL_ADDRESS_FAILURE notify")
        event = p2s.hub.wait_event("p2s_pool_exhausted", since=mark, timeout=10)
        assert "address pool exhausted" in event["reason"]
        # The hub deletes the IKE SA it could give no address: only the two stay.
        p2s.wait_clients({rw.identity for rw in (first, second)}, timeout=10)
        wait_ping(first.ns, HUB_LAN_HOST)
        assert ping(first.ns, HUB_LAN_HOST, count=2, interval=0.1).loss == 0
    finally:
        for rw in p2s.clients:
            rw.sw.stop()
        wait_until(lambda: not p2s.connected(), 20, "clients gone")
        _reload(p2s, address_pool=[POOL], lease_hold=None)


def _serial(path: Path) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number
