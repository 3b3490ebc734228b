"""EAP pass-through to a real FreeRADIUS (Debian's freeradius 3.2, its own config).

``rgw [our gateway's RADIUS socket] -- veth -- rad [freeradius on 10.77.0.5:1812]``

Most tests here are engine to engine in memory on the IKE side (our EapClient against a
gateway session whose EAP backend relays) with a real RADIUS side:
gatewayd.p2s.radius.RadiusTransport sends UDP from the rgw namespace to FreeRADIUS, which
runs EAP-MSCHAPv2 against its users file. The last test is the whole product: gatewayd's
[p2s] with strongSwan road warriors (tests/lab/roadwarrior.py) and FreeRADIUS in the
hub's LAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatewayd.p2s.radius import RadiusTransport
from ike.constants import NotifyType
from ike.eap.method import EapAnswer, EapClient, RelayEapBackend, relay_backend
from ike.eap.packets import RESPONSE, TYPE_IDENTITY, TYPE_MSCHAPV2, TYPE_NAK, Eap
from ike.radius import authenticator as ra
from ike.radius import packet as rp
from ike.radius.client import RadiusClient
from ike.radius.relay import RadiusEapRelay
from ike.session import eap as eap_ex
from ike.session import events as ev
from ike.session.session import IkeSession, State
from tests.ike import pki
from tests.ike.harness import Pair
from tests.ike.test_p2s_eap import client, gateway, pool
from tests.ike.test_radius_eap import last_answer
from tests.lab import Lab, ping, require_root_and_strongswan
from tests.lab.freeradius import FreeRadius, require_freeradius
from tests.lab.netns import Netns, veth
from tests.lab.requires import require_tools
from tests.lab.roadwarrior import p2s_lab, use_eap

pytestmark = pytest.mark.netns

# strongSwan's log line for one IKE_AUTH response with EAP-Failure and AUTHENTICATION_FAILED.
FAILED_ON_THE_WIRE = r"parsed IKE_AUTH response \d+ \[ EAP/FAIL N\(AUTH_FAILED\) \]"

SECRET = b"s3cret-for-radius"
GW_IP, RADIUS_IP, PROXY_PORT = "10.77.0.1", "10.77.0.5", 1912
USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


@contextlib.contextmanager
def inside(ns: Netns) -> Iterator[None]:
    """Sockets made in this block live in ``ns`` (pyroute2 setns for this thread)."""
    from pyroute2.netns import popns, pushns

    pushns(ns.name)
    try:
        yield
    finally:
        popns()


def udp_socket(ns: Netns, bind: tuple[str, int]) -> socket.socket:
    with inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(bind)
    return s


@dataclass
class RadiusLab:
    gw: Netns
    rad: Netns
    server: FreeRadius


@pytest.fixture
def radius_lab(lab: Lab) -> Iterator[RadiusLab]:
    require_freeradius()
    gw, rad = lab.netns("rgw"), lab.netns("rad")
    veth(
        gw,
        rad,
        a_ifname="rgw0",
        b_ifname="rad0",
        a_addrs=[f"{GW_IP}/24"],
        b_addrs=[f"{RADIUS_IP}/24"],
    )
    server = FreeRadius(
        rad,
        lab.workdir / "freeradius",
        address=RADIUS_IP,
        clients={"10.77.0.0/24": SECRET.decode()},
        users=USERS,
    )
    lab.register_log("freeradius", server.log_path)
    server.start()
    try:
        yield RadiusLab(gw, rad, server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca("CN=Test Root,O=gatewayd", "p256")


class Gateway:
    """Our gateway side: in-memory IKE pairs, one RADIUS transport for all of them."""

    def __init__(
        self, ns: Netns, server: tuple[str, int], *, timeout: float = 3.0, tries: int = 3
    ) -> None:
        rc = RadiusClient(server, SECRET, timeout=timeout, tries=tries)
        self.transport = RadiusTransport(RadiusEapRelay(rc, "gatewayd-test"), self._service)
        self.sock = udp_socket(ns, (GW_IP, 0))
        self.logins: dict[IkeSession, Login] = {}

    def _service(self, s: IkeSession) -> None:
        self.logins[s].pump()

    def close(self) -> None:
        self.transport.close()


class Login:
    """One remote user: our EAP-MSCHAPv2 client engine against the relaying gateway."""

    def __init__(
        self,
        gw: Gateway,
        ca: pki.Issued,
        user: str,
        password: str,
        seed: int,
        clients: list[EapClient],
    ) -> None:
        cfg = gateway(ca, pool())
        cfg.eap_users, cfg.eap_backend = None, relay_backend
        self.gw = gw
        self.p = Pair(client(ca, user, password), cfg, seed=seed, now=time.time())
        self.seen = 0
        self.clients = clients
        self.backend: Any = None

    def start(self) -> None:
        self.p.i.initiate(self.p.now)
        self.pump()

    def pump(self) -> None:
        p = self.p
        p.now = time.time()
        p.run()
        self.gw.logins[p.r] = self
        if p.r.eap is not None:
            self.backend = p.r.eap.backend
        for e in p.events_r[self.seen :]:
            if isinstance(e, ev.EapPending):
                self.gw.transport.submit(p.r, e)
        self.seen = len(p.events_r)

    @property
    def done(self) -> bool:
        settled = (State.ESTABLISHED, State.CLOSED)
        return self.p.i.state in settled and self.p.r.state in settled


@pytest.fixture
def eap_clients(monkeypatch: pytest.MonkeyPatch) -> list[EapClient]:
    """Every EapClient our client engines make, to compare MSKs with the gateway's."""
    made: list[EapClient] = []
    real = eap_ex.client_for

    def record(s: IkeSession) -> EapClient | None:
        c = real(s)
        if c is not None:
            made.append(c)
        return c

    monkeypatch.setattr(eap_ex, "client_for", record)
    return made


