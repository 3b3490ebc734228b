"""Our IKE engine against a real strongSwan 5.9.8, on the wire, in both roles.

Site ``a``'s gateway runs strongSwan, site ``b``'s gateway runs our engine through the
socket driver (tests/lab/ike_driver.py). Every scenario checks that both sides agree:
strongSwan's ``--list-sas`` shows the IKE SA ESTABLISHED and the Child SA INSTALLED with
exactly the SPIs, algorithms and ESP keys our driver reported (tests/netns/interop_support.py).
"""

from __future__ import annotations

import pytest

from tests.lab import Lab
from tests.lab.certs import make_ca, make_cert
from tests.lab.ike_peer import IkePeer
from tests.netns.interop_support import (
    CHILD,
    CONN,
    DEFAULT_IKE,
    assert_agree,
    cert_spec,
    cert_sw,
    connect,
    identity,
    ike_rekeyed,
    installed,
    pki,
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


# ------------------------------------------------------------------ PSK


def test_psk_strongswan_initiates(lab: Lab) -> None:
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b)).start()
    peer, ike, child = connect(lab, sw, b, spec(a, b, "responder"))
    assert ike["initiator"] is False and ike["remote_id"] == a.gw_wan_v4
    sa = assert_agree(sw, ike, child, by_us=False)
    # kernel-libipsec fakes a NAT: the SA floats to 4500, and our events say so.
    assert ike["local_addr"] == [b.gw_wan_v4, sa.remote_port] == child["local_addr"]
    # strongSwan's DELETE of the IKE SA reaches us.
    sw.terminate(ike=CONN)
    down = peer.wait_for("IkeSaDown")
    assert down["reason"] == "deleted by peer" and down["spi_i"] == ike["spi_i"]
    assert peer.wait_for("ChildSaDown")["spi_in"] == child["spi_in"]
    assert not sw.list_sas(CONN)


def test_psk_we_initiate(lab: Lab) -> None:
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b)).start()
    peer, ike, child = connect(lab, sw, b, spec(a, b, "initiator"))
    assert ike["initiator"] is True
    sa = assert_agree(sw, ike, child, by_us=True)
    assert ike["local_addr"] == [b.gw_wan_v4, sa.remote_port] == child["local_addr"]
    stop_and_check_gone(sw, peer)


# ------------------------------------------------------------------ proposals

PROPOSALS = [
    ("aes256gcm16-prfsha384-ecp384", "aes256gcm16"),
    ("aes128gcm16-prfsha256-x25519", "chacha20poly1305"),
    ("aes256-sha256-modp2048", "aes256-sha256"),
]


@pytest.mark.parametrize(("ike", "esp"), PROPOSALS, ids=[p[0] for p in PROPOSALS])
def test_proposals_both_roles(lab: Lab, ike: str, esp: str) -> None:
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b, ike=[ike], esp=[esp])).start()
    for role in ("responder", "initiator"):
        our = spec(a, b, role, ike_proposals=[ike], esp_proposals=[esp])
        peer, ike_up, child = connect(lab, sw, b, our, name=f"gatewayd-{role}")
        assert_agree(sw, ike_up, child, by_us=role == "initiator")
        stop_and_check_gone(sw, peer)


# ------------------------------------------------------------------ certificates


@pytest.mark.parametrize("kind", ["fqdn", "dn"])
@pytest.mark.parametrize("key_type", ["ecdsa256", "rsa3072"])
def test_certificates_both_roles(lab: Lab, key_type: str, kind: str) -> None:
    a, b = sites(lab)
    ca, cert_a, cert_b = pki(lab, key_type)
    ids = (identity(cert_a, "a", kind), identity(cert_b, "b", kind))
    sw = cert_sw(lab, a, b, ca.cert, cert_a, ids)
    algo = "ECDSA" if key_type == "ecdsa256" else "RSA"
    for role in ("responder", "initiator"):
        our = cert_spec(a, b, role, ca, cert_b, ids)
        peer, ike, child = connect(lab, sw, b, our, name=f"gatewayd-{role}")
        sa = assert_agree(sw, ike, child, by_us=role == "initiator")
        assert sa.remote_id == ids[1].lstrip("@") and ike["remote_id"] == ids[0].lstrip("@")
        stop_and_check_gone(sw, peer)
    # strongSwan verified our signature (both times) with the certificate's key type.
    log = sw.log_text()
    theirs = f"authentication of '{ids[1].lstrip('@')}' with {algo}"
    assert log.count(theirs) == 2, theirs


