"""gatewayd site to site with a real strongSwan 5.9.8 (issue 4).

``a-lan -- a-gw [strongSwan, kernel-libipsec] -- wan -- b-gw [gatewayd] -- b-lan``

The WAN router has no route to either LAN, so every LAN-to-LAN packet that arrives went
through the tunnel. One topology serves the module (site a's LAN also carries a second
subnet, 10.1.100.0/24, for the policy-based scenario); each test starts its own
strongSwan and gatewayd on it and stops them afterwards (``peers``). Every scenario that
comes up checks that both sides agree (strongSwan's ``--list-sas`` against gatewayd's
status: IKE SPIs, roles, algorithms, identities, Child SA SPIs, algorithms and
selectors) and that LAN hosts reach each other: ping, and a TCP transfer whose SHA-256
matches.

Scenarios: PSK in both roles; certificates (ECDSA P-256 and RSA-3072, FQDN and DN
identities, both roles) and the refusal of an untrusted and an expired certificate; a
proposal matrix (AES-GCM-128/256 IKE over ECP-256, ECP-384, X25519 and MODP-2048, AES-CBC
with SHA-256; ESP AES-GCM-128/256, AES-CBC/SHA-256 and ChaCha20-Poly1305; PFS with each
group on a ``gatewayctl rekey``) and proposal mismatches (IKE: ``negotiation_failed``;
ESP: the IKE SA stays, ``child_sa_failed``); policy-based traffic selectors with two
Child SAs, each carrying only its own subnet's traffic.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab import Auth, Lab, Netns, Site, StrongSwan, require_root_and_strongswan
from tests.lab.certs import CertFiles, make_ca, make_cert
from tests.lab.gatewayd import Gatewayd
from tests.lab.interop import (
    CONN,
    PSK,
    Agreement,
    Peers,
    assert_traffic,
    gw_gateway,
    gw_site,
    psk_secret,
    sw_child,
    sw_connection,
    wait_agree,
)
from tests.lab.presets import psk_site_to_site
from tests.lab.traffic import ping, tcp_transfer

pytestmark = pytest.mark.netns

SECOND_NET, SECOND_GW, SECOND_HOST = "10.1.100.0/24", "10.1.100.1/24", "10.1.100.2"
_tags = itertools.count(1)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Site, Site]]:
    """(lab, a, b): strongSwan's site a and gatewayd's site b, shared by the module."""
    require_root_and_strongswan()
    with Lab(tmp_path_factory.mktemp("interop-s2s") / "lab") as lab:
        topo = lab.site_to_site()
        a, b = topo["a"], topo["b"]
        # Site a's second subnet, on the same LAN link as its first.
        a.gw.add_addr(a.gw_lan_if, SECOND_GW)
        a.lan.add_addr("gw", f"{SECOND_HOST}/24")
        yield lab, a, b


@pytest.fixture
def peers(sites: tuple[Lab, Site, Site]) -> Iterator[Peers]:
    """This test's strongSwan and gatewayd (made by the test), stopped afterwards."""
    lab, a, b = sites
    p = Peers(lab, a, b, tag=f"t{next(_tags)}")
    yield p
    p.close()


def establish(
    sw: StrongSwan, gw: Gatewayd, initiator: str, children: tuple[str, ...] = ("net",)
) -> Agreement:
    """Start both; the initiator opens the IKE SA and the Child SAs (strongSwan on
    ``swanctl --initiate``, gatewayd in mode "default" by itself at start)."""
    sw.start()
    gw.start()
    if initiator == "strongswan":
        for child in children:
            sw.initiate(child)
    return wait_agree(gw, "a", sw, children=len(children))


def check_roles(agreed: Agreement, initiator: str) -> None:
    role = agreed.site["ike_sa"]["role"]
    assert role == ("responder" if initiator == "strongswan" else "initiator"), role
    assert agreed.ike.initiator is (initiator == "strongswan")


def both_ways(a: Site, b: Site, *, size: int = 3 << 20) -> None:
    assert_traffic(a.lan, b.lan, b.lan_host_v4, size=size)
    assert_traffic(b.lan, a.lan, a.lan_host_v4, size=size)


# ======================================================================= 1. PSK


