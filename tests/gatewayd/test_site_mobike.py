"""MOBIKE in SiteRunner: the peer moves, its Child SAs follow (gatewayd.childsa.retarget).

Gateway A initiates to B over the in-memory wire of test_site.py, then moves to another
address (or behind a NAT) with IkeSession.update_addresses. B must send its ESP to the
new place on the same OutboundSa (sequence numbers and counters go on), keep accepting
A's ESP, and show the new remote address in its status.
"""

from __future__ import annotations

from typing import Any, cast

from esp.datapath import Transport
from esp.sa import OutboundSa
from gatewayd.childsa import retarget
from ike.session.session import Datagram
from tests.gatewayd.test_site import (
    ADDR_A,
    KEY_B,
    Clock,
    Gw,
    Packet,
    World,
    a_to_b,
    b_to_a,
    config_a,
    config_b,
    in_loop,
)
from tests.gatewayd.test_site import clock as clock  # fixtures, used by name
from tests.gatewayd.test_site import world as world

NEW_A = "192.0.2.99"
NAT_A = ("203.0.113.7", 31000)  # A's NAT: its public address and mapped port


class RoamingGw(Gw):
    """A gateway whose packets leave from ``src`` (its new address, or its NAT's)."""

    def __init__(self, world: World, config: Any) -> None:
        super().__init__(world, config)
        self.src: tuple[str, int | None] | None = None

    def _send(self, d: Datagram) -> None:
        if self.src is None:
            return super()._send(d)
        ip, port = self.src
        self.world.send(Packet(d.data, (ip, port or d.local_port), d.remote))
        return None


def where(sa: OutboundSa) -> Transport:
    """Where the SA sends now (the data path's view of it)."""
    return cast(Transport, sa.transport)


def roam(world: World, a: RoamingGw, local: str, seen_as: tuple[str, int | None]) -> None:
    (s,) = a.live()
    a.src = seen_as
    world.gateways[seen_as[0]] = a  # B's answers reach A there
    s.update_addresses((local, 500), world.now)
    a.service(s)
    world.pump()


def setup(world: World) -> tuple[RoamingGw, Gw]:
    a = RoamingGw(world, config_a(encapsulation="esp"))  # plain ESP until a NAT shows
    b = Gw(world, config_b())
    a.site.start()
    world.pump()
    assert a.site.state == b.site.state == "established"
    return a, b


@in_loop
def test_peer_move_retargets_outbound_and_keeps_counters(world: World) -> None:
    a, b = setup(world)
    before = b.site.status(world.now)
    out = b.sadb.outbound(KEY_B)
    assert out is not None and where(out).addr == (ADDR_A, 0)
    assert a_to_b(a, b) and b_to_a(a, b)
    seq = out.seq

    roam(world, a, NEW_A, (NEW_A, None))

    assert before["ike_sa"]["mobike"] is True
    after = b.site.status(world.now)
    assert after["ike_sa"]["remote"] == f"{NEW_A}:4500"
    assert (after["ike_sa"]["spi_i"], after["ike_sa"]["spi_r"]) == (
        before["ike_sa"]["spi_i"],
        before["ike_sa"]["spi_r"],
    )
    assert [c["spi_in"] for c in after["child_sas"]] == [c["spi_in"] for c in before["child_sas"]]
    assert b.sadb.outbound(KEY_B) is out  # the same SA object: nothing reinstalled
    assert where(out).addr == (NEW_A, 0) and not where(out).udp
    assert where(out).sock is b.endpoints.esp
    assert after["child_sas"][0]["remote"] == NEW_A
    assert b_to_a(a, b) and a_to_b(a, b)  # both directions still open at the peer
    assert out.seq == seq + 1  # the sequence went on, no reset


@in_loop
def test_peer_move_behind_nat_switches_to_esp_in_udp(world: World) -> None:
    a, b = setup(world)
    out = b.sadb.outbound(KEY_B)
    assert out is not None
    roam(world, a, "10.20.0.5", NAT_A)
    assert where(out).udp and where(out).sock is b.endpoints.nat_t
    assert where(out).addr == NAT_A
    status = b.site.status(world.now)
    assert status["ike_sa"]["remote"] == f"{NAT_A[0]}:{NAT_A[1]}"
    assert status["ike_sa"]["nat_remote"] is True
    child = status["child_sas"][0]
    assert (child["encap"], child["remote"]) == ("udp", f"{NAT_A[0]}:{NAT_A[1]}")
    assert b_to_a(a, b)
    # And A itself now sends ESP in UDP to B's NAT-T port.
    (mine,) = [r for r in a.site.records.values()]
    assert mine.transport.udp and mine.transport.addr == (str(b.gateway.address), 4500)


@in_loop
def test_retarget_touches_only_the_records_given(world: World, clock: Clock) -> None:
    _a, b = setup(world)
    recs = list(b.site.records.values())
    out = recs[0].outbound
    moved = retarget([], b.endpoints, ("198.18.0.1", 4500), True)
    assert moved == [] and where(out).addr == (ADDR_A, 0)
    moved = retarget(recs, b.endpoints, ("198.18.0.1", 4500), True)
    assert moved == recs and where(out).addr == ("198.18.0.1", 4500)
    assert recs[0].info.remote_addr == ("198.18.0.1", 4500) and recs[0].info.udp_encap
