"""P2sRunner inside a real GatewayDaemon (no TUN, no sockets) with real engine clients.

The daemon's IKE input (`_receive_ike`) and output (`_send`) are wired to an in-memory
wire; remote clients are IkeSession initiators with certificates or EAP-MSCHAPv2. What is
checked is what the data path and operators see: leases, Child SAs in the SA table, host
routes in the route table, the kernel routes for the pool, status and the log events.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gatewayd.config import Config, load_config
from gatewayd.ctl import render_status
from gatewayd.daemon import GatewayDaemon
from gatewayd.ikeconf import Credentials
from gatewayd.netio import Endpoints
from gatewayd.p2s.runner import P2sRunner, route_site
from gatewayd.p2s.users import nt_hash_of
from gatewayd.status import gateway_status
from ike.auth.certs import TrustStore
from ike.auth.identity import Identity
from ike.constants import ProtocolId
from ike.crypto.proposals import parse_proposal
from ike.session import ChildConfig, IkeSession, SessionConfig
from ike.session import events as ev
from ike.session.session import Datagram, State
from ike.session.ts import any_selectors
from tests.lab.certs import CertFiles, make_ca, make_cert

GW_ADDR = "192.0.2.1"
GW_ID = "hub.example.net"
POOL = "172.16.201.0/29"  # six addresses


class Kernel:
    def __init__(self) -> None:
        self.routes: set[str] = set()

    def add(self, net: Any) -> None:
        self.routes.add(str(net))

    def remove(self, net: Any) -> None:
        self.routes.discard(str(net))


class Pki:
    def __init__(self, d: Path) -> None:
        self.dir = d
        self.gw_ca = make_ca(d, "gw root", stem="gw-ca")
        self.gw = make_cert(d, self.gw_ca, GW_ID, dns=[GW_ID], stem="hub")
        self.client_ca = make_ca(d, "p2s root", stem="p2s-ca")
        self.other_ca = make_ca(d, "stranger root", stem="other-ca")
        self.clients = {n: make_cert(d, self.client_ca, n, stem=n) for n in ("c1", "c2", "c3")}
        self.stranger = make_cert(d, self.other_ca, "c9", stem="c9")
        (d / "users.toml").write_text(
            "".join(
                f'[users.{u}]\nnt_hash = "{nt_hash_of(u + "-pw").hex()}"\n'
                for u in ("alice", "bob")
            )
        )
        (d / "revoked.txt").write_text("")

    def config_text(self, **p2s: Any) -> str:
        values = {
            "address_pool": [POOL],
            "dns": ["10.1.0.53"],
            "auth": ["certificate", "eap-mschapv2"],
            "client_ca": [str(self.client_ca.cert)],
            "users_file": str(self.dir / "users.toml"),
            "revoked": str(self.dir / "revoked.txt"),
            "max_clients": 4,
            "lease_hold": 600,
        }
        values.update(p2s)
        lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
        return f"""
[gateway]
name = "hub"
address = "{GW_ADDR}"
id = "{GW_ID}"
networks = ["10.1.0.0/16"]
certificate = "{self.gw.cert}"
private_key = "{self.gw.key}"

[[site]]
name = "branch"
address = "198.51.100.2"
networks = ["10.2.0.0/16"]
psk = "a pre-shared key long enough"