def test_psk_strongswan_initiates(peers: Peers) -> None:
    """gatewayd responder_only, IPv4 and IPv6 LANs in one Child SA."""
    a, b = peers.a, peers.b
    conn, secret = psk_site_to_site(a, b, PSK, name=CONN)
    sw = peers.strongswan(conn, [secret])
    gw = peers.gatewayd(
        gw_gateway(b, networks=b.lan_nets),
        [gw_site(a, networks=a.lan_nets, mode="responder_only")],
    )
    agreed = establish(sw, gw, "strongswan")
    check_roles(agreed, "strongswan")
    ours, _ = agreed.children[0]
    assert sorted(ours["remote_ts"]) == sorted(a.lan_nets), ours
    assert agreed.ike.remote_id == b.gw_wan_v4, agreed.ike

    both_ways(a, b)
    assert a.lan_host_v6 and b.lan_host_v6
    assert ping(a.lan, b.lan_host_v6, count=3, interval=0.05).loss == 0
    assert ping(b.lan, a.lan_host_v6, count=3, interval=0.05).loss == 0
    after = wait_agree(gw, "a", sw)
    ours2, theirs2 = after.children[0]
    assert (ours2["spi_in"], ours2["spi_out"]) == (ours["spi_in"], ours["spi_out"])
    # 3 MB each way: both data paths counted it.
    for n in (ours2["bytes_in"], ours2["bytes_out"], theirs2.bytes_in, theirs2.bytes_out):
        assert n > 3 << 20, (ours2, theirs2)


def test_psk_gatewayd_initiates(peers: Peers) -> None:
    """gatewayd in mode "default" connects at start; strongSwan only responds."""
    a, b = peers.a, peers.b
    sw = peers.strongswan(sw_connection(a, b, [sw_child(a, b)]), [psk_secret(a, b)])
    gw = peers.gatewayd(gw_gateway(b), [gw_site(a)])
    agreed = establish(sw, gw, "gatewayd")
    check_roles(agreed, "gatewayd")
    ours, _ = agreed.children[0]
    # gatewayd proposes 0.0.0.0/0 both ways (route-based); strongSwan narrows to its LANs.
    assert ours["local_ts"] == [b.lan_net_v4] and ours["remote_ts"] == [a.lan_net_v4], ours
    both_ways(a, b)
    routes = json.loads(gw.ctl("routes", "--json").stdout)["routes"]
    assert {"prefix": a.lan_net_v4, "site": "a", "child_sa": "net", "state": "up"} in routes


# ======================================================================= 2. certificates


def pki(directory: Path, key_type: str) -> tuple[CertFiles, CertFiles, CertFiles]:
    """A CA and one certificate per gateway (SANs DNS a.gw.example / b.gw.example)."""
    ca = make_ca(directory, key_type=key_type)
    a, b = (make_cert(directory, ca, f"{s}-gw", dns=[f"{s}.gw.example"], key_type=key_type)
            for s in "ab")  # fmt: skip
    return ca, a, b


@dataclass
class CertSetup:
    sw: StrongSwan
    gw: Gatewayd
    sw_ids: tuple[str, str]  # strongSwan's (local, remote) ids as strongSwan writes them


def cert_peers(
    peers: Peers, ca: CertFiles, sw_cert: CertFiles, gw_cert: CertFiles, kind: str, **site: Any
) -> CertSetup:
    """strongSwan with ``sw_cert`` and gatewayd with ``gw_cert``; both trust ``ca``."""
    a, b = peers.a, peers.b
    if kind == "fqdn":
        sw_ids, gw_ids = ("a.gw.example", "b.gw.example"), ("b.gw.example", "a.gw.example")
    else:
        # Both configs take the subject as strongSwan prints it: "O=gatewayd lab, CN=a-gw".
        sw_ids, gw_ids = (sw_cert.dn, gw_cert.dn), (gw_cert.dn, sw_cert.dn)
    local = Auth("pubkey", id=sw_ids[0])
    conn = sw_connection(a, b, [sw_child(a, b)], local=local, remote=Auth("pubkey", id=sw_ids[1]))
    sw = peers.strongswan(conn)
    sw.add_cert(ca.cert, "x509ca")
    sw.add_cert(sw_cert.key, "private")
    local.certs = [sw.add_cert(sw_cert.cert)]
    gateway = gw_gateway(
        b, id=gw_ids[0], certificate=str(gw_cert.cert), private_key=str(gw_cert.key),
        ca=[str(ca.cert)],
    )  # fmt: skip
    gw = peers.gatewayd(gateway, [gw_site(a, auth="pubkey", id=gw_ids[1], **site)])
    return CertSetup(sw, gw, sw_ids)


