"""The hard cases: certificates, crossed exchanges (RFC 7296 §2.8.1, §2.25), cookies."""

from __future__ import annotations

import datetime
import time

import pytest

from ike.auth.certs import TrustStore
from ike.auth.identity import Identity
from ike.session import events as ev
from ike.session.session import State
from tests.ike import pki
from tests.ike.harness import Pair, make_config
from tests.ike.test_session import established, keys_agree

NOW = time.time()


def cert_pair(key_type: str, id_i: str, id_r: str, *, i_cert=None, trust_i=None, **kw):  # type: ignore[no-untyped-def]
    ca = pki.make_ca("CN=Test Root,O=gatewayd", key_type)  # type: ignore[arg-type]
    sans_i = [id_i] if "=" not in id_i else []
    sans_r = [id_r] if "=" not in id_r else []
    leaf_i = i_cert or pki.issue(
        ca, f"CN={id_i}" if "=" not in id_i else id_i, key_type, sans=sans_i
    )  # type: ignore[arg-type]
    leaf_r = pki.issue(ca, f"CN={id_r}" if "=" not in id_r else id_r, key_type, sans=sans_r)  # type: ignore[arg-type]
    cfg_i = make_config(
        local_id=id_i,
        remote_id=id_r,
        psk=None,
        private_key=leaf_i.key,
        certificates=leaf_i.chain(),
        trust=trust_i or TrustStore([ca.cert]),
        remote_auth="pubkey",
        **kw,
    )
    cfg_r = make_config(
        local_id=id_r,
        remote_id=id_i,
        psk=None,
        private_key=leaf_r.key,
        certificates=leaf_r.chain(),
        trust=TrustStore([ca.cert]),
        remote_auth="pubkey",
        **kw,
    )
    return Pair(cfg_i, cfg_r, now=NOW), ca


@pytest.mark.parametrize("key_type", ["p256", "p384", "rsa3072", "ed25519"])
@pytest.mark.parametrize(
    "ids", [("hub.example.net", "branch.example.net"), ("CN=hub,O=Example", "CN=branch,O=Example")]
)
def test_certificate_authentication(key_type: str, ids: tuple[str, str]) -> None:
    p, _ = cert_pair(key_type, *ids)
    p.connect()
    established(p)
    assert p.of("i", ev.IkeSaUp)[0].remote_id == str(Identity.parse(ids[1]))


def test_certificate_auth_fragmented_at_small_mtu() -> None:
    p, _ = cert_pair("rsa3072", "hub.example.net", "branch.example.net", fragment_size=576)
    p.connect()
    established(p)
    assert max(len(d) for _, d in p.wire.log[2:]) <= 576
    assert len(p.wire.log) > 4  # the certificate-bearing IKE_AUTH needed fragments


def test_untrusted_certificate_is_refused_with_reason() -> None:
    other_ca = pki.make_ca("CN=Rogue Root", "p256")
    rogue = pki.issue(other_ca, "CN=hub.example.net", "p256", sans=["hub.example.net"])
    p, _ = cert_pair("p256", "hub.example.net", "branch.example.net", i_cert=rogue)
    p.connect()
    reason = p.of("r", ev.AuthFailed)[0].reason
    assert "unknown CA" in reason or "CA" in reason, reason
    assert p.of("i", ev.AuthFailed) and p.r.state is State.CLOSED


def test_expired_certificate_is_refused_with_reason() -> None:
    ca = pki.make_ca("CN=Test Root", "p256")
    past = datetime.datetime.fromtimestamp(NOW - 10 * 86400, datetime.UTC)
    old = pki.issue(
        ca,
        "CN=hub.example.net",
        "p256",
        sans=["hub.example.net"],
        not_before=past - datetime.timedelta(days=30),
        not_after=past,
    )
    p, _ = cert_pair(
        "p256", "hub.example.net", "branch.example.net", i_cert=old, trust_i=TrustStore([ca.cert])
    )
    p.cfg_r.trust = TrustStore([ca.cert])
    p.connect()
    assert "expired" in p.of("r", ev.AuthFailed)[0].reason


def test_certificate_without_the_claimed_identity_is_refused() -> None:
    ca = pki.make_ca("CN=Test Root", "p256")
    wrong = pki.issue(ca, "CN=other", "p256", sans=["other.example.net"])
    p, _ = cert_pair(
        "p256", "hub.example.net", "branch.example.net", i_cert=wrong, trust_i=TrustStore([ca.cert])
    )
    p.cfg_r.trust = TrustStore([ca.cert])
    p.connect()
    assert "does not contain" in p.of("r", ev.AuthFailed)[0].reason


def test_initiator_refusing_the_responders_certificate_reports_one_ike_sa_down() -> None:
    """Found against strongSwan (tests/netns/test_interop_s2s.py): the initiator refusing
    the responder's certificate closed the session, then reopened it to send DELETE, and
    reported IkeSaDown twice. Now: one AuthFailed, one DELETE, one IkeSaDown."""
    rogue = pki.make_ca("CN=Rogue Root", "p256")
    p, _ = cert_pair(
        "p256", "hub.example.net", "branch.example.net", trust_i=TrustStore([rogue.cert])
    )
    p.connect()
    p.advance(60)
    (failed,) = p.of("i", ev.AuthFailed)
    assert "unknown CA" in failed.reason, failed
    (down,) = p.of("i", ev.IkeSaDown)
    assert down.reason == "authentication failed: " + failed.reason
    assert p.i.state is State.CLOSED
    # The responder had authenticated us; our DELETE told it.
    assert [e.reason for e in p.of("r", ev.IkeSaDown)] == ["deleted by peer"]