async def until(cond: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_eap_mschapv2_login_through_freeradius(
    radius_lab: RadiusLab, ca: pki.Issued, eap_clients: list[EapClient]
) -> None:
    async def main() -> None:
        gw = Gateway(radius_lab.gw, (RADIUS_IP, 1812))
        gw.transport.open(gw.sock)
        try:
            alice = Login(gw, ca, "alice", "alice-secret", 1, eap_clients)
            alice.start()
            await until(lambda: alice.done, 10)
        finally:
            gw.close()
        p = alice.p
        assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED
        (c,) = eap_clients
        assert c.msk is not None and alice.backend.msk == c.msk and len(c.msk) == 64
        assert p.of("r", ev.VirtualIpAssigned)[0].identity == "alice"
        assert (
            p.of("i", ev.ChildSaUp)[0].child.encr_key_out
            == p.of("r", ev.ChildSaUp)[0].child.encr_key_in
        )
        st = gw.transport.status()
        assert st["results"] == {"challenge": 2, "accept": 1} and st["drops"] == {}
        assert st["outstanding"] == 0

    run(main())
    assert "Login OK: [alice" in radius_lab.server.log_path.read_text()


def test_wrong_password_is_refused(
    radius_lab: RadiusLab, ca: pki.Issued, eap_clients: list[EapClient]
) -> None:
    async def main() -> Login:
        gw = Gateway(radius_lab.gw, (RADIUS_IP, 1812))
        gw.transport.open(gw.sock)
        try:
            bob = Login(gw, ca, "bob", "not-bobs-password", 2, eap_clients)
            bob.start()
            await until(lambda: bob.done, 10)
            assert gw.transport.status()["results"]["reject"] == 1
            return bob
        finally:
            gw.close()

    bob = run(main())
    p = bob.p
    assert p.i.state is State.CLOSED and p.r.state is State.CLOSED
    (refused,) = p.of("r", ev.AuthFailed)
    assert "rejected the user (Access-Reject)" in refused.reason
    assert "EAP-Failure" in p.of("i", ev.AuthFailed)[0].reason
    assert last_answer(p).notify(NotifyType.AUTHENTICATION_FAILED) is not None
    assert not p.of("r", ev.VirtualIpAssigned) and not p.of("i", ev.ChildSaUp)
    assert "Login incorrect" in radius_lab.server.log_path.read_text()


def test_radius_down_times_out_and_other_sessions_carry_on(
    radius_lab: RadiusLab, ca: pki.Issued, eap_clients: list[EapClient]
) -> None:
    require_tools("nft")

    async def main() -> None:
        gw = Gateway(radius_lab.gw, (RADIUS_IP, 1812), timeout=1.0, tries=2)
        gw.transport.open(gw.sock)
        try:
            alice = Login(gw, ca, "alice", "alice-secret", 3, eap_clients)
            alice.start()
            await until(lambda: alice.done, 10)
            assert alice.p.r.state is State.ESTABLISHED

            # 1. Nothing listening: FreeRADIUS stopped.
            radius_lab.server.stop()
            bob = Login(gw, ca, "bob", "bob-secret", 4, eap_clients)
            bob.start()
            took = await until(lambda: bob.done, 10)
            assert 1.9 <= took < 3.5  # timeout x tries, not the IKE half-open timeout
            reason = bob.p.of("r", ev.AuthFailed)[0].reason
            assert reason == "RADIUS server 10.77.0.5:1812 did not answer (2 tries, 1 s apart)"
            assert bob.p.i.state is State.CLOSED
            assert last_answer(bob.p).notify(NotifyType.AUTHENTICATION_FAILED) is not None

            # Alice's SA is untouched and alive: a liveness check is answered.
            a = alice.p
            a.i.liveness_check(time.time())
            a.run()
            assert a.i.state is State.ESTABLISHED and a.r.state is State.ESTABLISHED
            assert a.i.sa is not None and a.i.sa.pending is None

            # 2. Requests dropped on the way (a firewall): same, then back to normal.
            radius_lab.server.start()
            radius_lab.rad.run(
                ["nft", "-f", "-"],
                input=(
                    "table inet radtest {\n chain input {\n"
                    "  type filter hook input priority 0;\n  udp dport 1812 drop\n }\n}\n"
                ),
            )
            carol = Login(gw, ca, "carol", "carol-secret", 5, eap_clients)
            carol.start()
            await until(lambda: carol.done, 10)
            assert "did not answer" in carol.p.of("r", ev.AuthFailed)[0].reason
            radius_lab.rad.run(["nft", "delete", "table", "inet", "radtest"])
            again = Login(gw, ca, "carol", "carol-secret", 6, eap_clients)
            again.start()
            await until(lambda: again.done, 10)
            assert again.p.r.state is State.ESTABLISHED and again.p.i.state is State.ESTABLISHED
            st = gw.transport.status()
            assert st["results"]["timeout"] == 2 and st["results"]["accept"] == 2
            assert st["retransmitted"] == 2 and st["outstanding"] == 0
        finally:
            gw.close()

    run(main())


class ForgingProxy:
    """Sits in front of FreeRADIUS; sends every answer twice: first re-signed with a wrong
    secret (as an attacker without the secret could), then the genuine one."""

    def __init__(self, ns: Netns) -> None:
        self.front = udp_socket(ns, (RADIUS_IP, PROXY_PORT))
        self.back = udp_socket(ns, (RADIUS_IP, 0))
        self.front.setblocking(False)
        self.back.setblocking(False)
        self.client: tuple[str, int] | None = None
        self.request_auth: dict[int, bytes] = {}
        self.forged = 0

    def open(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.front.fileno(), self._from_client)
        loop.add_reader(self.back.fileno(), self._from_server)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for s in (self.front, self.back):
            loop.remove_reader(s.fileno())
            s.close()

    def _from_client(self) -> None:
        data, self.client = self.front.recvfrom(4096)
        self.request_auth[data[1]] = data[4:20]
        self.back.sendto(data, (RADIUS_IP, 1812))

    def _from_server(self) -> None:
        data, _ = self.back.recvfrom(4096)
        assert self.client is not None
        forged = rp.decode(data)
        forged.attributes = [(t, bytes(16) if t == 80 else v) for t, v in forged.attributes]
        fake = ra.sign_response(forged, b"not-the-secret", self.request_auth[data[1]])
        self.front.sendto(fake, self.client)
        self.forged += 1
        self.front.sendto(data, self.client)


def test_response_with_a_wrong_secret_is_dropped_and_counted(
    radius_lab: RadiusLab, ca: pki.Issued, eap_clients: list[EapClient]
) -> None:
    async def main() -> None:
        proxy = ForgingProxy(radius_lab.rad)
        proxy.open()
        gw = Gateway(radius_lab.gw, (RADIUS_IP, PROXY_PORT))
        gw.transport.open(gw.sock)
        try:
            alice = Login(gw, ca, "alice", "alice-secret", 7, eap_clients)
            alice.start()
            await until(lambda: alice.done, 10)
        finally:
            gw.close()
            proxy.close()
        assert alice.p.r.state is State.ESTABLISHED and alice.p.i.state is State.ESTABLISHED
        assert proxy.forged == 3
        st = gw.transport.status()
        assert st["drops"] == {"bad_response_authenticator": 3}
        assert st["results"] == {"challenge": 2, "accept": 1}

    run(main())


def test_another_eap_method_passes_through_and_a_keyless_one_is_refused(
    radius_lab: RadiusLab,
) -> None:
    """The relay does not care which method runs: the peer NAKs FreeRADIUS's MS-CHAPv2
    for EAP-MD5 and logs in with it. EAP-MD5 derives no key, so the Access-Accept has no
    MS-MPPE keys and the gateway refuses: IKE's AUTH payloads need an MSK."""
    sock = udp_socket(radius_lab.gw, (GW_IP, 0))
    sock.settimeout(5)
    relay = RadiusEapRelay(RadiusClient((RADIUS_IP, 1812), SECRET))
    backend = RelayEapBackend(os.urandom)

    def exchange(raw: bytes) -> EapAnswer:
        assert backend.step(raw) is None
        pending = ev.EapPending(
            raw, backend.username, ("192.0.2.7", 4500), (GW_IP, 4500), backend.context
        )
        assert relay.submit("peer", pending, time.time()) is None
        (request,) = relay.datagrams_to_send()
        sock.sendto(request, relay.client.server)
        data, addr = sock.recvfrom(4096)
        out = relay.receive(data, addr, time.time())
        assert out is not None and out.key == "peer"
        return out.answer

    try:
        ident = Eap.decode(backend.start())
        answer = exchange(Eap(RESPONSE, ident.identifier, TYPE_IDENTITY, b"bob").encode())
        offer = Eap.decode(backend.resume(answer))
        assert offer.type == TYPE_MSCHAPV2  # the server's default method
        nak = Eap(RESPONSE, offer.identifier, TYPE_NAK, bytes([4]))  # rather EAP-MD5
        md5 = Eap.decode(backend.resume(exchange(nak.encode())))
        assert md5.type == 4
        challenge = md5.data[1 : 1 + md5.data[0]]
        value = hashlib.md5(bytes([md5.identifier]) + b"bob-secret" + challenge).digest()
        last = exchange(Eap(RESPONSE, md5.identifier, 4, bytes([16]) + value).encode())
    finally:
        sock.close()
    assert relay.results == {"challenge": 2, "accept": 1}  # FreeRADIUS said yes
    assert last.error is not None and "no MS-MPPE-Recv-Key" in last.error
    assert "Login OK: [bob" in radius_lab.server.log_path.read_text()


# ---------------------------------------------------------------- the daemon, strongSwan clients


def test_strongswan_road_warriors_through_freeradius(tmp_path: Path) -> None:
    """gatewayd's [p2s] with auth "eap-radius": three strongSwan 5.9.8 road warriors log in
    through FreeRADIUS (in the hub's LAN), get distinct virtual IPs and reach both LANs;
    a wrong password and a RADIUS outage are refused with a log event and
    AUTHENTICATION_FAILED, while the connected clients carry on."""
    require_root_and_strongswan()
    require_freeradius()
    secret_file = tmp_path / "radius.secret"
    secret_file.write_text(SECRET.decode() + "\n")
    secret_file.chmod(0o600)
    with Lab(tmp_path / "lab") as lab:
        radius_host = "10.1.0.2"  # the hub's LAN host (tests/lab address plan)
        p2s = p2s_lab(
            lab,
            tmp_path,
            clients=3,
            p2s={
                "auth": ["certificate", "eap-radius"],
                "radius": {
                    "server": f"{radius_host}:1812",
                    "secret_file": str(secret_file),
                    "timeout": 1,
                    "retries": 1,  # two sends in all
                    "nas_identifier": "hub-gatewayd",
                },
            },
        )
        hub = p2s.hub_site
        assert hub.lan_host_v4 == radius_host
        server = FreeRadius(
            hub.lan,
            tmp_path / "freeradius",
            address=radius_host,
            clients={hub.lan_net_v4: SECRET.decode()},
            users=USERS,
        )
        lab.register_log("freeradius", server.log_path)
        server.start()

        for rw, (user, password) in zip(p2s.clients, USERS.items(), strict=True):
            use_eap(rw, p2s, user, password)
        for rw in p2s.clients:
            rw.connect()
        clients = p2s.wait_clients(set(USERS))
        vips = set()
        for rw in p2s.clients:
            (vip,) = rw.virtual_ips()
            vips.add(vip)
            assert clients[rw.identity]["auth"] == "eap-radius"
            assert clients[rw.identity]["virtual_ips"] == [vip]
            rw.sw.wait_for_log(r"processing INTERNAL_IP4_DNS attribute")
            for dst in (hub.lan_host_v4, p2s.s1.lan_host_v4):
                assert ping(rw.ns, dst, count=2, interval=0.1).loss == 0, (rw.identity, dst)
        assert len(vips) == 3
        log = server.log_path.read_text()
        for user in USERS:
            assert f"Login OK: [{user}" in log
        assert 'NAS-Identifier = "hub-gatewayd"' in log

        # A wrong password: FreeRADIUS says Access-Reject, the client AUTHENTICATION_FAILED.
        wrong = p2s.clients[2]
        use_eap(wrong, p2s, "carol", "not-carols-password")
        mark = p2s.hub.mark()
        assert not wrong.try_connect()
        # The client may hear the refusal a moment before the hub's log line is written.
        refused = p2s.hub.wait_event("p2s_auth_failed", since=mark, timeout=10)
        assert "rejected the user (Access-Reject)" in refused["reason"], refused
        assert re.search(FAILED_ON_THE_WIRE, wrong.sw.log_text())

        # RADIUS down: refused after timeout x (retries + 1), the others stay connected.
        server.stop()
        use_eap(wrong, p2s, "carol", USERS["carol"])
        mark = p2s.hub.mark()
        started = time.monotonic()
        assert not wrong.try_connect()
        assert time.monotonic() - started < 15
        refused = p2s.hub.wait_event("p2s_auth_failed", since=mark, timeout=10)
        want = f"RADIUS server {radius_host}:1812 did not answer (2 tries, 1 s apart)"
        assert refused["reason"] == want, refused
        assert re.search(FAILED_ON_THE_WIRE, wrong.sw.log_text())
        assert set(p2s.connected()) == {"alice", "bob"}
        for rw in p2s.clients[:2]:
            assert ping(rw.ns, hub.lan_host_v4, count=2, interval=0.1).loss == 0
        radius = p2s.p2s_status().get("radius")
        assert radius is not None and radius["results"]["timeout"] >= 1, radius