[p2s]
{lines}
"""

    def write(self, **p2s: Any) -> Path:
        path = self.dir / "gatewayd.toml"
        path.write_text(self.config_text(**p2s))
        return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("p2s-runner"))


def _key(files: CertFiles) -> Any:
    return serialization.load_pem_private_key(files.key.read_bytes(), password=None)


def _cert(files: CertFiles) -> x509.Certificate:
    return x509.load_pem_x509_certificate(files.cert.read_bytes())


class Lab:
    """The daemon under test and its clients, on one in-memory wire."""

    def __init__(self, config: Config, path: Path) -> None:
        # GatewayDaemon takes the running loop; timers it arms later are never run here.
        self.loop = asyncio.new_event_loop()

        async def make() -> GatewayDaemon:
            return GatewayDaemon(config, str(path))

        self.daemon = self.loop.run_until_complete(make())
        d = self.daemon
        d.creds = Credentials.load(config.gateway)
        d.kernel = Kernel()  # type: ignore[assignment]
        d.endpoints = Endpoints(
            *(socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
        )
        d.p2s = P2sRunner(d, config, d.creds)
        d.p2s.start()
        for site in config.sites:
            d._add_site(config, site)
        d._send = self._from_gateway  # type: ignore[method-assign]
        self.clients: dict[tuple[str, int], IkeSession] = {}
        self.now = 0.0

    def close(self) -> None:
        for h in self.daemon._timers.values():
            h.cancel()
        assert self.daemon.endpoints is not None
        self.daemon.endpoints.close()
        self.loop.close()

    @property
    def p2s(self) -> P2sRunner:
        assert self.daemon.p2s is not None
        return self.daemon.p2s

    def _from_gateway(self, d: Datagram) -> None:
        client = self.clients.get((d.remote[0], d.remote[1]))
        if client is None:
            return
        client.receive_datagram(d.data, (GW_ADDR, d.local_port), time.time())
        self._drain(client)

    def _drain(self, client: IkeSession) -> None:
        for d in client.datagrams_to_send():
            addr = (client.local_addr[0], client.local_addr[1])
            self.daemon._receive_ike(d.data, addr, d.local_port)

    def connect(self, cfg: SessionConfig, addr: str, port: int = 500) -> IkeSession:
        s = IkeSession(cfg, initiator=True, local_addr=(addr, port), remote_addr=(GW_ADDR, 500),
                       now=time.time())  # fmt: skip
        self.clients[(addr, port)] = s
        s.initiate(time.time())
        self._drain(s)
        return s

    def events(self, s: IkeSession) -> list[Any]:
        out = []
        while (e := s.next_event()) is not None:
            out.append(e)
        return out


def client_config(
    pki: Pki,
    name: str,
    *,
    vip: bool = True,
    eap: str | None = None,
    password: str | None = None,
    files: CertFiles | None = None,
) -> SessionConfig:
    esp = (parse_proposal("aes128gcm16", ProtocolId.ESP),)
    base: dict[str, Any] = dict(
        name=name,
        remote_id=Identity.parse(GW_ID),
        ike_proposals=[parse_proposal("aes256gcm16-prfsha256-x25519", ProtocolId.IKE)],
        children=[ChildConfig("rw", any_selectors()[:1], any_selectors()[:1], esp)],
        trust=TrustStore([_cert(pki.gw_ca)]),
        remote_auth="pubkey",
        request_virtual_ip=(4,) if vip else (),
    )
    if eap is not None:
        return SessionConfig(local_id=Identity.parse(f"{eap}@example.org"), eap_identity=eap,
                             eap_password=password or f"{eap}-pw", **base)  # fmt: skip
    files = files or pki.clients[name]
    return SessionConfig(local_id=Identity.parse(files.dn), private_key=_key(files),
                         certificates=[_cert(files)], **base)  # fmt: skip


@pytest.fixture
def lab(pki: Pki) -> Iterator[Lab]:
    path = pki.write()
    lab = Lab(load_config(path), path)
    yield lab
    lab.close()


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def named(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == event]


def vip_of(lab: Lab, s: IkeSession) -> str:
    (assigned,) = [e for e in lab.events(s) if isinstance(e, ev.VirtualIpAssigned)]
    return str(assigned.address)


# ---------------------------------------------------------------------------------- tests


def test_three_certificate_clients_get_addresses_routes_and_sas(
    lab: Lab, pki: Pki, logs: list[MutableMapping[str, Any]]
) -> None:
    sessions = [lab.connect(client_config(pki, n), f"203.0.113.{i + 10}") for i, n in
                enumerate(("c1", "c2", "c3"))]  # fmt: skip
    assert all(s.state is State.ESTABLISHED for s in sessions)
    vips = [vip_of(lab, s) for s in sessions]
    assert len(set(vips)) == 3 and all(v.startswith("172.16.201.") for v in vips)
    d = lab.daemon
    for s, vip in zip(sessions, vips, strict=True):
        identity = str(s.config.local_id)
        route = d.routes.lookup(vip)
        assert route is not None and route.site == route_site(identity)
        assert route.state == "up" and d.sadb.outbound(route.target) is not None
        # The inbound SA admits the client's virtual IP as source, nothing else.
        (client,) = [c for c in lab.p2s.clients.values() if c.identity == identity]
        (rec,) = client.records.values()
        sel = rec.inbound.selectors
        assert sel is not None
        lan = ipaddress.ip_address("10.1.0.1").packed
        assert sel.allows(ipaddress.ip_address(vip).packed, lan, 0, 0, 0)
        assert not sel.allows(ipaddress.ip_address("172.16.201.6").packed, lan, 0, 0, 0)
    assert lab.p2s.kernel_prefixes and str(lab.p2s.kernel_prefixes[0]) == POOL
    assert POOL in d.kernel.routes  # type: ignore[union-attr]
    connected = named(logs, "p2s_client_connected")
    assert [c["virtual_ip"] for c in connected] == [[v] for v in vips]
    assert {c["auth"] for c in connected} == {"certificate"}
    status = gateway_status(d)["p2s"]
    assert status["pool"]["used"] == 3 and status["pool"]["size"] == 6
    assert sorted(c["virtual_ips"][0] for c in status["clients"]) == sorted(vips)
    assert all(c["remote"].startswith("203.0.113.") for c in status["clients"])
    text = render_status(json.loads(json.dumps(gateway_status(d))))
    assert "point-to-site: 3 clients" in text and all(v in text for v in vips)


def test_traffic_selectors_are_the_virtual_ip_and_the_routes(lab: Lab, pki: Pki) -> None:
    s = lab.connect(client_config(pki, "c1"), "203.0.113.10")
    events = lab.events(s)
    (up,) = [e for e in events if isinstance(e, ev.ChildSaUp)]
    (vip,) = [e for e in events if isinstance(e, ev.VirtualIpAssigned)]
    assert [str(t.start_addr) for t in up.child.local_ts] == [str(vip.address)]
    assert [f"{t.start_addr}-{t.end_addr}" for t in up.child.remote_ts] == [
        "10.1.0.0-10.1.255.255",
        "10.2.0.0-10.2.255.255",
    ]
    assert [str(n) for n in vip.subnets] == ["10.1.0.0/16", "10.2.0.0/16"]
    assert [str(a) for a in vip.dns] == ["10.1.0.53"]


def test_eap_clients_and_status_auth(
    lab: Lab, pki: Pki, logs: list[MutableMapping[str, Any]]
) -> None:
    a = lab.connect(client_config(pki, "a", eap="alice"), "203.0.113.20")
    b = lab.connect(client_config(pki, "b", eap="bob"), "203.0.113.21")
    assert a.state is State.ESTABLISHED and b.state is State.ESTABLISHED
    assert vip_of(lab, a) != vip_of(lab, b)
    clients = gateway_status(lab.daemon)["p2s"]["clients"]
    assert [(c["identity"], c["auth"]) for c in clients] == [
        ("alice", "eap-mschapv2"),
        ("bob", "eap-mschapv2"),
    ]


def test_refusals_are_logged(lab: Lab, pki: Pki, logs: list[MutableMapping[str, Any]]) -> None:
    wrong = lab.connect(client_config(pki, "a", eap="alice", password="nope"), "203.0.113.30")
    stranger = lab.connect(client_config(pki, "c9", files=pki.stranger), "203.0.113.31")
    assert wrong.state is State.CLOSED and stranger.state is State.CLOSED
    reasons = [e["reason"] for e in named(logs, "p2s_auth_failed")]
    assert any("wrong password for user 'alice'" in r for r in reasons)
    assert any(r.startswith("unknown CA: issuer O=gatewayd lab, CN=stranger root") for r in reasons)
    assert not lab.p2s.clients and lab.p2s.status(0)["pool"]["used"] == 0


def test_pool_exhausted_and_max_clients(pki: Pki, logs: list[MutableMapping[str, Any]]) -> None:
    path = pki.write(address_pool=["172.16.202.0/30"], max_clients=3)  # two addresses
    lab = Lab(load_config(path), path)
    try:
        s1 = lab.connect(client_config(pki, "c1"), "203.0.113.40")
        s2 = lab.connect(client_config(pki, "c2"), "203.0.113.41")
        s3 = lab.connect(client_config(pki, "c3"), "203.0.113.42")
        assert s1.state is State.ESTABLISHED and s2.state is State.ESTABLISHED
        failed = [e for e in lab.events(s3) if isinstance(e, ev.VirtualIpFailed)]
        assert failed and "INTERNAL_ADDRESS_FAILURE" in failed[0].reason
        assert named(logs, "p2s_pool_exhausted")
        assert s3.state is State.CLOSED  # the gateway deletes an IKE SA it gave no address
        # Fill to max_clients with a client asking for no address... then one more is refused.
        s4 = lab.connect(client_config(pki, "c3", vip=False), "203.0.113.43")
        assert s4.state is State.CLOSED and named(logs, "p2s_refused")[0]["reason"] == (
            "no virtual IP requested"
        )
        lab.p2s.p2s = lab.p2s.p2s.model_copy(update={"max_clients": 2})
        s5 = lab.connect(client_config(pki, "c3"), "203.0.113.44")
        assert s5.state is not State.ESTABLISHED
        assert any(e["reason"] == "max_clients" for e in named(logs, "p2s_refused"))
    finally:
        lab.close()


def test_reconnect_keeps_address_and_delete_frees_lease(
    lab: Lab, pki: Pki, logs: list[MutableMapping[str, Any]]
) -> None:
    s = lab.connect(client_config(pki, "c1"), "203.0.113.50")
    first = vip_of(lab, s)
    s.delete(time.time())
    lab._drain(s)
    assert s.state is State.CLOSED and not lab.p2s.clients
    assert lab.daemon.routes.lookup(first) is None
    assert lab.p2s.status(0)["pool"]["used"] == 0
    (gone,) = named(logs, "p2s_client_disconnected")
    assert gone["virtual_ip"] == [first]
    other = lab.connect(client_config(pki, "c2"), "203.0.113.51")
    assert vip_of(lab, other) != first  # the lease is held for c1
    again = lab.connect(client_config(pki, "c1"), "203.0.113.52", 4500)
    assert vip_of(lab, again) == first
    assert lab.daemon.routes.lookup(first) is not None


def test_same_identity_replaces_the_older_connection(lab: Lab, pki: Pki) -> None:
    old = lab.connect(client_config(pki, "a", eap="alice"), "203.0.113.60")
    vip = vip_of(lab, old)
    new = lab.connect(client_config(pki, "a", eap="alice"), "203.0.113.61")
    assert vip_of(lab, new) == vip
    assert old.state is State.CLOSED and new.state is State.ESTABLISHED
    route = lab.daemon.routes.lookup(vip)
    assert route is not None and route.state == "up"
    (client,) = lab.p2s.clients.values()
    assert client.session.remote_addr[0] == "203.0.113.61"
    assert lab.p2s.status(0)["pool"]["used"] == 1


def test_reload_keeps_allowed_clients_and_drops_revoked_and_removed(lab: Lab, pki: Pki) -> None:
    c1 = lab.connect(client_config(pki, "c1"), "203.0.113.70")
    c2 = lab.connect(client_config(pki, "c2"), "203.0.113.71")
    alice = lab.connect(client_config(pki, "a", eap="alice"), "203.0.113.72")
    bob = lab.connect(client_config(pki, "b", eap="bob"), "203.0.113.73")
    serial = _cert(pki.clients["c2"]).serial_number
    users = pki.dir / "users.toml"
    saved_users = users.read_text()
    try:
        (pki.dir / "revoked.txt").write_text(f"serial:{serial:x}\n")
        users.write_text(saved_users.split("[users.bob]")[0])
        result = lab.daemon.reload()
        assert result["p2s"] == ["kept=2", "dropped=2"]
        for s in (c1, c2, alice, bob):
            lab._drain(s)
        assert c1.state is State.ESTABLISHED and alice.state is State.ESTABLISHED
        assert c2.state is State.CLOSED and bob.state is State.CLOSED
    finally:
        (pki.dir / "revoked.txt").write_text("")
        users.write_text(saved_users)


def test_revoked_certificate_is_refused(
    lab: Lab, pki: Pki, logs: list[MutableMapping[str, Any]]
) -> None:
    serial = _cert(pki.clients["c3"]).serial_number
    try:
        (pki.dir / "revoked.txt").write_text(f"serial:{serial:x}\n")
        lab.daemon.reload()
        s = lab.connect(client_config(pki, "c3"), "203.0.113.80")
        assert s.state is State.CLOSED
        assert any("revoked" in e["reason"] for e in named(logs, "p2s_auth_failed"))
    finally:
        (pki.dir / "revoked.txt").write_text("")


def test_sites_still_work_beside_p2s(lab: Lab) -> None:
    # The site's address is not a client: the responder is the site's, not the runner's.
    d = lab.daemon
    s = d._new_responder(None, ("198.51.100.2", 500), 0.0)
    assert s is not None and s.config.name == "branch" and not lab.p2s.owns(s)
    c = d._new_responder(None, ("203.0.113.99", 500), 0.0)
    assert c is not None and lab.p2s.owns(c)


def test_a_site_that_refuses_its_address_does_not_hand_it_to_p2s(
    lab: Lab, pki: Pki, logs: list[MutableMapping[str, Any]]
) -> None:
    """A site down by operator refuses its peer; that peer, certificate and all, is not
    then taken for a remote client."""
    d = lab.daemon
    d.sites["branch"].admin_down = True
    try:
        assert d._new_responder(None, ("198.51.100.2", 500), 0.0) is None
        (refused,) = named(logs, "ike_sa_refused")
        assert refused["reason"] == "site branch is down by operator"
        s = lab.connect(client_config(pki, "c1"), "198.51.100.2")
        assert s.state is not State.ESTABLISHED and not lab.p2s.clients
    finally:
        d.sites["branch"].admin_down = False


def test_reload_with_a_smaller_pool_keeps_the_clients_inside_it(lab: Lab, pki: Pki) -> None:
    c1 = lab.connect(client_config(pki, "c1"), "203.0.113.90")
    c2 = lab.connect(client_config(pki, "c2"), "203.0.113.91")
    assert (vip_of(lab, c1), vip_of(lab, c2)) == ("172.16.201.1", "172.16.201.2")
    try:
        pki.write(address_pool=["172.16.201.0/31"])  # holds .0 and .1 only
        assert lab.daemon.reload()["p2s"] == ["kept=1", "dropped=1"]
        lab._drain(c2)
        assert c1.state is State.ESTABLISHED and c2.state is State.CLOSED
        assert lab.p2s.status(0)["pool"] == {
            "prefixes": ["172.16.201.0/31"], "size": 2, "used": 1, "reserved": 1,
        }  # fmt: skip
        assert lab.daemon.kernel.routes == {"172.16.201.0/31"}  # type: ignore[union-attr]
        again = lab.connect(client_config(pki, "c3"), "203.0.113.92")
        assert vip_of(lab, again) == "172.16.201.0"  # .1 stays c1's
    finally:
        pki.write()


def test_a_client_beside_a_percent_any_site(pki: Pki) -> None:
    # A %any site is recognised by its identity; any other identity is a remote client.
    text = pki.config_text().replace(
        'address = "198.51.100.2"',
        'address = "%any"\nid = "branch.example.net"\nmode = "responder_only"',
    )
    path = pki.dir / "any.toml"
    path.write_text(text)
    lab = Lab(load_config(path), path)
    try:
        s = lab.connect(client_config(pki, "c1"), "203.0.113.95")
        assert s.state is State.ESTABLISHED
        assert vip_of(lab, s) == "172.16.201.1"
        (client,) = lab.p2s.clients.values()
        assert (
            client.session.config.name == "%p2s" and lab.daemon.sessions[client.session] is lab.p2s
        )
        assert not lab.daemon.sites["branch"].sessions
        a = lab.connect(client_config(pki, "a", eap="alice"), "203.0.113.96")
        assert a.state is State.ESTABLISHED
        rows = {c["identity"]: c["auth"] for c in lab.p2s.status(0)["clients"]}
        assert rows == {"O=gatewayd lab, CN=c1": "certificate", "alice": "eap-mschapv2"}
    finally:
        lab.close()


def test_a_client_may_not_use_a_proposal_only_a_percent_any_site_allows(
    pki: Pki, logs: list[MutableMapping[str, Any]]
) -> None:
    """IKE_SA_INIT accepts every candidate's proposals (the peer is not known yet); once
    IKE_AUTH names a remote client, its proposal must be one [p2s] allows."""
    site_only = "aes128gcm16-prfsha256-ecp256"
    text = pki.config_text(ike_proposals=["aes256gcm16-prfsha256-x25519"]).replace(
        'address = "198.51.100.2"',
        f'address = "%any"\nid = "branch.example.net"\nmode = "responder_only"\n'
        f'ike_proposals = ["{site_only}"]',
    )
    path = pki.dir / "any-proposals.toml"
    path.write_text(text)
    lab = Lab(load_config(path), path)
    try:
        cfg = client_config(pki, "c1")
        cfg.ike_proposals = [parse_proposal(site_only, ProtocolId.IKE)]
        s = lab.connect(cfg, "203.0.113.98")
        assert s.state is not State.ESTABLISHED and not lab.p2s.clients
        assert any("not allowed the IKE proposal" in str(e.get("reason", "")) for e in logs)
        ok = lab.connect(client_config(pki, "c2"), "203.0.113.99")  # p2s's own proposal
        assert ok.state is State.ESTABLISHED
    finally:
        lab.close()


def test_mobike_move_keeps_the_sa_and_the_address(lab: Lab, pki: Pki) -> None:
    s = lab.connect(client_config(pki, "c1"), "203.0.113.97")
    vip = vip_of(lab, s)
    (client,) = lab.p2s.clients.values()
    (rec,) = client.records.values()
    spi_in = rec.info.spi_in
    old_key = next(k for k, v in lab.clients.items() if v is s)
    del lab.clients[old_key]
    lab.clients[("198.51.100.77", old_key[1])] = s
    s.update_addresses(("198.51.100.77", old_key[1]), time.time())
    lab._drain(s)
    assert [type(e).__name__ for e in lab.events(s)].count("PeerAddressChanged") == 1
    assert lab.p2s.status(0)["clients"][0]["remote"].startswith("198.51.100.77:")
    assert rec.transport.addr[0] == "198.51.100.77"  # ESP follows the client
    assert rec.info.spi_in == spi_in and client.vips == [ipaddress.ip_address(vip)]
    route = lab.daemon.routes.lookup(vip)
    assert route is not None and lab.daemon.sadb.outbound(route.target) is rec.outbound


def test_ipv4_and_ipv6_virtual_ips(pki: Pki) -> None:
    path = pki.dir / "dual.toml"
    text = pki.config_text(address_pool=[POOL, "fd00:201::/120"])
    path.write_text(
        text.replace('networks = ["10.1.0.0/16"]', 'networks = ["10.1.0.0/16", "fd00:1::/48"]')
    )
    lab = Lab(load_config(path), path)
    try:
        cfg = client_config(pki, "c1")
        cfg.request_virtual_ip = (4, 6)
        cfg.children = [
            ChildConfig("rw", any_selectors(), any_selectors(), cfg.children[0].esp_proposals)
        ]
        s = lab.connect(cfg, "203.0.113.98")
        vips = sorted(str(e.address) for e in lab.events(s) if isinstance(e, ev.VirtualIpAssigned))
        assert vips == ["172.16.201.1", "fd00:201::1"]
        d = lab.daemon
        for vip in vips:
            route = d.routes.lookup(vip)
            assert route is not None and route.state == "up"
        (client,) = lab.p2s.clients.values()
        (rec,) = client.records.values()
        sel = rec.inbound.selectors
        assert sel is not None
        lan6 = ipaddress.ip_address("fd00:1::2").packed
        assert sel.allows(ipaddress.ip_address("fd00:201::1").packed, lan6, 0, 0, 0)
        assert not sel.allows(ipaddress.ip_address("fd00:201::2").packed, lan6, 0, 0, 0)
        assert d.kernel.routes == {POOL, "fd00:201::/120"}  # type: ignore[union-attr]
        status = lab.p2s.status(0)
        assert status["clients"][0]["virtual_ips"] == vips and status["pool"]["used"] == 2
    finally:
        lab.close()