CERT_CASES = [
    ("ecdsa256", "fqdn", "strongswan"),
    ("ecdsa256", "dn", "gatewayd"),
    ("rsa3072", "dn", "strongswan"),
    ("rsa3072", "fqdn", "gatewayd"),
]


@pytest.mark.parametrize(("key_type", "kind", "initiator"), CERT_CASES)
def test_certificates(
    peers: Peers, tmp_path: Path, key_type: str, kind: str, initiator: str
) -> None:
    ca, cert_a, cert_b = pki(tmp_path, key_type)
    mode = "responder_only" if initiator == "strongswan" else "default"
    setup = cert_peers(peers, ca, cert_a, cert_b, kind, mode=mode)
    agreed = establish(setup.sw, setup.gw, initiator)
    check_roles(agreed, initiator)
    # Each side saw the identity the other proved with its certificate.
    assert agreed.ike.remote_id == setup.sw_ids[1], agreed.ike.remote_id
    # strongSwan verified gatewayd's signature with the certificate's key type.
    algo = "ECDSA" if key_type == "ecdsa256" else "RSA"
    setup.sw.wait_for_log(
        rf"authentication of '{re.escape(setup.sw_ids[1])}' with {algo}\S* successful"
    )
    both_ways(peers.a, peers.b, size=2 << 20)


BAD_CERTS = {"untrusted": "unknown CA", "expired": "expired"}


@pytest.mark.parametrize("initiator", ["strongswan", "gatewayd"])
@pytest.mark.parametrize("problem", sorted(BAD_CERTS))
def test_bad_certificate_refused(
    peers: Peers, tmp_path: Path, problem: str, initiator: str
) -> None:
    """strongSwan presents a certificate from another CA, or an expired one: gatewayd
    refuses it, logs ``auth_failed`` with the reason and shows it in its status."""
    ca, _, cert_b = pki(tmp_path, "ecdsa256")
    if problem == "untrusted":
        rogue = make_ca(tmp_path, "rogue CA", stem="rogue-ca")
        cert_a = make_cert(tmp_path, rogue, "a-gw", dns=["a.gw.example"], stem="a-rogue")
    else:
        cert_a = make_cert(tmp_path, ca, "a-gw", dns=["a.gw.example"], expired=True, stem="a-old")
    mode = "responder_only" if initiator == "strongswan" else "default"
    setup = cert_peers(peers, ca, cert_a, cert_b, "fqdn", mode=mode)
    sw, gw = setup.sw, setup.gw
    sw.start()
    gw.start()
    if initiator == "strongswan":
        sw.swanctl("--initiate", "--child", "net", "--timeout", "10", check=False, timeout=20)
        sw.wait_for_log(r"received AUTHENTICATION_FAILED notify error")
    failed = gw.wait_event("auth_failed", site="a")
    assert BAD_CERTS[problem] in failed["reason"], failed
    assert failed["remote"] == peers.a.public_v4, failed
    site = gw.site("a")
    assert site["state"] != "established" and not site["child_sas"], site
    assert site["reason"].startswith("authentication failed: "), site
    assert BAD_CERTS[problem] in site["reason"], site
    assert not gw.find_events("ike_sa_up") and not gw.find_events("child_sa_up")
    assert ping(peers.a.lan, peers.b.lan_host_v4, count=2, interval=0.2, wait=0.5).received == 0
    if initiator == "strongswan":
        assert not [s for s in sw.list_sas(CONN) if s.state == "ESTABLISHED"]
        return
    # strongSwan had authenticated us (its side of the SA was up); our DELETE ended it.
    sw.wait_for_log(r"received DELETE for IKE_SA")
    down = gw.wait_event("ike_sa_down", site="a")
    refused = (down["spi_i"], down["spi_r"])
    deadline = time.monotonic() + 5
    while refused in [(s.spi_i, s.spi_r) for s in sw.list_sas(CONN)]:
        assert time.monotonic() < deadline, f"strongSwan still holds the refused SA {refused}"
        time.sleep(0.1)
    # One ike_sa_down per refused IKE SA (it used to be reported twice; gatewayd retries).
    downs = [(e["spi_i"], e["spi_r"]) for e in gw.find_events("ike_sa_down")]
    assert len(downs) == len(set(downs)), downs


# ======================================================================= 3. proposals