# ------------------------------------------------------------------ collisions


def crossed(p: Pair, act_i, act_r) -> None:  # type: ignore[no-untyped-def]
    """Both sides start an exchange before either sees the other's request."""
    act_i()
    act_r()
    p.run()


@pytest.mark.parametrize("seed", range(6))
def test_simultaneous_child_rekey_leaves_exactly_one_child(seed: int) -> None:
    p = Pair(seed=seed)
    p.connect()
    ci, cr = established(p)
    crossed(
        p, lambda: p.i.rekey_child(ci.child_id, p.now), lambda: p.r.rekey_child(cr.child_id, p.now)
    )
    assert len(p.i.children) == 1 and len(p.r.children) == 1, (p.events_i, p.events_r)
    (survivor_i,) = p.i.children.values()
    (survivor_r,) = p.r.children.values()
    assert survivor_i.spi_in == survivor_r.spi_out and survivor_i.spi_out == survivor_r.spi_in
    assert ci.spi_in not in (survivor_i.spi_in, survivor_i.spi_out)
    # Outbound ends on the survivor on both sides: the successor chain of every down child.
    for side in ("i", "r"):
        rekeyed = {e.child.child_id: e.child for e in p.of(side, ev.ChildSaRekeyed)}
        downs = p.of(side, ev.ChildSaDown)
        survivor = survivor_i if side == "i" else survivor_r
        old_down = [d for d in downs if d.spi_in == (ci.spi_in if side == "i" else cr.spi_in)]
        assert old_down and old_down[0].successor == survivor.child_id
        assert survivor.child_id in rekeyed
    # The survivor's keys agree.
    info_i = next(
        e.child for e in p.of("i", ev.ChildSaRekeyed) if e.child.child_id == survivor_i.child_id
    )
    info_r = next(
        e.child for e in p.of("r", ev.ChildSaRekeyed) if e.child.child_id == survivor_r.child_id
    )
    keys_agree(p, info_i, info_r)


def test_both_sides_delete_the_same_child() -> None:
    p = Pair()
    p.connect()
    ci, cr = established(p)
    crossed(
        p,
        lambda: p.i.delete_child(ci.child_id, p.now),
        lambda: p.r.delete_child(cr.child_id, p.now),
    )
    assert not p.i.children and not p.r.children
    assert len(p.of("i", ev.ChildSaDown)) == 1 and len(p.of("r", ev.ChildSaDown)) == 1
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED


def test_rekey_crossed_with_delete() -> None:
    p = Pair()
    p.connect()
    ci, cr = established(p)
    crossed(
        p, lambda: p.i.rekey_child(ci.child_id, p.now), lambda: p.r.delete_child(cr.child_id, p.now)
    )
    # The peer refused to rekey what it is deleting; nothing is left half-made.
    assert not p.r.children, p.events_r
    assert not p.i.children or all(
        c.spi_out in {x.spi_in for x in p.r.children.values()} for c in p.i.children.values()
    )
    assert p.i.state is State.ESTABLISHED


@pytest.mark.parametrize("seed", range(4))
def test_simultaneous_ike_rekey_leaves_one_ike_sa(seed: int) -> None:
    p = Pair(seed=seed)
    p.connect()
    established(p)
    old = p.i.spis
    crossed(p, lambda: p.i.rekey_ike(p.now), lambda: p.r.rekey_ike(p.now))
    p.advance(30)
    assert p.i.spis == p.r.spis and p.i.spis != old
    assert not p.i.retiring and not p.r.retiring
    assert len(p.i.children) == 1 and len(p.r.children) == 1
    # The surviving IKE SA works: a liveness check goes through.
    p.i.liveness_check(p.now)
    p.run()
    assert p.i.state is State.ESTABLISHED and p.r.state is State.ESTABLISHED


def test_ike_rekey_crossed_with_child_rekey() -> None:
    p = Pair()
    p.connect()
    ci, _ = established(p)
    old = p.i.spis
    crossed(p, lambda: p.i.rekey_child(ci.child_id, p.now), lambda: p.r.rekey_ike(p.now))
    p.advance(15)  # TEMPORARY_FAILURE retries happen after a random 2-10 s
    assert p.i.spis == p.r.spis and p.i.spis != old
    assert p.of("i", ev.ChildSaRekeyed)
    assert len(p.i.children) == 1 and len(p.r.children) == 1


# ------------------------------------------------------------------ dispatcher


def test_cookies_above_threshold_then_exchange_completes() -> None:
    p = Pair(dispatcher_opts={"cookie_threshold": 0})
    p.connect()
    established(p)
    # The first answer was a COOKIE; the retry carried it.
    assert p.dispatcher.drops["cookie_sent"] == 1
    assert len(p.wire.log) == 6


def test_half_open_limit_drops_new_initiators() -> None:
    p = Pair(dispatcher_opts={"max_half_open": 0})
    p.connect()
    assert p.dispatcher.drops["half_open_limit"] >= 1
    assert p.i.state is State.CONNECTING
