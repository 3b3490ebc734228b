"""EAP-MSCHAPv2 in IKE_AUTH: a client engine logs in to a certificate gateway engine."""

from __future__ import annotations

import pytest

from ike.auth.certs import TrustStore
from ike.eap.mschapv2 import nt_password_hash
from ike.eap.packets import FAILURE, Eap
from ike.p2s import cp
from ike.p2s.pool import AddressPool
from ike.payloads import EapPayload
from ike.session import events as ev
from ike.session.config import SessionConfig
from ike.session.session import State
from ike.session.ts import from_network
from tests.ike import pki
from tests.ike.harness import Pair, make_config

GATEWAY = "vpn.example.org"
USERS = {"alice": nt_password_hash("alice-secret"), "bob": nt_password_hash("bob-secret")}


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca("CN=Test Root,O=gatewayd", "p256")


def gateway(ca: pki.Issued, provider: cp.PoolProvider | None = None) -> SessionConfig:
    leaf = pki.issue(ca, f"CN={GATEWAY}", "p256", sans=[GATEWAY])
    return make_config(
        local_id=GATEWAY,
        remote_id="%any",
        psk=None,
        private_key=leaf.key,
        certificates=leaf.chain(),
        local_nets=("10.0.0.0/16",),
        remote_nets=("0.0.0.0/0",),
        eap_users=USERS.get,
        address_provider=provider,
    )


def client(ca: pki.Issued, user: str, password: str, vip: bool = True) -> SessionConfig:
    return make_config(
        local_id=f"{user}@example.org",
        remote_id=GATEWAY,
        psk=None,
        trust=TrustStore([ca.cert]),
        remote_auth="pubkey",
        local_nets=("0.0.0.0/0",),
        remote_nets=("10.0.0.0/16",),
        eap_identity=user,
        eap_password=password,
        request_virtual_ip=(4,) if vip else (),
    )


def pool() -> cp.PoolProvider:
    return cp.PoolProvider([AddressPool(["172.16.0.0/29"])])


def connect(cfg_i: SessionConfig, cfg_r: SessionConfig, seed: int = 1) -> Pair:
    p = Pair(cfg_i, cfg_r, seed=seed, now=pki.NOW.timestamp())
    p.connect()
    return p


def test_eap_mschapv2_login_with_virtual_ip(ca: pki.Issued) -> None:
    p = connect(client(ca, "alice", "alice-secret"), gateway(ca, pool()))
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED
    assert p.of("i", ev.IkeSaUp)[0].remote_id == GATEWAY
    (given,) = p.of("r", ev.VirtualIpAssigned)
    assert given.identity == "alice"  # the pool is keyed by the EAP user, not by IDi
    ci = p.of("i", ev.ChildSaUp)[0].child
    cr = p.of("r", ev.ChildSaUp)[0].child
    assert ci.local_ts == (from_network("172.16.0.1/32"),) == cr.remote_ts
    assert ci.encr_key_out == cr.encr_key_in
    # IKE_SA_INIT, then five IKE_AUTH round trips: the first request (answered with the
    # identity request), identity, MS-CHAPv2 response, MS-CHAPv2 success, the final AUTH.
    assert len(p.wire.log) == 2 + 2 * 5


def test_eap_without_virtual_ip(ca: pki.Issued) -> None:
    p = connect(client(ca, "bob", "bob-secret", vip=False), gateway(ca))
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED
    assert p.of("i", ev.ChildSaUp) and not p.of("i", ev.VirtualIpAssigned)


def test_wrong_password_fails_with_reasons_on_both_sides(ca: pki.Issued) -> None:
    p = connect(client(ca, "alice", "wrong"), gateway(ca, pool()))
    assert p.i.state is State.CLOSED and p.r.state is State.CLOSED
    (gw,) = p.of("r", ev.AuthFailed)
    assert "wrong password for user 'alice'" in gw.reason
    (cl,) = p.of("i", ev.AuthFailed)
    assert "EAP-Failure" in cl.reason
    assert not p.of("r", ev.VirtualIpAssigned) and not p.of("i", ev.ChildSaUp)


def test_unknown_user_is_refused(ca: pki.Issued) -> None:
    p = connect(client(ca, "mallory", "x"), gateway(ca, pool()))
    assert "unknown user 'mallory'" in p.of("r", ev.AuthFailed)[0].reason
    assert p.i.state is State.CLOSED


def test_two_users_get_different_addresses_and_reconnect_keeps_it(ca: pki.Issued) -> None:
    prov = pool()
    gw = gateway(ca, prov)
    a = connect(client(ca, "alice", "alice-secret"), gw, seed=1)
    b = connect(client(ca, "bob", "bob-secret"), gw, seed=2)
    addr_a = a.of("i", ev.VirtualIpAssigned)[0].address
    assert addr_a != b.of("i", ev.VirtualIpAssigned)[0].address
    prov.release("alice", a.now)
    again = connect(client(ca, "alice", "alice-secret"), gw, seed=3)
    assert again.of("i", ev.VirtualIpAssigned)[0].address == addr_a


def test_eap_failure_packet_is_well_formed() -> None:
    raw = Eap(FAILURE, 7).encode()
    assert raw == b"\x04\x07\x00\x04"
    assert EapPayload(raw).data == raw


def test_client_detects_a_gateway_that_does_not_know_the_password() -> None:
    import random

    from ike.eap.method import EapClient, EapServer
    from ike.errors import AuthenticationError

    rng = random.Random(5).randbytes
    server = EapServer(USERS.get, rng, b"gw")
    peer = EapClient("alice", "alice-secret", rng)
    answer = peer.step(server.start().encode())
    assert answer is not None
    answer = peer.step(server.step(answer.encode()).encode())  # the challenge
    assert answer is not None
    success = bytearray(server.step(answer.encode()).encode())
    success[12] ^= 1  # one hex digit of "S=..." changed
    with pytest.raises(AuthenticationError, match="authenticator response"):
        peer.step(bytes(success))
