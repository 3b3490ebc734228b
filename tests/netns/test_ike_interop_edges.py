"""Harder strongSwan interop cases: NAT, crossed exchanges, lost messages, cookies, several
Child SAs, other certificate keys, IPv6, more algorithms. Same lab and checks as
test_ike_interop.py (tests/netns/interop_support.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from ike.crypto.proposals import DEFAULT_ESP_PROPOSALS, DEFAULT_IKE_PROPOSALS
from tests.lab import Auth, Child, Connection, Lab, StrongSwan, require_root_and_strongswan
from tests.lab.certs import make_ca, make_cert
from tests.lab.ike_peer import IkePeer
from tests.netns.interop_support import (
    CHILD,
    CONN,
    LOG_LEVELS,
    assert_agree,
    cert_spec,
    connect,
    ike_rekeyed,
    installed,
    rekey_by_strongswan,
    rekey_by_us,
    sites,
    spec,
    start_sw,
    stop_and_check_gone,
    sw_conn,
    wait_sw,
)

pytestmark = pytest.mark.netns

FAST_RETRANSMIT = {"retransmit_timeout": "1.0", "retransmit_base": "1.2"}


# ------------------------------------------------------------------ NAT


@pytest.mark.parametrize("natted", ["strongswan", "us"])
def test_behind_nat(lab: Lab, natted: str) -> None:
    """A real NAT (masquerade) in front of one side: NAT-T on 4500, ports rewritten."""
    require_root_and_strongswan()
    topo = lab.site_to_site(ipv6=False, nat_a=natted == "strongswan", nat_b=natted == "us")
    a, b = topo["a"], topo["b"]
    conn = sw_conn(a, b)
    conn.remote_addrs = [b.public_v4] if natted == "strongswan" else ["%any"]
    sw = start_sw(lab, a, conn).start()
    role = "responder" if natted == "strongswan" else "initiator"  # the NATed side opens
    peer, ike, child = connect(lab, sw, b, spec(a, b, role))
    assert ike["nat_remote" if natted == "strongswan" else "nat_local"]
    assert_agree(sw, ike, child, by_us=role == "initiator")
    child = rekey_by_strongswan(sw, peer)
    assert_agree(sw, ike, child, by_us=False)
    n = len(peer.events)
    peer.command("rekey_ike")
    ike = ike_rekeyed(peer, ike, n, by_us=True)
    assert_agree(sw, ike, child, by_us=False)
    stop_and_check_gone(sw, peer)


# ------------------------------------------------------------------ crossed exchanges


def live_children(peer: IkePeer) -> set[tuple[str, str]]:
    """(spi_in, spi_out) of our Child SAs that are up and not yet down."""
    up = [e["child"] for e in peer.events if e["type"] in ("ChildSaUp", "ChildSaRekeyed")]
    down = {e["child_id"] for e in peer.events if e["type"] == "ChildSaDown"}
    return {(c["spi_in"], c["spi_out"]) for c in up if c["child_id"] not in down}


def current_ike(peer: IkePeer) -> tuple[str, str]:
    rekeys = peer.of("IkeSaRekeyed")
    e = rekeys[-1] if rekeys else peer.of("IkeSaUp")[-1]
    return e["spi_i"], e["spi_r"]


# case -> (what strongSwan starts, what we start, the events that end the crossing)
CROSSINGS: dict[str, tuple[Callable[[StrongSwan], Any], str, tuple[str, ...]]] = {
    "child-rekeys": (lambda sw: sw.rekey(child=CHILD), "rekey_child", ("ChildSaRekeyed",)),
    "ike-rekeys": (lambda sw: sw.rekey(ike=CONN), "rekey_ike", ("IkeSaRekeyed",)),
    "their-child-rekey-our-ike-rekey": (
        lambda sw: sw.rekey(child=CHILD),
        "rekey_ike",
        ("ChildSaRekeyed", "IkeSaRekeyed"),  # one of them after TEMPORARY_FAILURE
    ),
    "their-ike-rekey-our-child-rekey": (
        lambda sw: sw.rekey(ike=CONN),
        "rekey_child",
        ("IkeSaRekeyed", "ChildSaRekeyed"),
    ),
    "their-child-delete-our-child-rekey": (
        lambda sw: sw.terminate(child=CHILD, timeout=10),  # the DELETE may be retransmitted
        "rekey_child",
        ("ChildSaDown",),
    ),
}


@pytest.mark.parametrize("case", sorted(CROSSINGS))
def test_crossed_exchanges(lab: Lab, case: str) -> None:
    """Both sides start an exchange at once (our driver holds what it receives for 0.3 s, so
    the requests cross): afterwards both must hold the same IKE SA and Child SAs."""
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b)).start()
    peer, ike, child = connect(lab, sw, b, spec(a, b, "responder", inbound_delay=0.3))
    assert_agree(sw, ike, child, by_us=False)
    theirs, ours, ends = CROSSINGS[case]
    worker = threading.Thread(target=theirs, args=(sw,))
    worker.start()
    time.sleep(0.05)  # their request goes first (and our driver holds it)
    peer.command(ours)
    worker.join()
    for etype in ends:  # a refused side retries later: strongSwan within 15 s, we within 10 s
        peer.wait_for(etype, since=2, timeout=30)
    if ends[-1] != "IkeSaRekeyed":  # the original Child SA is replaced or deleted
        peer.wait_for("ChildSaDown", lambda e: e["child_id"] == child["child_id"])

    def consistent(sas: list[Any]) -> bool:
        if len(sas) != 1 or sas[0].state != "ESTABLISHED":
            return False
        mine = live_children(peer)
        return (sas[0].spi_i, sas[0].spi_r) == current_ike(peer) and mine == {
            (c.spi_out, c.spi_in) for c in installed(sas[0])
        }

    wait_sw(sw, consistent, f"the same SAs on both sides after {case}")
    assert not peer.of("IkeSaDown") and not peer.of("AuthFailed")


# ------------------------------------------------------------------ lost messages


@pytest.mark.parametrize(
    ("role", "drop"),
    [("responder", {"drop_out": [2]}), ("initiator", {"drop_in": [2]})],
    ids=["our-answer-lost", "their-answer-lost"],
)
def test_lost_fragment_of_ike_auth(lab: Lab, role: str, drop: dict[str, list[int]]) -> None:
    """RSA certificates make IKE_AUTH two fragments each way (RFC 7383); the first fragment
    of an answer is lost, the request is retransmitted, the cached answer resent."""
    a, b = sites(lab)
    d = lab.workdir / "pki"
    ca = make_ca(d, key_type="rsa3072")
    certs = [make_cert(d, ca, f"{s}-gw", dns=[f"{s}.gw.example"], key_type="rsa3072") for s in "ab"]
    ids = ("@a.gw.example", "@b.gw.example")
    sw = lab.strongswan(a.gw, log_levels=LOG_LEVELS, charon_settings=FAST_RETRANSMIT)
    sw.add_cert(ca.cert, "x509ca")
    sw.add_cert(certs[0].key, "private")
    local = Auth("pubkey", id=ids[0], certs=[sw.add_cert(certs[0].cert)])
    sw.connections.append(sw_conn(a, b, local=local, remote=Auth("pubkey", id=ids[1])))
    sw.start()
    our = {**cert_spec(a, b, role, ca, certs[1], ids), **drop}
    peer, ike, child = connect(lab, sw, b, our)
    assert_agree(sw, ike, child, by_us=role == "initiator")
    assert " LOST " in peer.log_tail(200) and len(peer.of("IkeSaUp")) == 1
    if role == "responder":
        sw.wait_for_log(r"retransmit 1 of request with message ID 1")
    else:
        sw.wait_for_log(r"received retransmit of request with ID 1, retransmitting response")
    stop_and_check_gone(sw, peer)


def test_lost_answers_to_rekeys(lab: Lab) -> None:
    """Our answer to strongSwan's Child SA rekey is lost (it retransmits, we resend the
    cached answer: one new Child SA only); then strongSwan's answer to ours is lost (we
    retransmit, it resends)."""
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b), charon_settings=FAST_RETRANSMIT).start()
    # Messages 1 and 2 each way are IKE_SA_INIT and IKE_AUTH.
    peer, ike, child = connect(lab, sw, b, spec(a, b, "responder", drop_out=[3], drop_in=[6]))
    child = rekey_by_strongswan(sw, peer)
    sw.wait_for_log(r"retransmit 1 of request with message ID 2")
    assert_agree(sw, ike, child, by_us=False)
    child = rekey_by_us(peer)  # its answer is the 6th message in (3-5: rekey, resend, delete)
    assert_agree(sw, ike, child, by_us=True)
    sw.wait_for_log(r"received retransmit of request with ID 0, retransmitting response")
    assert len(peer.of("ChildSaRekeyed")) == 2
    stop_and_check_gone(sw, peer)


# ------------------------------------------------------------------ cookies


def test_our_cookie_to_strongswan(lab: Lab) -> None:
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b)).start()
    peer, ike, child = connect(lab, sw, b, spec(a, b, "responder", cookie_threshold=0))
    assert_agree(sw, ike, child, by_us=False)
    sw.wait_for_log(r"received COOKIE notify")
    stop_and_check_gone(sw, peer)


def test_strongswan_cookie_to_us(lab: Lab) -> None:
    """strongSwan demands a COOKIE once it holds a half-open SA (cookie_threshold = 1)."""
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b), charon_settings={"cookie_threshold": 1}).start()
    deaf = spec(a, b, "initiator", drop_in=list(range(1, 100)))
    half_open = IkePeer(lab, b.gw, deaf, name="half-open").start()
    sw.wait_for_log(r"198\.51\.100\.1 is initiating an IKE_SA")
    half_open.stop()
    peer, ike, child = connect(lab, sw, b, spec(a, b, "initiator"))
    assert_agree(sw, ike, child, by_us=True)
    sw.wait_for_log(r"generating IKE_SA_INIT response 0 \[ N\(COOKIE\) \]")
    stop_and_check_gone(sw, peer)


# ------------------------------------------------------------------ several Child SAs


@pytest.mark.parametrize("role", ["responder", "initiator"])
def test_two_child_sas(lab: Lab, role: str) -> None:
    """A second Child SA through CREATE_CHILD_SA; both survive an IKE SA rekey."""
    a, b = sites(lab)
    a.gw.add_addr("lo", "10.11.0.1/32")  # kernel-libipsec routes need a source in local_ts
    conn = sw_conn(a, b)
    conn.children.append(Child("net2", ["10.11.0.0/16"], ["10.12.0.0/16"]))
    sw = start_sw(lab, a, conn).start()
    second = {"name": "net2", "local_ts": ["10.12.0.0/16"], "remote_ts": ["10.11.0.0/16"]}
    peer = IkePeer(lab, b.gw, spec(a, b, role, children=[{}, second])).start()
    if role == "responder":
        sw.initiate(CHILD)
        sw.initiate("net2")
    peer.wait_for("ChildSaUp", lambda e: e["child"]["name"] == "net2")

    def same(sas: list[Any]) -> bool:
        kids = {(c.name, c.spi_out, c.spi_in) for c in installed(sas[0])} if sas else set()
        ups = [e["child"] for e in peer.of("ChildSaUp")]
        return kids == {(c["name"], c["spi_in"], c["spi_out"]) for c in ups}

    wait_sw(sw, same, "both Child SAs")
    n = len(peer.events)
    sw.rekey(ike=CONN)
    ike = ike_rekeyed(peer, peer.of("IkeSaUp")[0], n, by_us=False)
    sas = wait_sw(sw, lambda s: len(s) == 1 and (s[0].spi_i, s[0].spi_r) == current_ike(peer), "")
    assert same(sas) and ike["spi_i"] == sas[0].spi_i
    stop_and_check_gone(sw, peer)


# ------------------------------------------------------------------ other keys and IPv6


@pytest.mark.parametrize(
    ("key_type", "settings", "their_scheme"),
    [
        ("ed25519", {}, "ED25519"),
        ("ecdsa384", {}, "ECDSA_WITH_SHA384_DER"),
        ("rsa3072", {"rsa_pss": "yes"}, "RSA_EMSA_PSS_SHA2_256_SALT_32"),
    ],
    ids=["ed25519", "ecdsa384", "rsa-pss"],
)
def test_certificate_key_types(
    lab: Lab, key_type: str, settings: dict[str, str], their_scheme: str
) -> None:
    a, b = sites(lab)
    d = lab.workdir / "pki"
    ca = make_ca(d, key_type=key_type)
    certs = [make_cert(d, ca, f"{s}-gw", dns=[f"{s}.gw.example"], key_type=key_type) for s in "ab"]
    ids = ("@a.gw.example", "@b.gw.example")
    sw = lab.strongswan(a.gw, log_levels=LOG_LEVELS, charon_settings=settings)
    sw.add_cert(ca.cert, "x509ca")
    sw.add_cert(certs[0].key, "private")
    local = Auth("pubkey", id=ids[0], certs=[sw.add_cert(certs[0].cert)])
    sw.connections.append(sw_conn(a, b, local=local, remote=Auth("pubkey", id=ids[1])))
    sw.start()
    for role in ("responder", "initiator"):
        our = cert_spec(a, b, role, ca, certs[1], ids)
        peer, ike, child = connect(lab, sw, b, our, name=f"gatewayd-{role}")
        assert_agree(sw, ike, child, by_us=role == "initiator")
        stop_and_check_gone(sw, peer)
    assert sw.log_text().count(f"(myself) with {their_scheme} successful") == 2


def test_ipv6_with_dual_stack_selectors(lab: Lab) -> None:
    require_root_and_strongswan()
    topo = lab.site_to_site(ipv6=True)
    a, b = topo["a"], topo["b"]
    assert a.gw_wan_v6 and b.gw_wan_v6 and a.lan_net_v6 and b.lan_net_v6
    nets_a, nets_b = [a.lan_net_v4, a.lan_net_v6], [b.lan_net_v4, b.lan_net_v6]
    conn = Connection(
        CONN,
        [a.gw_wan_v6],
        [b.gw_wan_v6],
        local=Auth("psk", id=a.gw_wan_v6),
        remote=Auth("psk", id=b.gw_wan_v6),
        children=[Child(CHILD, nets_a, nets_b)],
    )
    sw = start_sw(lab, a, conn).start()
    v6: dict[str, Any] = {"local_addr": b.gw_wan_v6, "remote_addr": a.gw_wan_v6}
    v6 |= {"local_id": b.gw_wan_v6, "remote_id": a.gw_wan_v6}
    v6 |= {"local_ts": nets_b, "remote_ts": nets_a}
    for role in ("responder", "initiator"):
        peer, ike, child = connect(lab, sw, b, spec(a, b, role, **v6), name=f"gatewayd-{role}")
        assert sorted(child["local_ts"]) == sorted(nets_b)
        assert_agree(sw, ike, child, by_us=role == "initiator")
        stop_and_check_gone(sw, peer)


# ------------------------------------------------------------------ more algorithms

ALGORITHMS = [
    ("aes128-sha1-modp2048", "aes128-sha1"),
    ("aes192-sha384-ecp521", "aes192-sha384"),
    ("aes256-sha512-modp4096", "aes256-sha512"),
    ("aes256-sha256-prfsha512-modp3072", "aes192gcm16"),
    ("chacha20poly1305-prfsha512-x25519", "aes128-sha256-modp3072"),
]


@pytest.mark.parametrize(("ike", "esp"), ALGORITHMS, ids=[a[0] for a in ALGORITHMS])
def test_more_algorithms_with_rekeys(lab: Lab, ike: str, esp: str) -> None:
    """Key lengths and PRFs of every kind, through both rekeys (PFS for the last ESP)."""
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b, ike=[ike], esp=[esp])).start()
    our = spec(a, b, "responder", ike_proposals=[ike], esp_proposals=[esp])
    peer, ike_up, child = connect(lab, sw, b, our)
    assert_agree(sw, ike_up, child, by_us=False)
    child = rekey_by_us(peer)
    assert_agree(sw, ike_up, child, by_us=True)
    n = len(peer.events)
    sw.rekey(ike=CONN)
    ike_up = ike_rekeyed(peer, ike_up, n, by_us=False)
    assert_agree(sw, ike_up, child, by_us=True)
    child = rekey_by_strongswan(sw, peer)
    assert_agree(sw, ike_up, child, by_us=False)
    stop_and_check_gone(sw, peer)


# ------------------------------------------------------------------ liveness, reauth, defaults


@pytest.mark.parametrize("checker", ["strongswan", "us"])
def test_liveness_checks(lab: Lab, checker: str) -> None:
    """A 2 s liveness check (strongSwan's dpd_delay, our dpd_interval) is answered. A
    peer's check counts as life, so only one side checks per test."""
    a, b = sites(lab)
    theirs, ours = (2, 60) if checker == "strongswan" else (None, 2)
    sw = start_sw(lab, a, sw_conn(a, b, dpd_delay=theirs)).start()
    peer, ike, child = connect(lab, sw, b, spec(a, b, "responder", dpd_interval=ours))
    request, response = "parsed INFORMATIONAL request", "generating INFORMATIONAL response"
    if checker == "strongswan":
        request, response = "generating INFORMATIONAL request", "parsed INFORMATIONAL response"
    sw.wait_for_log(rf"{request} \d+ \[ \]", timeout=10)  # an empty INFORMATIONAL
    sw.wait_for_log(rf"{response} \d+ \[ \]", timeout=10)
    assert_agree(sw, ike, child, by_us=False)
    stop_and_check_gone(sw, peer)


def test_strongswan_reauthenticates(lab: Lab) -> None:
    """swanctl --rekey --reauth: a new IKE SA from scratch (break-before-make), which
    strongSwan may start from port 4500: we answer from the port it came to."""
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b)).start()
    peer, ike, _ = connect(lab, sw, b, spec(a, b, "responder"))
    sw.swanctl("--rekey", "--ike", CONN, "--reauth")
    down = peer.wait_for("IkeSaDown")
    assert down["spi_i"] == ike["spi_i"] and down["reason"] == "deleted by peer"
    ike2 = peer.wait_for("IkeSaUp", lambda e: e["session"] != ike["session"])
    child2 = peer.wait_for("ChildSaUp", lambda e: e["session"] == ike2["session"])["child"]
    assert_agree(sw, ike2, child2, by_us=False)
    stop_and_check_gone(sw, peer)