@dataclass(frozen=True)
class Combo:
    ike: str
    esp: str  # a KE group here means PFS on the rekey
    initiator: str
    ike_name: str  # what both sides must report
    esp_name: str

    @property
    def pfs(self) -> str | None:
        groups = {"ecp256": "ECP_256", "ecp384": "ECP_384", "x25519": "CURVE_25519",
                  "modp2048": "MODP_2048"}  # fmt: skip
        return next((g for w, g in groups.items() if self.esp.endswith("-" + w)), None)


GCM128, GCM256 = "AES_GCM_16_128", "AES_GCM_16_256"
SHA256, SHA384 = "PRF_HMAC_SHA2_256", "PRF_HMAC_SHA2_384"
CBC = "AES_CBC_256/HMAC_SHA2_256_128"
CHACHA = "CHACHA20_POLY1305"
# Every IKE cipher over every group, the CBC suite, every ESP cipher, PFS with each group;
# roles alternate.
COMBOS = [
    Combo("aes128gcm16-prfsha256-ecp256", "aes128gcm16", "strongswan",
          f"{GCM128}/{SHA256}/ECP_256", GCM128),
    Combo("aes256gcm16-prfsha384-ecp384", "aes256gcm16-ecp384", "gatewayd",
          f"{GCM256}/{SHA384}/ECP_384", GCM256),
    Combo("aes128gcm16-prfsha256-x25519", "chacha20poly1305", "strongswan",
          f"{GCM128}/{SHA256}/CURVE_25519", CHACHA),
    Combo("aes256gcm16-prfsha256-modp2048", "aes256-sha256", "gatewayd",
          f"{GCM256}/{SHA256}/MODP_2048", CBC),
    Combo("aes256gcm16-prfsha256-ecp256", "chacha20poly1305-x25519", "gatewayd",
          f"{GCM256}/{SHA256}/ECP_256", CHACHA),
    Combo("aes128gcm16-prfsha256-ecp384", "aes128gcm16-modp2048", "strongswan",
          f"{GCM128}/{SHA256}/ECP_384", GCM128),
    Combo("aes256gcm16-prfsha384-x25519", "aes256gcm16", "strongswan",
          f"{GCM256}/{SHA384}/CURVE_25519", GCM256),
    Combo("aes128gcm16-prfsha256-modp2048", "aes256-sha256-ecp256", "strongswan",
          f"{GCM128}/{SHA256}/MODP_2048", CBC),
    Combo("aes256-sha256-modp2048", "aes128gcm16", "gatewayd",
          f"{CBC}/{SHA256}/MODP_2048", GCM128),
]  # fmt: skip


def psk_peers(
    peers: Peers, ike: list[str], esp: list[str], **site: Any
) -> tuple[StrongSwan, Gatewayd]:
    a, b = peers.a, peers.b
    conn = sw_connection(a, b, [sw_child(a, b, esp)], ike=ike)
    sw = peers.strongswan(conn, [psk_secret(a, b)])
    gw = peers.gatewayd(gw_gateway(b), [gw_site(a, ike_proposals=ike, esp_proposals=esp, **site)])
    return sw, gw


@pytest.mark.parametrize("combo", COMBOS, ids=[f"{c.ike}+{c.esp}" for c in COMBOS])
def test_proposal(peers: Peers, combo: Combo) -> None:
    mode = "responder_only" if combo.initiator == "strongswan" else "default"
    sw, gw = psk_peers(peers, [combo.ike], [combo.esp], mode=mode)
    agreed = establish(sw, gw, combo.initiator)
    check_roles(agreed, combo.initiator)
    ours, _ = agreed.children[0]
    assert agreed.site["ike_sa"]["proposal"] == combo.ike_name
    # The Child SA of IKE_AUTH never has a key exchange of its own.
    assert ours["proposal"] == f"{combo.esp_name}/NO_EXT_SEQ"
    assert_traffic(peers.a.lan, peers.b.lan, peers.b.lan_host_v4, size=2 << 20)
    if combo.pfs is None:
        return

    mark = gw.mark()
    gw.ctl("rekey", "a")
    rekeyed = gw.wait_event("child_sa_rekeyed", since=mark, site="a")
    assert rekeyed["old_spi_in"] == ours["spi_in"], rekeyed
    gw.wait_event("child_sa_down", since=mark, site="a", spi_in=ours["spi_in"])
    after = wait_agree(gw, "a", sw)
    new, theirs = after.children[0]
    assert (new["spi_in"], new["spi_out"]) == (rekeyed["spi_in"], rekeyed["spi_out"])
    assert new["proposal"] == f"{combo.esp_name}/{combo.pfs}/NO_EXT_SEQ", new
    assert theirs.raw.get("dh-group") == combo.pfs, theirs.raw
    assert after.site["ike_sa"]["spi_i"] == agreed.site["ike_sa"]["spi_i"]
    assert_traffic(peers.b.lan, peers.a.lan, peers.a.lan_host_v4, size=2 << 20)
    ours_now, theirs_now = wait_agree(gw, "a", sw).children[0]
    assert ours_now["spi_in"] == new["spi_in"], ours_now
    assert ours_now["bytes_out"] > 2 << 20 and theirs_now.bytes_in > 2 << 20, ours_now