BAD_CERTS = {"untrusted": "unknown CA", "expired": "expired on"}


@pytest.mark.parametrize("role", ["responder", "initiator"])
@pytest.mark.parametrize("problem", sorted(BAD_CERTS))
def test_bad_certificate_refused(lab: Lab, problem: str, role: str) -> None:
    """strongSwan presents a certificate from another CA, or an expired one: we refuse."""
    a, b = sites(lab)
    ca, _, cert_b = pki(lab, "ecdsa256")
    d = lab.workdir / "pki"
    if problem == "untrusted":
        rogue = make_ca(d, "rogue CA", stem="rogue-ca")
        cert_a = make_cert(d, rogue, "a-gw", dns=["a.gw.example"], stem="a-rogue")
    else:
        cert_a = make_cert(d, ca, "a-gw", dns=["a.gw.example"], expired=True, stem="a-expired")
    ids = ("@a.gw.example", "@b.gw.example")
    sw = cert_sw(lab, a, b, ca.cert, cert_a, ids)
    peer = IkePeer(lab, b.gw, cert_spec(a, b, role, ca, cert_b, ids)).start()
    if role == "responder":
        sw.swanctl("--initiate", "--child", CHILD, "--timeout", "10", check=False, timeout=20)
        sw.wait_for_log(r"received AUTHENTICATION_FAILED notify error")
    failed = peer.wait_for("AuthFailed")
    assert BAD_CERTS[problem] in failed["reason"], failed["reason"]
    assert not peer.of("IkeSaUp") and not peer.of("ChildSaUp")
    # Either way strongSwan is left with nothing: our refusal (responder) or DELETE (initiator).
    sw.wait_no_sa(CONN, timeout=10)


# ------------------------------------------------------------------ mismatches and INVALID_KE


@pytest.mark.parametrize("role", ["responder", "initiator"])
def test_ike_proposal_mismatch(lab: Lab, role: str) -> None:
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b, ike=["aes128gcm16-prfsha256-x25519"])).start()
    peer = IkePeer(lab, b.gw, spec(a, b, role, ike_proposals=["aes256-sha256-modp2048"])).start()
    if role == "responder":
        sw.swanctl("--initiate", "--child", CHILD, "--timeout", "10", check=False, timeout=20)
        failed = peer.wait_for("NegotiationFailed")
        assert "no IKE proposal chosen" in failed["reason"]
        assert "AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519" in failed["reason"]
        sw.wait_for_log(r"received NO_PROPOSAL_CHOSEN notify error")
    else:
        failed = peer.wait_for("NegotiationFailed")
        assert "NO_PROPOSAL_CHOSEN" in failed["reason"]
        sw.wait_for_log(r"generating IKE_SA_INIT response 0 \[ N\(NO_PROP\) \]")
    assert not peer.of("IkeSaUp")
    sw.wait_no_sa(CONN, timeout=10)


@pytest.mark.parametrize("role", ["responder", "initiator"])
def test_esp_proposal_mismatch(lab: Lab, role: str) -> None:
    """No common ESP proposal: the IKE SA comes up, the Child SA fails on both sides."""
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b, esp=["aes256gcm16"])).start()
    peer = IkePeer(lab, b.gw, spec(a, b, role, esp_proposals=["chacha20poly1305"])).start()
    if role == "responder":
        sw.swanctl("--initiate", "--child", CHILD, "--timeout", "10", check=False, timeout=20)
        failed = peer.wait_for("ChildSaFailed")
        assert "no ESP proposal chosen" in failed["reason"]
        sw.wait_for_log(r"received NO_PROPOSAL_CHOSEN notify")
    else:
        failed = peer.wait_for("ChildSaFailed")
        assert "NO_PROPOSAL_CHOSEN" in failed["reason"]
        sw.wait_for_log(r"N\(NO_PROP\)")
    ike = peer.wait_for("IkeSaUp")
    assert not peer.of("ChildSaUp")
    sa = wait_sw(sw, lambda sas: len(sas) == 1 and sas[0].state == "ESTABLISHED", "IKE SA")[0]
    assert (sa.spi_i, sa.spi_r) == (ike["spi_i"], ike["spi_r"]) and not sa.children


