"""gatewayd.site.SiteRunner with real IKE sessions, a real SA table and route table.

Two gateways, A (192.0.2.1) and B (192.0.2.2), each a small stand-in for GatewayDaemon
(the Services protocol: sessions, a Dispatcher for responders, a recording kernel-route
table, unbound sockets as endpoints), exchange IKE datagrams over an in-memory wire with
a frozen clock. Datagrams can be held and released one by one to look at each
intermediate state. The ESP SAs a runner installs are checked by sealing packets with
one gateway's table and opening them with the other's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import pytest

import gatewayd.site as site_module
from esp.datapath import Transport
from esp.route_table import RouteTable
from esp.sa import DropReason, EspDrop, OutboundSa
from esp.sadb import SaDatabase
from gatewayd.config import Config, parse_config
from gatewayd.ikeconf import Credentials, session_config
from gatewayd.netio import Endpoints
from gatewayd.pump import pump
from gatewayd.site import Services, SiteRunner
from ike.dispatcher import Dispatcher
from ike.session import IkeSession
from ike.session.events import AuthFailed, NegotiationFailed
from ike.session.session import Datagram, State
from tests.esp.packets import ipv4, udp

T0 = 1_700_000_000.0
ADDR_A, ADDR_B = "192.0.2.1", "192.0.2.2"
NET_A, NET_B = "10.1.0.0/16", "10.2.0.0/16"
PSK = "a pre-shared key long enough for the checker"
KEY_A, KEY_B = ("b", "net"), ("a", "net")  # A's route key for site b; B's for site a


def gateway_config(
    me: str, peer: str, name: str, nets: tuple[list[str], list[str]], **site: Any
) -> Config:
    psk = site.pop("psk", PSK)
    extra = "\n".join(f"{k} = {json.dumps(v)}" for k, v in site.items())
    return parse_config(
        f"""
[gateway]
name = "gw-{name}"
address = "{me}"
networks = {json.dumps(nets[0])}

[[site]]
name = "{"b" if name == "a" else "a"}"
address = "{peer}"
networks = {json.dumps(nets[1])}
psk = "{psk}"
ike_proposals = ["aes128gcm16-prfsha256-x25519"]
esp_proposals = ["aes128gcm16"]
{extra}
"""
    )


def config_a(nets: tuple[list[str], list[str]] = ([NET_A], [NET_B]), **site: Any) -> Config:
    return gateway_config(ADDR_A, ADDR_B, "a", nets, **site)


def config_b(nets: tuple[list[str], list[str]] = ([NET_B], [NET_A]), **site: Any) -> Config:
    return gateway_config(ADDR_B, ADDR_A, "b", nets, **site)


# ------------------------------------------------------------------ the fakes


class Clock:
    """Stands in for the time module inside gatewayd.site: frozen, moved by hand."""

    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


class KernelRecorder:
    """The kernel route table as SiteRunner sees it (KernelRoutes.add/remove)."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, str]] = []

    def add(self, net: Any) -> None:
        self.ops.append(("add", str(net)))

    def remove(self, net: Any) -> None:
        self.ops.append(("remove", str(net)))