def test_ike_mismatch_strongswan_initiates(peers: Peers) -> None:
    sw, gw = psk_peers(peers, ["aes128gcm16-prfsha256-x25519"], ["aes256gcm16"],
                       mode="responder_only")  # fmt: skip
    gw.sites[0]["ike_proposals"] = ["aes256-sha256-modp2048", "aes256gcm16-prfsha384-ecp384"]
    sw.start()
    gw.start()
    sw.swanctl("--initiate", "--child", "net", "--timeout", "10", check=False, timeout=20)
    sw.wait_for_log(r"received NO_PROPOSAL_CHOSEN notify error")
    failed = gw.wait_event("negotiation_failed", site="a")
    reason = failed["reason"]
    assert "no IKE proposal chosen" in reason, reason
    assert "offered AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519" in reason, reason
    assert "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048" in reason, reason
    assert "AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384" in reason, reason
    site = gw.site("a")
    assert site["state"] != "established" and site["reason"] == f"negotiation failed: {reason}"
    assert not [s for s in sw.list_sas(CONN) if s.state == "ESTABLISHED"]


def test_ike_mismatch_gatewayd_initiates(peers: Peers) -> None:
    sw, gw = psk_peers(peers, ["aes128gcm16-prfsha256-x25519"], ["aes256gcm16"])
    gw.sites[0]["ike_proposals"] = ["aes256-sha256-modp2048"]
    sw.start()
    gw.start()
    failed = gw.wait_event("negotiation_failed", site="a")
    reason = failed["reason"]
    # strongSwan does not say what it wanted; we name our offer, strongSwan's log both.
    assert "NO_PROPOSAL_CHOSEN" in reason, reason
    assert "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048" in reason, reason
    sw.wait_for_log(r"generating IKE_SA_INIT response 0 \[ N\(NO_PROP\) \]")
    sw.wait_for_log(r"received proposals: IKE:AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/"
                    r"MODP_2048")  # fmt: skip
    sw.wait_for_log(r"configured proposals: IKE:AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519")
    assert gw.site("a")["reason"] == f"negotiation failed: {reason}"
    # gatewayd keeps trying, with back-off.
    gw.wait_event("reconnect_scheduled", site="a")
    assert not gw.find_events("ike_sa_up")


@pytest.mark.parametrize("initiator", ["strongswan", "gatewayd"])
def test_esp_mismatch(peers: Peers, initiator: str) -> None:
    """No common ESP proposal: the IKE SA comes up on both sides, the Child SA does not."""
    mode = "responder_only" if initiator == "strongswan" else "default"
    sw, gw = psk_peers(peers, ["aes256gcm16-prfsha256-ecp256"], ["aes256gcm16"], mode=mode)
    gw.sites[0]["esp_proposals"] = ["chacha20poly1305", "aes128gcm16"]
    sw.start()
    gw.start()
    if initiator == "strongswan":
        sw.swanctl("--initiate", "--child", "net", "--timeout", "10", check=False, timeout=20)
        sw.wait_for_log(r"received NO_PROPOSAL_CHOSEN notify")
    else:
        sw.wait_for_log(r"N\(NO_PROP\)")
        sw.wait_for_log(r"received proposals: ESP:CHACHA20_POLY1305/NO_EXT_SEQ, ESP:AES_GCM_16_128")
        sw.wait_for_log(r"configured proposals: ESP:AES_GCM_16_256")
    failed = gw.wait_event("child_sa_failed", site="a")
    reason = failed["reason"]
    assert "CHACHA20_POLY1305" in reason and "AES_GCM_16_128" in reason, reason
    if initiator == "strongswan":  # we saw strongSwan's offer: both are named
        assert "no ESP proposal chosen" in reason and "offered AES_GCM_16_256" in reason, reason
    else:
        assert "NO_PROPOSAL_CHOSEN" in reason, reason
    sa = [s for s in sw.list_sas(CONN) if s.state == "ESTABLISHED"]
    site = gw.site("a")
    assert len(sa) == 1 and not sa[0].children, sa
    assert site["ike_sa"]["spi_i"] == sa[0].spi_i and not site["child_sas"], site
    assert reason in site["reason"], site
    assert ping(peers.a.lan, peers.b.lan_host_v4, count=2, interval=0.2, wait=0.5).received == 0