def test_invalid_ke_strongswan_initiates(lab: Lab) -> None:
    """strongSwan's first KE (MODP_2048) is not what we want: INVALID_KE, then ECP_256.
    The same again for a PFS Child SA rekey."""
    a, b = sites(lab)
    conn = sw_conn(
        a, b, ike=["aes256gcm16-prfsha256-modp2048-ecp256"], esp=["aes256gcm16-modp2048-ecp256"]
    )
    sw = start_sw(lab, a, conn).start()
    our = spec(a, b, "responder", esp_proposals=["aes256gcm16-ecp256"])
    peer, ike, child = connect(lab, sw, b, our)
    assert ike["proposal"] == "AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256"
    assert_agree(sw, ike, child, by_us=False)
    sw.wait_for_log(r"peer didn't accept DH group MODP_2048, it requested ECP_256")
    new = rekey_by_strongswan(sw, peer)
    assert new["proposal"] == "AES_GCM_16_256/ECP_256/NO_EXT_SEQ"
    assert_agree(sw, ike, new, by_us=False)


def test_invalid_ke_we_initiate(lab: Lab) -> None:
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b, ike=[DEFAULT_IKE])).start()
    our = spec(a, b, "initiator", ike_proposals=["aes256gcm16-prfsha256-modp2048-ecp256"])
    _, ike, child = connect(lab, sw, b, our)
    assert ike["proposal"] == "AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256"
    assert_agree(sw, ike, child, by_us=True)
    sw.wait_for_log(r"DH group MODP_2048 unacceptable, requesting ECP_256")


# ------------------------------------------------------------------ rekeys and deletes


def test_strongswan_rekeys_and_deletes(lab: Lab) -> None:
    """swanctl --rekey of the Child SA (with PFS) and of the IKE SA, then --terminate."""
    a, b = sites(lab)
    pfs = ["aes256gcm16-ecp256"]
    sw = start_sw(lab, a, sw_conn(a, b, esp=pfs)).start()
    peer, ike, child = connect(lab, sw, b, spec(a, b, "initiator", esp_proposals=pfs))
    assert_agree(sw, ike, child, by_us=True)
    child = rekey_by_strongswan(sw, peer)
    assert_agree(sw, ike, child, by_us=False)
    n = len(peer.events)
    sw.rekey(ike=CONN)
    ike = ike_rekeyed(peer, ike, n, by_us=False)
    assert_agree(sw, ike, child, by_us=False)
    child = rekey_by_strongswan(sw, peer)  # keyed from the new IKE SA's SK_d
    assert_agree(sw, ike, child, by_us=False)
    assert not peer.of("IkeSaDown") and not peer.of("ChildSaFailed")
    sw.terminate(child=CHILD)
    gone = peer.wait_for("ChildSaDown", lambda e: e["spi_in"] == child["spi_in"])
    assert gone["reason"] == "deleted by peer"
    sw.terminate(ike=CONN)
    down = peer.wait_for("IkeSaDown")
    assert down["reason"] == "deleted by peer" and down["spi_i"] == ike["spi_i"]


@pytest.mark.parametrize("role", ["responder", "initiator"])
def test_our_rekeys_and_delete(lab: Lab, role: str) -> None:
    """Child SA and IKE SA rekeys started by us (stdin commands), then our DELETE."""
    a, b = sites(lab)
    esp = ["aes256gcm16-ecp256"] if role == "responder" else ["aes256gcm16"]
    sw = start_sw(lab, a, sw_conn(a, b, esp=esp)).start()
    peer, ike, child = connect(lab, sw, b, spec(a, b, role, esp_proposals=esp))
    assert_agree(sw, ike, child, by_us=role == "initiator")
    child = rekey_by_us(peer)
    assert_agree(sw, ike, child, by_us=True)
    n = len(peer.events)
    peer.command("rekey_ike")
    ike = ike_rekeyed(peer, ike, n, by_us=True)
    assert_agree(sw, ike, child, by_us=True)
    child = rekey_by_us(peer)
    assert_agree(sw, ike, child, by_us=True)
    peer.command("delete_child")
    gone = peer.wait_for("ChildSaDown", lambda e: e["spi_in"] == child["spi_in"])
    assert gone["reason"] == "deleted"
    wait_sw(sw, lambda sas: len(sas) == 1 and not installed(sas[0]), "Child SA deleted")
    peer.command("delete")
    down = peer.wait_for("IkeSaDown")
    assert down["reason"] == "deleted" and down["spi_i"] == ike["spi_i"]
    sw.wait_no_sa(CONN, timeout=10)
    sw.wait_for_log(r"received DELETE for IKE_SA")