class RecordingSadb(SaDatabase):
    """A real SaDatabase that also remembers every write, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[Any, ...]] = []

    def install_inbound(self, sa: Any) -> None:
        super().install_inbound(sa)
        self.log.append(("install_inbound", sa.spi))

    def install_outbound(self, key: Any, sa: OutboundSa) -> OutboundSa | None:
        old = super().install_outbound(key, sa)
        self.log.append(("install_outbound", key, sa.spi))
        return old

    def remove_inbound(self, spi: int) -> Any:
        sa = super().remove_inbound(spi)
        self.log.append(("remove_inbound", spi))
        return sa

    def remove_outbound(self, key: Any) -> OutboundSa | None:
        sa = super().remove_outbound(key)
        if sa is not None:
            self.log.append(("remove_outbound", key))
        return sa


@dataclass
class Packet:
    data: bytes
    src: tuple[str, int]
    dst: tuple[str, int]

    @property
    def spi_i(self) -> bytes:
        return self.data[:8]

    @property
    def exchange(self) -> int:
        return self.data[18]

    @property
    def is_response(self) -> bool:
        return bool(self.data[19] & 0x20)


class World:
    """The wire between the gateways. ``hold(p)`` true: the packet waits in ``held``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.gateways: dict[str, Gw] = {}
        self.queue: list[Packet] = []
        self.held: list[Packet] = []
        self.hold: Callable[[Packet], bool] = lambda p: False
        self.delivered: list[Packet] = []

    @property
    def now(self) -> float:
        return self.clock.now

    def send(self, p: Packet) -> None:
        (self.held if self.hold(p) else self.queue).append(p)

    def deliver(self, p: Packet) -> None:
        gw = self.gateways.get(p.dst[0])
        if gw is not None:  # a gateway that is gone drops it
            self.delivered.append(p)
            gw.receive(p)

    def pump(self, limit: int = 500) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            self.deliver(self.queue.pop(0))
        raise AssertionError("the wire never went quiet")

    def step(self, src: str, dst: str) -> Packet:
        """Deliver the oldest held packet (it must go src -> dst), then whatever follows."""
        assert self.held, "nothing is held"
        p = self.held.pop(0)
        assert (p.src[0], p.dst[0]) == (src, dst), f"held packet goes {p.src} -> {p.dst}"
        self.deliver(p)
        self.pump()
        return p

    def take(self, match: Callable[[Packet], bool]) -> Packet:
        """Deliver the first held packet that ``match`` picks, out of order."""
        p = next((p for p in self.held if match(p)), None)
        assert p is not None, "no such packet is held"
        self.held.remove(p)
        self.deliver(p)
        self.pump()
        return p

    def release(self) -> None:
        self.queue.extend(self.held)
        self.held.clear()
        self.pump()