def test_default_proposals(lab: Lab) -> None:
    """strongSwan's ``default`` proposals (many algorithms per proposal) against ours."""
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b, ike=["default"], esp=["default"])).start()
    ours = {"ike_proposals": DEFAULT_IKE_PROPOSALS, "esp_proposals": DEFAULT_ESP_PROPOSALS}
    for role in ("responder", "initiator"):
        peer, ike, child = connect(lab, sw, b, spec(a, b, role, **ours), name=f"gw-{role}")
        assert_agree(sw, ike, child, by_us=role == "initiator")
        stop_and_check_gone(sw, peer)


@pytest.mark.parametrize("role", ["responder", "initiator"])
def test_psk_mismatch_refused_both_ways(lab: Lab, role: str) -> None:
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b)).start()
    peer = IkePeer(lab, b.gw, spec(a, b, role, psk="another-pre-shared-key")).start()
    if role == "responder":
        sw.swanctl("--initiate", "--child", CHILD, "--timeout", "10", check=False, timeout=20)
        reason = peer.wait_for("AuthFailed")["reason"]
        assert "pre-shared key mismatch" in reason, reason
        sw.wait_for_log(r"received AUTHENTICATION_FAILED notify error")
    else:
        reason = peer.wait_for("AuthFailed")["reason"]
        assert "AUTHENTICATION_FAILED" in reason, reason
        sw.wait_for_log(r"generating IKE_AUTH response 1 \[ N\(AUTH_FAILED\) \]")
    assert not peer.of("IkeSaUp")
    sw.wait_no_sa(CONN, timeout=10)