def test_strongswan_rekeys_on_its_timers(lab: Lab) -> None:
    """rekey_time in strongSwan's config (Child SA 8 s, IKE SA 12 s) rather than swanctl."""
    a, b = sites(lab)
    conn = sw_conn(
        a,
        b,
        rekey_time=12,
        rand_time=0,
        child_kw={"rekey_time": 8, "life_time": 30, "rand_time": 0},
    )
    sw = start_sw(lab, a, conn).start()
    peer, ike, _ = connect(lab, sw, b, spec(a, b, "responder"))
    rekeyed = peer.wait_for("ChildSaRekeyed", timeout=20)
    peer.wait_for("ChildSaDown", lambda e: e["child_id"] == rekeyed["old_child_id"])
    ike = ike_rekeyed(peer, ike, 0, by_us=False)
    assert_agree(sw, ike, rekeyed["child"], by_us=False)
    assert not peer.of("IkeSaDown") and not peer.of("ChildSaFailed")


def test_we_rekey_on_our_timers(lab: Lab) -> None:
    """Our lifetimes (Child SA 8 s, IKE SA 12 s) drive the rekeys, through get_timer()."""
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b)).start()
    our = spec(a, b, "initiator", child_lifetime=8, ike_lifetime=12)
    peer, ike, _ = connect(lab, sw, b, our)
    rekeyed = peer.wait_for("ChildSaRekeyed", timeout=15)
    down = peer.wait_for("ChildSaDown", lambda e: e["child_id"] == rekeyed["old_child_id"])
    assert down["reason"] == "rekeyed"
    ike = ike_rekeyed(peer, ike, 0, by_us=True)
    assert_agree(sw, ike, rekeyed["child"], by_us=True)
    stop_and_check_gone(sw, peer)


# ------------------------------------------------------------------ regressions found here


def test_childless_ike_sa_from_strongswan(lab: Lab) -> None:
    """strongSwan's childless=force: IKE_AUTH without a Child SA (RFC 6023), then the Child
    SA through CREATE_CHILD_SA. Needs CHILDLESS_IKEV2_SUPPORTED in our IKE_SA_INIT answer."""
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b, extra={"childless": "force"})).start()
    peer, ike, child = connect(lab, sw, b, spec(a, b, "responder"))
    assert_agree(sw, ike, child, by_us=False)
    sw.wait_for_log(r"generating IKE_AUTH request 1 \[ IDi (?!.*\bSA\b)")
    sw.wait_for_log(r"generating CREATE_CHILD_SA request 2 \[ SA No TSi TSr \]")
    stop_and_check_gone(sw, peer)


# Both sides accept both suites, in opposite orders: the IKE SA runs on strongSwan's
# favourite when it chooses, on ours when we do. A rekey must not switch PRF (strongSwan
# and RFC 7296 §2.18 disagree on which PRF derives the new keys then).
SUITES = ["aes256-sha256-modp2048", "aes128-sha1-modp2048"]


@pytest.mark.parametrize("role", ["responder", "initiator"])
def test_ike_rekeys_keep_the_prf(lab: Lab, role: str) -> None:
    a, b = sites(lab)
    sw = start_sw(lab, a, sw_conn(a, b, ike=SUITES)).start()
    peer, ike, child = connect(lab, sw, b, spec(a, b, role, ike_proposals=SUITES[::-1]))
    first = ike["proposal"]
    for by_us in (True, False):
        n = len(peer.events)
        if by_us:
            peer.command("rekey_ike")
        else:
            sw.rekey(ike=CONN)
        ike = ike_rekeyed(peer, ike, n, by_us=by_us)
        assert ike["proposal"] == first
        assert_agree(sw, ike, child, by_us=role == "initiator")
    child = rekey_by_us(peer)  # the rekeyed IKE SA carries (and keys) a new Child SA
    assert_agree(sw, ike, child, by_us=True)
    stop_and_check_gone(sw, peer)