class Gw:
    """One gateway as SiteRunner sees it (site.Services), wired like GatewayDaemon."""

    def __init__(self, world: World, config: Config) -> None:
        self.world = world
        self.config = config
        self.gateway = config.gateway
        self.sadb = RecordingSadb()
        self.routes: RouteTable[Any] = RouteTable()
        self.kernel = KernelRecorder()
        # Never bound, never used to send here: only their identity matters (Transport).
        self.endpoints = Endpoints(
            *(socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
        )
        self.stopping = False
        self.sessions: dict[IkeSession, SiteRunner | None] = {}
        self.history: list[IkeSession] = []  # every session this gateway ever had
        self.dispatcher = Dispatcher(self._new_responder)
        self.refused: list[str] = []
        creds = Credentials()
        services = cast(Services, self)  # a stand-in: KernelRecorder for KernelRoutes
        self.sites = {
            s.name: SiteRunner(
                services, s, session_config(config, s, creds), config.site_fingerprint(s)
            )
            for s in config.sites
        }
        world.gateways[str(self.gateway.address)] = self

    @property
    def address(self) -> str:
        return str(self.gateway.address)

    @property
    def site(self) -> SiteRunner:
        (runner,) = self.sites.values()
        return runner

    def close(self) -> None:
        self.endpoints.close()

    # -- Services

    def adopt(self, session: IkeSession, site: SiteRunner | None) -> None:
        self.sessions[session] = site
        if session not in self.history:
            self.history.append(session)
        if site is not None and session not in site.sessions:
            site.sessions.append(session)

    def service(self, s: IkeSession) -> None:
        pump(s, self._send, self._on_event)
        self.dispatcher.after(s)
        if s.state is State.CLOSED:
            runner = self.sessions.pop(s, None)
            if runner is not None:
                runner.on_closed(s)

    def alloc_spi(self) -> int:
        while True:
            spi = int.from_bytes(os.urandom(4), "big")
            if spi > 255 and self.sadb.inbound(spi) is None:
                return spi

    # -- like GatewayDaemon

    def _send(self, d: Datagram) -> None:
        self.world.send(Packet(d.data, (self.address, d.local_port), d.remote))

    def receive(self, p: Packet) -> None:
        session = self.dispatcher.receive(p.data, p.src, self.world.now)
        for d in self.dispatcher.replies:
            self._send(d)
        self.dispatcher.replies = []
        if session is not None:
            if session not in self.sessions:
                self.adopt(session, None)
            self.service(session)

    def _new_responder(self, _local: Any, remote: Any, now: float) -> IkeSession | None:
        candidates = [r for r in self.sites.values() if r.accepts_from(remote[0])]
        if not candidates:
            self.refused.append(remote[0])
            return None
        return IkeSession(
            candidates[0].session_config,
            initiator=False,
            local_addr=(self.address, 500),
            remote_addr=(remote[0], remote[1]),
            now=now,
            spi_alloc=self.alloc_spi,
        )

    def _on_event(self, s: IkeSession, e: Any) -> None:
        runner = self.sessions.get(s)
        if runner is None and s.state is State.ESTABLISHED:
            runner = self.sites.get(s.config.name)
            if runner is not None:
                self.adopt(s, runner)
        if runner is not None:
            runner.on_event(s, e)
        elif isinstance(e, AuthFailed | NegotiationFailed) and s.config.name in self.sites:
            self.sites[s.config.name].on_event(s, e)

    # -- views for the assertions

    def live(self) -> list[IkeSession]:
        return [s for s in self.site.sessions if s.state is State.ESTABLISHED]

    def initiate_extra(self, **config_changes: Any) -> IkeSession:
        """A second IKE SA for the site, started by hand (runner.connect() would refuse)."""
        runner = self.site
        cfg = replace(runner.session_config, **config_changes)
        s = IkeSession(
            cfg,
            initiator=True,
            local_addr=(self.address, 500),
            remote_addr=(str(runner.site.address), 500),
            now=self.world.now,
            spi_alloc=self.alloc_spi,
        )
        self.adopt(s, runner)
        s.initiate(self.world.now)
        self.service(s)
        return s


def in_loop(test: Callable[..., None]) -> Callable[..., None]:
    """Run a synchronous test body inside a running event loop (SiteRunner schedules
    reconnects with loop.call_later)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            test(*args, **kwargs)

        asyncio.run(main())

    return wrapper


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(site_module, "time", c)
    return c


@pytest.fixture
def world(clock: Clock) -> Iterator[World]:
    w = World(clock)
    yield w
    for gw in list(w.gateways.values()):
        gw.close()


def make_pair(world: World, a: Config | None = None, b: Config | None = None) -> tuple[Gw, Gw]:
    return Gw(world, a or config_a()), Gw(world, b or config_b())


def established(world: World, a: Config | None = None, b: Config | None = None) -> tuple[Gw, Gw]:
    """A and B with one IKE SA (A initiated) and its Child SA up."""
    gw_a, gw_b = make_pair(world, a, b)
    gw_a.site.start()
    world.pump()
    assert gw_a.site.state == gw_b.site.state == "established"
    return gw_a, gw_b


# ------------------------------------------------------------------ ESP through the tables


def inner(src: str, dst: str, payload: bytes = b"hello") -> bytes:
    return ipv4(src, dst, 17, udp(1000, 2000, payload))


def carries(sender: Gw, key: Any, receiver: Gw, src: str, dst: str) -> bool:
    """Does a packet sealed by the sender's outbound SA for ``key`` open at the receiver?"""
    sa = sender.sadb.outbound(key)
    if sa is None:
        return False
    packet = inner(src, dst, b"payload %d" % sa.packets)
    try:
        _sa, nh, got = receiver.sadb.open(sa.seal(packet, 4))
    except EspDrop:
        return False
    return (nh, got) == (4, packet)


def a_to_b(a: Gw, b: Gw) -> bool:
    return carries(a, KEY_A, b, "10.1.0.5", "10.2.0.7")


def b_to_a(a: Gw, b: Gw) -> bool:
    return carries(b, KEY_B, a, "10.2.0.7", "10.1.0.5")


def opens(receiver: Gw, sa: OutboundSa, src: str, dst: str) -> DropReason | None:
    """None if the receiver accepts a packet sealed with ``sa``, else the drop reason."""
    try:
        receiver.sadb.open(sa.seal(inner(src, dst), 4))
    except EspDrop as drop:
        return drop.reason
    return None


# ------------------------------------------------------------------ Child SA up / down


@in_loop
def test_child_sa_up_installs_both_directions_routes_and_kernel_routes(world: World) -> None:
    a, b = established(world, config_a(encapsulation="esp"))
    for gw, key, remote, peer_net in ((a, KEY_A, ADDR_B, NET_B), (b, KEY_B, ADDR_A, NET_A)):
        (rec,) = gw.site.records.values()
        assert rec.key == key
        assert gw.sadb.inbound_spis() == [rec.info.spi_in]
        assert gw.sadb.outbound(key) is rec.outbound
        assert rec.outbound.transport == Transport(gw.endpoints.esp, (remote, 0), udp=False)
        route = gw.routes.lookup(peer_net.replace("0.0/16", "3.4"))
        assert route is not None and route.target == key and route.state == "up"
        assert gw.kernel.ops == [("add", peer_net)]
    (rec_a,) = a.site.records.values()
    (rec_b,) = b.site.records.values()
    assert (rec_a.info.spi_out, rec_a.info.spi_in) == (rec_b.info.spi_in, rec_b.info.spi_out)
    assert a_to_b(a, b) and b_to_a(a, b)
    # A route-based site accepts inner sources from its own networks only.
    sa = a.sadb.outbound(KEY_A)
    assert sa is not None
    assert opens(b, sa, "10.9.0.1", "10.2.0.7") is DropReason.SELECTOR


@in_loop
def test_routes_exist_but_are_down_before_any_child_sa(world: World) -> None:
    a, _b = make_pair(world)
    route = a.routes.lookup("10.2.0.1")
    assert route is not None and route.site == "b" and route.state == "down"
    assert a.routes.lookup("10.3.0.1") is None
    assert a.kernel.ops == []
    assert a.site.state == "down"


@in_loop
def test_forced_udp_encapsulation_sends_from_the_nat_t_socket(world: World) -> None:
    a, b = established(world, config_a(encapsulation="udp"))
    (rec,) = a.site.records.values()
    assert rec.outbound.transport == Transport(a.endpoints.nat_t, (ADDR_B, 4500), udp=True)
    child = a.site.status(world.now)["child_sas"][0]
    assert (child["encap"], child["remote"]) == ("udp", f"{ADDR_B}:4500")
    assert a_to_b(a, b) and b_to_a(a, b)


@in_loop
@pytest.mark.parametrize(
    ("enc_a", "enc_b", "udp"),
    [("auto", "auto", True), ("auto", "esp", False), ("esp", "auto", False)],
)
def test_two_gatewayd_agree_on_esp_in_udp(world: World, enc_a: str, enc_b: str, udp: bool) -> None:
    """encapsulation = "auto" on both: the Vendor ID makes the responder fake NAT-D, so
    both carry ESP in UDP from the NAT-T socket; "esp" on either side keeps plain ESP."""
    a, b = established(world, config_a(encapsulation=enc_a), config_b(encapsulation=enc_b))
    for gw, peer in ((a, ADDR_B), (b, ADDR_A)):
        (rec,) = gw.site.records.values()
        if udp:
            want = Transport(gw.endpoints.nat_t, (peer, 4500), udp=True)
        else:
            want = Transport(gw.endpoints.esp, (peer, 0), udp=False)
        assert rec.outbound.transport == want
        assert gw.site.status(world.now)["child_sas"][0]["encap"] == ("udp" if udp else "esp")
    assert a_to_b(a, b) and b_to_a(a, b)


@in_loop
def test_policy_based_site_routes_each_pair_to_its_child(world: World) -> None:
    local, remote = ["10.1.0.0/16"], ["10.2.0.0/16", "10.3.0.0/16"]
    a, b = make_pair(
        world,
        config_a((local, remote), policy_based_traffic_selectors=True),
        config_b((remote, local), policy_based_traffic_selectors=True),
    )
    a.site.start()
    world.pump()
    keys = {("b", "10.1.0.0/16=10.2.0.0/16"), ("b", "10.1.0.0/16=10.3.0.0/16")}
    assert {r.key for r in a.site.records.values()} == keys
    for key in keys:
        dst = key[1].split("=")[1].replace("0.0/16", "0.9")
        route = a.routes.lookup(dst, "10.1.0.5")
        assert route is not None and route.target == key
        assert a.routes.lookup(dst, "10.7.0.5") is None  # wrong source: no pair
        assert carries(a, key, b, "10.1.0.5", dst)
    assert sorted(a.kernel.ops) == [("add", "10.2.0.0/16"), ("add", "10.3.0.0/16")]


@in_loop
def test_last_child_down_withdraws_routes_but_keeps_the_ike_sa(world: World) -> None:
    a, b = established(world)
    (rec,) = a.site.records.values()
    s = rec.session
    s.delete_child(rec.child_id, world.now)
    a.service(s)
    world.pump()
    for gw, peer_net in ((a, NET_B), (b, NET_A)):
        assert gw.site.records == {}
        assert gw.sadb.inbound_spis() == [] and gw.sadb.outbound_keys() == []
        route = gw.routes.lookup(peer_net.replace("0.0/16", "3.4"))
        assert route is not None and route.target is None and route.state == "down"
        assert gw.kernel.ops == [("add", peer_net), ("remove", peer_net)]
        assert gw.site.state == "established"  # the IKE SA stays
    assert s.state is State.ESTABLISHED


@in_loop
def test_ike_sa_deleted_by_peer_withdraws_everything(world: World) -> None:
    a, b = established(world, b=config_b(mode="responder_only"))  # B never reconnects
    (s,) = b.live()
    s.delete(world.now)
    b.service(s)
    world.pump()
    for gw, peer_net in ((a, NET_B), (b, NET_A)):
        assert gw.sadb.inbound_spis() == [] and gw.sadb.outbound_keys() == []
        assert gw.kernel.ops == [("add", peer_net), ("remove", peer_net)]
        assert gw.site.sessions == []


# ------------------------------------------------------------------ rekey


@pytest.mark.parametrize("rekeyer", ["a", "b"])
@in_loop
def test_child_rekey_is_make_before_break(world: World, rekeyer: str) -> None:
    a, b = established(world)
    first, second = (a, b) if rekeyer == "a" else (b, a)  # first: starts the rekey
    key_first, key_second = (KEY_A, KEY_B) if first is a else (KEY_B, KEY_A)
    (old_first,) = first.site.records.values()
    (old_second,) = second.site.records.values()
    src, dst = ("10.1.0.5", "10.2.0.7") if first is a else ("10.2.0.7", "10.1.0.5")
    a.sadb.log.clear()
    b.sadb.log.clear()

    world.hold = lambda p: True
    assert first.site.rekey(ike=False) == 1

    # 1. CREATE_CHILD_SA request at the responder: it installs the new inbound SA and
    #    keeps sending on the old one until the old SA is deleted.
    world.step(first.address, second.address)
    (new_second,) = [r for r in second.site.records.values() if r is not old_second]
    assert second.sadb.log == [("install_inbound", new_second.info.spi_in)]
    assert second.sadb.outbound(key_second) is old_second.outbound
    # 2. The response at the rekey's initiator: new inbound, outbound switched at once.
    world.step(second.address, first.address)
    (new_first,) = [r for r in first.site.records.values() if r is not old_first]
    assert new_first.info.spi_out == new_second.info.spi_in
    assert first.sadb.log == [
        ("install_inbound", new_first.info.spi_in),
        ("install_outbound", key_first, new_first.info.spi_out),
    ]
    assert second.sadb.outbound(key_second) is old_second.outbound
    # Each side's current outbound SA is accepted by the other, and so is a packet still
    # in flight on the initiator's old one.
    assert a_to_b(a, b) and b_to_a(a, b)
    assert opens(second, old_first.outbound, src, dst) is None
    # 3. The DELETE of the old SA at the responder: it switches to the successor first,
    #    then retires the old inbound SA.
    world.step(first.address, second.address)
    assert second.sadb.log == [
        ("install_inbound", new_second.info.spi_in),
        ("install_outbound", key_second, new_second.info.spi_out),
        ("remove_inbound", old_second.info.spi_in),
    ]
    assert opens(second, old_first.outbound, src, dst) is DropReason.UNKNOWN_SPI
    # 4. The DELETE response: the initiator retires its old inbound SA.
    world.step(second.address, first.address)
    assert first.sadb.log[2:] == [("remove_inbound", old_first.info.spi_in)]
    assert not world.held

    for gw in (a, b):
        (rec,) = gw.site.records.values()
        assert gw.sadb.inbound_spis() == [rec.info.spi_in]
        assert not any(op[0] == "remove_outbound" for op in gw.sadb.log)
        assert len(gw.kernel.ops) == 1  # the routes never flapped
    assert a_to_b(a, b) and b_to_a(a, b)


# ------------------------------------------------------------------ duplicates


@in_loop
def test_simultaneous_initiation_leaves_the_sa_the_lower_address_started(world: World) -> None:
    a, b = make_pair(world)
    a.site.start()
    b.site.start()
    (from_a,) = a.site.sessions
    (from_b,) = b.site.sessions
    world.pump()

    (live_a,) = a.live()
    (live_b,) = b.live()
    # B (192.0.2.2, the higher address) deleted the SA it initiated; A deleted nothing.
    assert live_a is from_a and live_a.initiator
    assert not live_b.initiator and live_b.sa is not None and from_a.sa is not None
    assert live_b.sa.spi_i == from_a.sa.spi_i
    assert from_b.state is State.CLOSED and from_b.close_reason == "duplicate IKE SA"
    closed_at_a = [s for s in a.history if s is not from_a]
    assert len(closed_at_a) == 1  # the responder side of B's attempt
    assert all(s.state is State.CLOSED for s in closed_at_a)
    assert not any(s.close_reason == "duplicate IKE SA" for s in closed_at_a)
    # The survivors carry traffic, on one Child SA per side.
    assert len(a.site.records) == len(b.site.records) == 1
    assert a_to_b(a, b) and b_to_a(a, b)
    assert a.site.status(world.now)["ike_sas"] == b.site.status(world.now)["ike_sas"] == 1


IKE_SA_INIT, IKE_AUTH = 34, 35


def message(spi_i: bytes, exchange: int, response: bool) -> Callable[[Packet], bool]:
    return lambda p: (p.spi_i, p.exchange, p.is_response) == (spi_i, exchange, response)


@pytest.mark.parametrize(
    "order",
    [
        "as_sent",
        "lower_side_hands_over",
        "responder_last",
    ],
)
@in_loop
def test_duplicate_resolution_never_withdraws_routes(world: World, order: str) -> None:
    a, b = make_pair(world)
    world.hold = lambda p: True
    a.site.start()
    b.site.start()
    (from_a,) = a.site.sessions
    (from_b,) = b.site.sessions
    assert from_a.sa is not None and from_b.sa is not None
    spi_a, spi_b = from_a.sa.spi_i, from_b.sa.spi_i
    if order == "responder_last":
        # On B (the higher address, which acts) its own SA comes up first, then the one
        # A started: B must hand traffic over to the latter before deleting its own.
        world.take(message(spi_a, IKE_SA_INIT, False))
        world.take(message(spi_b, IKE_SA_INIT, False))
        world.take(message(spi_a, IKE_SA_INIT, True))
        world.take(message(spi_b, IKE_SA_INIT, True))
        world.take(message(spi_b, IKE_AUTH, False))
        world.take(message(spi_b, IKE_AUTH, True))
        assert from_b.state is State.ESTABLISHED and b.kernel.ops == [("add", NET_A)]
        world.take(message(spi_a, IKE_AUTH, False))
    elif order == "lower_side_hands_over":
        # A's own SA comes up first, then the one B started, which becomes A's newest and
        # so carries A's traffic until B deletes it: A must move to its own SA first.
        world.take(message(spi_a, IKE_SA_INIT, False))
        world.take(message(spi_b, IKE_SA_INIT, False))
        world.take(message(spi_a, IKE_SA_INIT, True))
        world.take(message(spi_b, IKE_SA_INIT, True))
        world.take(message(spi_a, IKE_AUTH, False))
        world.take(message(spi_a, IKE_AUTH, True))
        world.take(message(spi_b, IKE_AUTH, False))
        (newest,) = [r for r in a.site.records.values() if r.session is not from_a]
        assert a.sadb.outbound(KEY_A) is newest.outbound
    world.hold = lambda p: False
    world.release()

    (live_a,) = a.live()
    assert len(b.live()) == 1
    assert live_a is from_a and from_b.close_reason == "duplicate IKE SA"
    assert a_to_b(a, b) and b_to_a(a, b)
    for gw, net in ((a, NET_B), (b, NET_A)):
        removes = [op for op in gw.sadb.log if op[0] == "remove_outbound"]
        assert removes == [], f"{gw.address}: outbound withdrawn during the hand-over"
        assert gw.kernel.ops == [("add", net)], f"{gw.address}: {gw.kernel.ops}"


# ------------------------------------------------------------------ INITIAL_CONTACT


@in_loop
def test_initial_contact_closes_only_sas_established_before_the_new_one_began(
    world: World, clock: Clock
) -> None:
    a, b = established(world)
    (s1,) = a.live()
    b.close()
    b2 = Gw(world, config_b())  # B restarts: it knows nothing of s1

    clock.now += 10
    b2.site.start()  # s2: its IKE_AUTH carries INITIAL_CONTACT; hold it back for now
    (s2_b,) = b2.site.sessions
    assert s2_b.sa is not None
    spi_s2 = s2_b.sa.spi_i
    world.hold = lambda p: p.spi_i == spi_s2 and p.exchange == 35  # IKE_AUTH
    world.pump()
    assert len(world.held) == 1

    clock.now += 1
    s3_b = b2.initiate_extra(initial_contact=False)  # s3: up while s2 is half-way
    world.pump()
    assert s3_b.state is State.ESTABLISHED
    assert s1.state is State.ESTABLISHED  # no INITIAL_CONTACT from s3

    clock.now += 1
    world.hold = lambda p: False
    world.release()
    s2, s3 = (
        next(s for s in a.site.sessions if s.sa is not None and s.sa.spi_i == spi)
        for spi in (spi_s2, s3_b.sa.spi_i)  # type: ignore[union-attr]
    )
    assert s1.state is State.CLOSED and s1.close_reason == "replaced after INITIAL_CONTACT"
    assert s2.state is State.ESTABLISHED and s2.created_at == T0 + 10
    assert s3.state is State.ESTABLISHED  # established after s2 began: kept
    assert all(r.session is not s1 for r in a.site.records.values())
    assert a.kernel.ops == [("add", NET_B)]  # traffic moved on; never withdrawn
    assert a.sadb.outbound(KEY_A) is not None


# ------------------------------------------------------------------ back-off


def test_reconnect_back_off_doubles_to_the_cap_and_resets(
    world: World, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (site_module.BACKOFF_FIRST, site_module.BACKOFF_MAX) == (1.0, 60.0)
    first, cap = 0.01, 0.04  # the same rules on a scale that runs in milliseconds
    monkeypatch.setattr(site_module, "BACKOFF_FIRST", first)
    monkeypatch.setattr(site_module, "BACKOFF_MAX", cap)

    async def main() -> None:
        a, b = make_pair(world, config_a(), config_b(psk="a different key, also long enough"))
        runner = a.site
        delays: list[float] = []
        backoffs: list[float] = []
        runner.start()
        world.pump()
        while len(delays) < 6:
            assert runner.retry_at is not None, runner.reason
            delays.append(runner.retry_at - clock.now)
            backoffs.append(runner.backoff)
            assert runner.state == "connecting"  # waiting counts as connecting
            assert runner.reason is not None and "authentication failed" in runner.reason
            seen = runner.retry_at
            for _ in range(200):  # the real timer fires the reconnect
                await asyncio.sleep(0.005)
                world.pump()
                if runner.retry_at != seen:
                    break
        expected = [first, 2 * first, 4 * first, cap, cap, cap]
        for got, want in zip(delays, expected, strict=True):
            assert 0.8 * want <= got <= 1.2 * want, (delays, expected)
        assert backoffs == [2 * first, 4 * first, cap, cap, cap, cap]

        # The peer is fixed; the next attempt succeeds and the back-off starts over.
        b.close()
        Gw(world, config_b())
        for _ in range(200):
            await asyncio.sleep(0.005)
            world.pump()
            if runner.state == "established":
                break
        assert runner.state == "established"
        assert runner.backoff == first
        assert runner.reason is None and runner.retry_at is None

    asyncio.run(main())


# ------------------------------------------------------------------ down / up


@in_loop
def test_down_stops_reconnects_and_refuses_the_peer(world: World) -> None:
    a, b = established(world)
    a.site.down()
    world.pump()
    runner = a.site
    assert runner.state == "down" and runner.admin_down
    assert runner.sessions == [] and runner.retry_at is None
    assert not runner.accepts_from(ADDR_B)
    assert a.sadb.inbound_spis() == [] and a.sadb.outbound_keys() == []
    assert a.kernel.ops == [("add", NET_B), ("remove", NET_B)]
    status = runner.status(world.now)
    assert (status["state"], status["ike_sa"], status["child_sas"]) == ("down", None, [])
    assert status["admin_down"] is True

    # B tries again: A refuses before keeping any state.
    b.site.connect()
    world.pump()
    assert a.refused == [ADDR_B]
    assert a.sessions == {} and runner.sessions == []
    assert runner.state == "down"

    runner.up()
    world.pump()
    assert runner.state == "established" and runner.accepts_from(ADDR_B)
    assert a_to_b(a, b) and b_to_a(a, b)


@in_loop
def test_responder_only_site_never_initiates(world: World) -> None:
    a, b = make_pair(world, config_a(mode="responder_only"), config_b())
    a.site.start()
    assert a.site.sessions == [] and world.queue == []
    assert a.site.accepts_from(ADDR_B) and not a.site.accepts_from("192.0.2.99")
    b.site.start()
    world.pump()
    assert a.site.state == "established"


# ------------------------------------------------------------------ status


HEX = re.compile(r"^[0-9a-f]+$")


@in_loop
def test_status_fields(world: World, clock: Clock) -> None:
    a, b = make_pair(world, config_a(encapsulation="esp"))
    assert a.site.status(world.now)["state"] == "down"
    world.hold = lambda p: True
    a.site.start()
    assert a.site.status(world.now)["state"] == "connecting"
    world.hold = lambda p: False
    world.release()

    clock.now += 3.1
    for _ in range(2):
        assert a_to_b(a, b)
    assert b_to_a(a, b)
    st = a.site.status(clock.now)
    json.dumps(st)  # what gatewayctl status --json prints
    (s,) = a.live()
    assert s.sa is not None
    assert (st["name"], st["state"], st["address"], st["mode"]) == (
        "b",
        "established",
        ADDR_B,
        "default",
    )
    assert st["reason"] is None and st["admin_down"] is False and st["ike_sas"] == 1
    ike = st["ike_sa"]
    assert ike["spi_i"] == s.sa.spi_i.hex() and len(ike["spi_i"]) == 16 and HEX.match(ike["spi_i"])
    assert ike["spi_r"] == s.sa.spi_r.hex() and len(ike["spi_r"]) == 16
    assert ike["role"] == "initiator"
    assert ike["proposal"] == "AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519"
    assert ike["remote"] == f"{ADDR_B}:500"
    assert ike["established_s"] == 3.1
    (child,) = st["child_sas"]
    (rec,) = a.site.records.values()
    (rec_b,) = b.site.records.values()
    assert child["spi_in"] == f"{rec.info.spi_in:08x}" == f"{rec_b.info.spi_out:08x}"
    assert child["spi_out"] == f"{rec.info.spi_out:08x}" == f"{rec_b.info.spi_in:08x}"
    assert len(child["spi_in"]) == 8 and HEX.match(child["spi_in"])
    assert child["proposal"].startswith("AES_GCM_16_128")
    assert child["local_ts"] == child["remote_ts"] == ["0.0.0.0/0", "::/0"]
    sent = len(inner("10.1.0.5", "10.2.0.7", b"payload 0")) * 2
    got = len(inner("10.2.0.7", "10.1.0.5", b"payload 0"))
    assert (child["packets_out"], child["bytes_out"]) == (2, sent)
    assert (child["packets_in"], child["bytes_in"]) == (1, got)
    assert child["established_s"] == 3.1
    assert (child["encap"], child["remote"], child["active"]) == ("esp", ADDR_B, True)

    other = b.site.status(clock.now)
    assert other["ike_sa"]["role"] == "responder"
    assert other["ike_sa"]["spi_i"] == ike["spi_i"]
    assert other["ike_sa"]["proposal"] == ike["proposal"]
