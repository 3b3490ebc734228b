"""Configuration payloads in IKE_AUTH: a client engine gets a virtual IP from a gateway engine."""

from __future__ import annotations

import ipaddress

from ike.constants import CfgAttr, CfgType
from ike.p2s import cp
from ike.p2s.pool import AddressPool
from ike.payloads import CfgAttribute, CpPayload
from ike.session import events as ev
from ike.session.config import ChildConfig, SessionConfig
from ike.session.session import State
from ike.session.ts import from_network
from tests.ike.harness import ADDR_R, Pair, make_config

IP = ipaddress.ip_address
NET = ipaddress.ip_network
GATEWAY = ADDR_R[0]


def gateway_config(provider: cp.PoolProvider) -> SessionConfig:
    return make_config(
        local_id=GATEWAY,
        remote_id="%any",
        local_nets=("10.0.0.0/16",),
        remote_nets=("0.0.0.0/0",),
        address_provider=provider,
    )


def client_config(name: str, families: tuple[int, ...] = (4,)) -> SessionConfig:
    return make_config(
        local_id=name,
        remote_id=GATEWAY,
        local_nets=("0.0.0.0/0",),
        remote_nets=("10.0.0.0/16",),
        request_virtual_ip=families,
    )


def provider(prefix: str = "172.16.0.0/29", **kw: object) -> cp.PoolProvider:
    return cp.PoolProvider(
        [AddressPool([prefix], **kw)],  # type: ignore[arg-type]
        dns=(IP("10.0.0.53"),),
        subnets=(NET("10.0.0.0/16"),),
    )


def connect(name: str, prov: cp.PoolProvider, seed: int = 1) -> Pair:
    p = Pair(client_config(name), gateway_config(prov), seed=seed)
    p.connect()
    return p


def test_client_gets_an_address_and_the_child_uses_it() -> None:
    p = connect("alice@example.org", provider())
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED
    (got,) = p.of("i", ev.VirtualIpAssigned)
    assert got.address == IP("172.16.0.1")
    assert got.dns == (IP("10.0.0.53"),) and got.subnets == (NET("10.0.0.0/16"),)
    (given,) = p.of("r", ev.VirtualIpAssigned)
    assert given.address == got.address and given.identity == "alice@example.org"
    ci = p.of("i", ev.ChildSaUp)[0].child
    cr = p.of("r", ev.ChildSaUp)[0].child
    host = from_network("172.16.0.1/32")
    assert ci.local_ts == (host,) and cr.remote_ts == (host,)
    assert ci.remote_ts == (from_network("10.0.0.0/16"),)


def test_second_client_gets_another_address_and_reconnect_keeps_it() -> None:
    prov = provider()
    a = connect("alice@example.org", prov, seed=1)
    b = connect("bob@example.org", prov, seed=2)
    addr_a = a.of("i", ev.VirtualIpAssigned)[0].address
    addr_b = b.of("i", ev.VirtualIpAssigned)[0].address
    assert addr_a != addr_b
    prov.release("alice@example.org", a.now)  # the daemon, on the IKE SA's delete
    again = connect("alice@example.org", prov, seed=3)
    assert again.of("i", ev.VirtualIpAssigned)[0].address == addr_a


def test_exhausted_pool_answers_internal_address_failure_without_child() -> None:
    prov = provider("172.16.0.0/30")  # two hosts
    connect("a@example.org", prov, seed=1)
    connect("b@example.org", prov, seed=2)
    p = connect("c@example.org", prov, seed=3)
    (failed,) = p.of("r", ev.VirtualIpFailed)
    assert failed.identity == "c@example.org" and "exhausted" in failed.reason
    assert "INTERNAL_ADDRESS_FAILURE" in p.of("i", ev.VirtualIpFailed)[0].reason
    assert not p.of("i", ev.ChildSaUp) and not p.of("r", ev.ChildSaUp)
    assert p.of("i", ev.ChildSaFailed)
    assert p.r.children == {} and p.i.children == {}


def test_ipv4_and_ipv6_together() -> None:
    prov = cp.PoolProvider(
        [AddressPool(["172.16.0.0/24"]), AddressPool(["2001:db8:f::/64"])],
        dns=(IP("2001:db8::53"),),
        subnets=(NET("10.0.0.0/16"), NET("2001:db8:1::/48")),
    )
    gw = gateway_config(prov)
    gw.children[0] = ChildConfig(
        "rw",
        (from_network("10.0.0.0/16"), from_network("2001:db8:1::/48")),
        (from_network("0.0.0.0/0"), from_network("::/0")),
        gw.children[0].esp_proposals,
    )
    cl = client_config("alice@example.org", (4, 6))
    cl.children[0] = ChildConfig(
        "rw", gw.children[0].remote_ts, gw.children[0].local_ts, cl.children[0].esp_proposals
    )
    p = Pair(cl, gw)
    p.connect()
    got = {e.address for e in p.of("i", ev.VirtualIpAssigned)}
    assert got == {IP("172.16.0.1"), IP("2001:db8:f::1")}
    ci = p.of("i", ev.ChildSaUp)[0].child
    assert set(ci.local_ts) == {from_network("172.16.0.1/32"), from_network("2001:db8:f::1/128")}


def test_gateway_without_provider_ignores_the_request() -> None:
    gw = gateway_config(provider())
    gw.address_provider = None
    p = Pair(client_config("alice@example.org"), gw)
    p.connect()
    assert p.of("i", ev.ChildSaUp)  # a plain site-to-site answer
    assert "no virtual IP" in p.of("i", ev.VirtualIpFailed)[0].reason


def test_reply_encoding_round_trips() -> None:
    a = cp.Assignment(
        (IP("172.16.0.9"), IP("2001:db8::9")),
        (IP("10.0.0.53"), IP("2001:db8::53")),
        (NET("10.0.0.0/16"), NET("2001:db8:1::/48")),
    )
    reply = cp.build_reply(a)
    assert reply.cfg_type == CfgType.CFG_REPLY
    assert cp.parse_reply(reply) == a


def test_request_families_and_bad_attributes() -> None:
    req = cp.build_request((4, 6))
    assert cp.requested_families(req) == frozenset({4, 6})
    junk = CpPayload(
        CfgType.CFG_REPLY,
        [CfgAttribute(CfgAttr.INTERNAL_IP4_ADDRESS, b"\x01"), CfgAttribute(99, b"x")],
    )
    assert cp.parse_reply(junk) == cp.Assignment(())
