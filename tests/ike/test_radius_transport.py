"""gatewayd.p2s.radius.RadiusTransport over real UDP on the loopback (no root needed):
our in-memory client/gateway pair relays through the transport to a RADIUS server socket
answered by the test's server (tests/ike/test_radius_eap.FakeRadius)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gatewayd.p2s.radius import RadiusSetupError, RadiusTransport, read_secret
from ike.eap.method import relay_backend
from ike.radius.client import RadiusClient
from ike.radius.relay import RadiusEapRelay
from ike.session import events as ev
from ike.session.session import IkeSession, State
from tests.ike import pki
from tests.ike.harness import Pair
from tests.ike.test_p2s_eap import client, gateway, pool
from tests.ike.test_radius_eap import SECRET, FakeRadius


class Server:
    """A UDP RADIUS server on 127.0.0.1 that answers (or not) with FakeRadius."""

    def __init__(self, secret: bytes = SECRET) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.addr = self.sock.getsockname()
        self.fake = FakeRadius(secret)
        self.answering = True
        self.received = 0

    def open(self) -> None:
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        data, peer = self.sock.recvfrom(4096)
        self.received += 1
        if self.answering:
            self.sock.sendto(self.fake.answer(data), peer)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


class Gateway:
    def __init__(self, server: tuple[str, int], timeout: float = 3.0, tries: int = 3) -> None:
        rc = RadiusClient(server, SECRET, timeout=timeout, tries=tries)
        self.transport = RadiusTransport(RadiusEapRelay(rc), self._service)
        self.pairs: dict[IkeSession, Login] = {}

    def _service(self, s: IkeSession) -> None:
        self.pairs[s].pump()


class Login:
    def __init__(self, gw: Gateway, ca: pki.Issued, user: str, password: str, seed: int) -> None:
        cfg = gateway(ca, pool())
        cfg.eap_users, cfg.eap_backend = None, relay_backend
        self.gw = gw
        self.p = Pair(client(ca, user, password), cfg, seed=seed, now=time.time())
        self.seen = 0

    def start(self) -> Login:
        self.p.i.initiate(self.p.now)
        self.pump()
        return self

    def pump(self) -> None:
        p = self.p
        p.now = time.time()
        p.run()
        self.gw.pairs[p.r] = self
        for e in p.events_r[self.seen :]:
            if isinstance(e, ev.EapPending):
                self.gw.transport.submit(p.r, e)
        self.seen = len(p.events_r)

    @property
    def done(self) -> bool:
        settled = (State.ESTABLISHED, State.CLOSED)
        return self.p.i.state in settled and self.p.r.state in settled


async def until(cond: Any, timeout: float) -> float:
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, "timed out"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca("CN=Test Root,O=gatewayd", "p256")


def test_logins_over_udp_and_a_timeout_that_spares_the_others(ca: pki.Issued) -> None:
    async def main() -> None:
        server = Server()
        server.open()
        gw = Gateway(server.addr, timeout=0.3, tries=2)
        gw.transport.open()
        try:
            alice = Login(gw, ca, "alice", "alice-secret", 1).start()
            wrong = Login(gw, ca, "alice", "nope", 2).start()  # at the same time
            await until(lambda: alice.done and wrong.done, 5)
            assert alice.p.r.state is State.ESTABLISHED
            assert alice.p.i.state is State.ESTABLISHED
            assert "Access-Reject" in wrong.p.of("r", ev.AuthFailed)[0].reason
            server.answering = False
            lost = Login(gw, ca, "alice", "alice-secret", 3).start()
            took = await until(lambda: lost.done, 5)
            assert 0.55 <= took < 2.0
            reason = lost.p.of("r", ev.AuthFailed)[0].reason
            assert reason.endswith("did not answer (2 tries, 0.3 s apart)")
            assert alice.p.r.state is State.ESTABLISHED  # untouched
            st = gw.transport.status()
            assert st["results"] == {"challenge": 3, "accept": 1, "reject": 1, "timeout": 1}
            assert st["retransmitted"] == 1 and st["outstanding"] == 0 and st["drops"] == {}
        finally:
            gw.transport.close()
            server.close()

    asyncio.run(main())


def test_wrong_secret_answers_are_dropped_then_time_out(ca: pki.Issued) -> None:
    async def main() -> None:
        server = Server(secret=b"a-different-secret")
        server.open()
        gw = Gateway(server.addr, timeout=0.2, tries=2)
        gw.transport.open()
        try:
            login = Login(gw, ca, "alice", "alice-secret", 4).start()
            await until(lambda: login.done, 5)
        finally:
            gw.transport.close()
            server.close()
        assert server.received == 2
        assert gw.transport.status()["drops"] == {"bad_response_authenticator": 2}
        assert "did not answer" in login.p.of("r", ev.AuthFailed)[0].reason

    asyncio.run(main())


def test_answers_for_closed_sessions_are_ignored(ca: pki.Issued) -> None:
    async def main() -> None:
        server = Server()
        server.answering = False
        server.open()
        gw = Gateway(server.addr)
        gw.transport.open()
        try:
            login = Login(gw, ca, "alice", "alice-secret", 5).start()
            await until(lambda: server.received == 1, 5)
            login.p.r.close("gone", time.time())
            gw.transport.forget(login.p.r)
            assert gw.transport.status()["outstanding"] == 0
            assert gw.transport._timer is None  # nothing left to retransmit
        finally:
            gw.transport.close()
            server.close()

    asyncio.run(main())


def test_secret_file_and_config(tmp_path: Path) -> None:
    path = tmp_path / "radius.secret"
    path.write_bytes(b"  s3cret \n")
    assert read_secret(path) == b"s3cret"
    path.write_bytes(b"\n")
    with pytest.raises(RadiusSetupError, match="is empty"):
        read_secret(path)
    with pytest.raises(RadiusSetupError, match="cannot read"):
        read_secret(tmp_path / "missing")
    path.write_bytes(b"s3cret\nnot part of it\n")  # the first line only
    cfg = SimpleNamespace(
        host="127.0.0.1", port=1812, secret_file=path, timeout=2.0, retries=4, nas_identifier=None
    )
    t = RadiusTransport.from_config(cfg, lambda s: None)
    c = t.relay.client
    assert c.server == ("127.0.0.1", 1812) and c.secret == b"s3cret"
    assert (c.timeout, c.tries, c.give_up_after) == (2.0, 5, 10.0)  # 4 retries: 5 sends
    assert t.relay.nas_identifier == b"gatewayd"
    assert "s3cret" not in repr(t.status())