# ======================================================================= 4. policy-based


def _ping_from(ns: Netns, src: str, dst: str, count: int = 5) -> int:
    cp = ns.run(["ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", "1", "-I", src, dst],
                check=False, timeout=20)  # fmt: skip
    m = re.search(r"(\d+) (?:packets )?received", cp.stdout)
    assert m, cp.stdout + cp.stderr
    return int(m[1])


def _counters(gw: Gatewayd, sw: StrongSwan) -> dict[str, tuple[int, ...]]:
    """Per subnet of site a: gatewayd's and strongSwan's packet counters, both ways."""
    agreed = wait_agree(gw, "a", sw, children=2)
    out: dict[str, tuple[int, ...]] = {}
    for ours, theirs in agreed.children:
        (net,) = ours["remote_ts"]
        out[net] = (ours["packets_in"], ours["packets_out"], theirs.packets_in, theirs.packets_out)
    return out


def _rises_only(
    gw: Gatewayd, sw: StrongSwan, net: str, traffic: Callable[[], None], least: int
) -> None:
    """``traffic`` raises every counter of ``net``'s Child SA by ``least`` or more, and no
    counter of the other one."""
    before = _counters(gw, sw)
    traffic()
    deadline = time.monotonic() + 5
    while True:
        after = _counters(gw, sw)
        grown = {k: [x - y for x, y in zip(after[k], before[k], strict=True)] for k in after}
        if all(d >= least for d in grown[net]) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(d >= least for d in grown[net]), grown
    assert all(d == 0 for k, ds in grown.items() if k != net for d in ds), grown


@pytest.mark.parametrize("initiator", ["strongswan", "gatewayd"])
def test_policy_based_two_child_sas(peers: Peers, initiator: str) -> None:
    a, b = peers.a, peers.b
    first = str(ipaddress.ip_interface(f"{a.lan_host_v4}/24").network)  # 10.1.0.0/24
    children = [
        sw_child(a, b, name="net", local_ts=[first], remote_ts=[b.lan_net_v4]),
        sw_child(a, b, name="net2", local_ts=[SECOND_NET], remote_ts=[b.lan_net_v4]),
    ]
    sw = peers.strongswan(sw_connection(a, b, children), [psk_secret(a, b)])
    mode = "responder_only" if initiator == "strongswan" else "default"
    site = gw_site(a, networks=[first, SECOND_NET], policy_based_traffic_selectors=True, mode=mode)
    gw = peers.gatewayd(gw_gateway(b), [site])
    agreed = establish(sw, gw, initiator, children=("net", "net2"))
    check_roles(agreed, initiator)
    for name, net in (("net", first), ("net2", SECOND_NET)):
        ours, _ = agreed.child(name)
        assert ours["local_ts"] == [b.lan_net_v4] and ours["remote_ts"] == [net], ours
        assert ours["name"] == f"{b.lan_net_v4}={net}", ours

    routes = json.loads(gw.ctl("routes", "--json").stdout)["routes"]
    for net in (first, SECOND_NET):
        want = {"prefix": net, "source": b.lan_net_v4, "site": "a",
                "child_sa": f"{b.lan_net_v4}={net}", "state": "up"}  # fmt: skip
        assert want in routes, routes

    # Each Child SA carries its own subnet's traffic, and only that.
    b_host = b.lan_host_v4
    _rises_only(gw, sw, first, lambda: _check(_ping_from(a.lan, a.lan_host_v4, b_host), 5), 5)
    _rises_only(gw, sw, SECOND_NET, lambda: _check(_ping_from(a.lan, SECOND_HOST, b_host), 5), 5)
    for net, dst in ((first, a.lan_host_v4), (SECOND_NET, SECOND_HOST)):
        _rises_only(gw, sw, net, functools.partial(_transfer, b.lan, a.lan, dst), 100)


def _check(received: int, want: int) -> None:
    assert received == want, f"{received} of {want} echo replies"


def _transfer(src: Netns, dst: Netns, addr: str) -> None:
    sent, received = tcp_transfer(src, dst, addr, 2 << 20)
    assert sent == received
