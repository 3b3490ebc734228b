"""Shared by the strongSwan interop tests: the a-b lab, both sides' configs, agreement checks.

Site ``a``'s gateway runs strongSwan (charon + kernel-libipsec), site ``b``'s gateway runs
our engine through the socket driver (tests/lab/ike_driver.py). ``assert_agree`` checks
that strongSwan's ``--list-sas`` shows exactly the IKE SA and Child SA our driver reported:
SPIs, algorithms, selectors and (from strongSwan's key dumps) the ESP keys.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.lab import (
    DEFAULT_LOG_LEVELS,
    Auth,
    Child,
    ChildSa,
    Connection,
    IkeSa,
    Lab,
    Secret,
    Site,
    StrongSwan,
    require_root_and_strongswan,
)
from tests.lab.certs import CertFiles, make_ca, make_cert
from tests.lab.ike_peer import Event, IkePeer
from tests.lab.keylog import dumps

PSK = "gatewayd-interop-psk-7c1d9e"
CONN, CHILD = "a-b", "net"
DEFAULT_IKE, DEFAULT_ESP = "aes256gcm16-prfsha256-ecp256", "aes256gcm16"
LOG_LEVELS = {**DEFAULT_LOG_LEVELS, "chd": 4}  # chd=4: strongSwan dumps each Child SA's keys


# ------------------------------------------------------------------ set-up helpers


def sites(lab: Lab) -> tuple[Site, Site]:
    """(a, b): strongSwan runs in a.gw, our driver in b.gw."""
    require_root_and_strongswan()
    topo = lab.site_to_site(ipv6=False)
    return topo["a"], topo["b"]


def sw_conn(
    a: Site,
    b: Site,
    *,
    ike: list[str] | None = None,
    esp: list[str] | None = None,
    local: Auth | None = None,
    remote: Auth | None = None,
    child_kw: dict[str, Any] | None = None,
    **kw: Any,
) -> Connection:
    """strongSwan's side of the a-b tunnel (PSK by IP identities unless told otherwise)."""
    child = Child(
        CHILD, [a.lan_net_v4], [b.lan_net_v4], esp_proposals=esp or [DEFAULT_ESP], **child_kw or {}
    )
    return Connection(
        CONN,
        [a.gw_wan_v4],
        [b.public_v4],
        local=local or Auth("psk", id=a.gw_wan_v4),
        remote=remote or Auth("psk", id=b.gw_wan_v4),
        children=[child],
        proposals=ike or [DEFAULT_IKE],
        **kw,
    )


def start_sw(lab: Lab, a: Site, conn: Connection, *, psk: bool = True, **kw: Any) -> StrongSwan:
    sw = lab.strongswan(a.gw, log_levels=LOG_LEVELS, **kw)
    sw.connections.append(conn)
    if psk:
        sw.secrets.append(Secret("ike", PSK, [conn.local.id or "", conn.remote.id or ""]))
    return sw


def spec(a: Site, b: Site, role: str, **kw: Any) -> dict[str, Any]:
    """Our driver's side of the a-b tunnel."""
    base: dict[str, Any] = {
        "role": role,
        "local_addr": b.gw_wan_v4,
        "remote_addr": a.public_v4,
        "local_id": b.gw_wan_v4,
        "remote_id": a.gw_wan_v4,
        "psk": PSK,
        "ike_proposals": [DEFAULT_IKE],
        "esp_proposals": [DEFAULT_ESP],
        "local_ts": [b.lan_net_v4],
        "remote_ts": [a.lan_net_v4],
    }
    return {**base, **kw}


def connect(
    lab: Lab, sw: StrongSwan, b: Site, our_spec: dict[str, Any], name: str = "gatewayd"
) -> tuple[IkePeer, Event, Event]:
    """Start our driver; whoever the spec makes initiator opens the SA. Returns the peer,
    our IkeSaUp and our ChildSaUp."""
    peer = IkePeer(lab, b.gw, our_spec, name=name).start()
    if our_spec["role"] == "responder":
        sw.initiate(CHILD)
    ike_up = peer.wait_for("IkeSaUp")
    child_up = peer.wait_for("ChildSaUp")
    return peer, ike_up, child_up["child"]


# ------------------------------------------------------------------ agreement checks


def sw_ike_alg(sa: IkeSa) -> str:
    """strongSwan's IKE algorithms in our notation (ENCR_size/INTEG/PRF/KE)."""
    r = sa.raw
    parts = [_encr(r), r.get("integ-alg"), r.get("prf-alg"), r.get("dh-group")]
    return "/".join(p for p in parts if p)


def sw_child_alg(raw: dict[str, Any]) -> str:
    esn = "EXT_SEQ" if raw.get("esn") == "1" else "NO_EXT_SEQ"
    parts = [_encr(raw), raw.get("integ-alg"), raw.get("dh-group"), esn]
    return "/".join(p for p in parts if p)


def _encr(raw: dict[str, Any]) -> str:
    alg, size = raw.get("encr-alg", ""), raw.get("encr-keysize")
    return f"{alg}_{size}" if size and alg != "CHACHA20_POLY1305" else alg


def wait_sw(
    sw: StrongSwan, check: Callable[[list[IkeSa]], bool], what: str, timeout: float = 20
) -> list[IkeSa]:
    """Poll strongSwan's SAs until ``check`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        sas = sw.list_sas(CONN)
        if check(sas):
            return sas
        if time.monotonic() > deadline:
            raise AssertionError(f"strongSwan: {what} not reached in {timeout}s: {sas}")
        time.sleep(0.1)


def installed(sa: IkeSa) -> list[ChildSa]:
    """Child SAs in use; a rekeyed one stays listed a few seconds (delete_rekeyed_delay)."""
    return [c for c in sa.children if c.state == "INSTALLED"]


def assert_agree(sw: StrongSwan, ike: Event, child: Event, *, by_us: bool) -> IkeSa:
    """strongSwan has exactly our IKE SA (ESTABLISHED) with exactly our Child SA INSTALLED,
    with the same SPIs, algorithms and ESP keys (``by_us``: we started the exchange that
    made the Child SA)."""

    def same(sas: list[IkeSa]) -> bool:
        if len(sas) != 1 or sas[0].state != "ESTABLISHED":
            return False
        kids = installed(sas[0])
        return len(kids) == 1 and kids[0].spi_in == child["spi_out"]

    sa = wait_sw(sw, same, f"IKE SA {ike['spi_i']}_i with Child SA {child['spi_out']}")[0]
    assert (sa.spi_i, sa.spi_r) == (ike["spi_i"], ike["spi_r"])
    assert sa.initiator is not ike["initiator"]
    theirs = installed(sa)[0]
    assert (theirs.spi_in, theirs.spi_out) == (child["spi_out"], child["spi_in"])
    assert sw_ike_alg(sa) == ike["proposal"]
    assert sw_child_alg(theirs.raw) == child["proposal"]
    assert theirs.local_ts == child["remote_ts"] and theirs.remote_ts == child["local_ts"]
    assert_same_keys(sw, child, by_us)
    return sa


def strongswan_child_keys(sw: StrongSwan) -> list[dict[str, str]]:
    """Digests of each Child SA's keys as strongSwan derived them (its chd=4 dumps)."""
    groups: list[dict[str, str]] = []
    for d in dumps(sw.log_text()):
        if d.subsystem != "CHD":
            continue
        if d.label == "seed":
            groups.append({})
        elif groups:
            groups[-1][d.label] = hashlib.sha256(d.data).hexdigest()[:16]
    return groups


def assert_same_keys(sw: StrongSwan, child: Event, by_us: bool) -> None:
    """Our ESP keys are the ones strongSwan derived, in the same directions."""
    k = child["key_digests"]
    ours, theirs = ("initiator", "responder") if by_us else ("responder", "initiator")
    want = {
        f"encryption {ours} key": k["encr_key_out"],
        f"encryption {theirs} key": k["encr_key_in"],
    }
    if "integ_key_out" in k:
        want[f"integrity {ours} key"] = k["integ_key_out"]
        want[f"integrity {theirs} key"] = k["integ_key_in"]
    assert want in strongswan_child_keys(sw), f"strongSwan derived other ESP keys than {want}"


# Drop reasons that mean we could not read something strongSwan sent (never expected).
BAD_DROPS = ("bad_icv", "malformed", "dispatcher_malformed", "message_id")


def stop_and_check_gone(sw: StrongSwan, peer: IkePeer) -> None:
    """Our SIGTERM path sends DELETE: strongSwan's SA must disappear, and the driver must
    not have dropped anything strongSwan sent as unreadable."""
    assert peer.stop() == 0
    assert peer.of("IkeSaDown"), "driver closed without reporting IkeSaDown"
    sw.wait_no_sa(CONN, timeout=10)
    drops = peer.wait_for("Stopped")["drops"]
    assert not {k: v for k, v in drops.items() if k in BAD_DROPS}, drops


# ------------------------------------------------------------------ certificates


def pki(lab: Lab, key_type: str) -> tuple[CertFiles, CertFiles, CertFiles]:
    """A CA and one certificate per gateway (SANs: DNS a.gw.example / b.gw.example)."""
    d = lab.workdir / "pki"
    ca = make_ca(d, key_type=key_type)
    certs = [make_cert(d, ca, f"{s}-gw", dns=[f"{s}.gw.example"], key_type=key_type) for s in "ab"]
    return ca, certs[0], certs[1]


def identity(cert: CertFiles, site: str, kind: str) -> str:
    return f"@{site}.gw.example" if kind == "fqdn" else cert.dn


def cert_sw(
    lab: Lab, a: Site, b: Site, ca: Path, mine: CertFiles, ids: tuple[str, str]
) -> StrongSwan:
    """strongSwan with certificate ``mine``, trusting ``ca``, expecting our id ``ids[1]``."""
    sw = lab.strongswan(a.gw, log_levels=LOG_LEVELS)
    sw.add_cert(ca, "x509ca")
    sw.add_cert(mine.key, "private")
    local = Auth("pubkey", id=ids[0], certs=[sw.add_cert(mine.cert)])
    sw.connections.append(sw_conn(a, b, local=local, remote=Auth("pubkey", id=ids[1])))
    return sw.start()


def cert_spec(
    a: Site, b: Site, role: str, ca: CertFiles, mine: CertFiles, ids: tuple[str, str]
) -> dict[str, Any]:
    return spec(
        a, b, role, psk=None, cert=str(mine.cert), key=str(mine.key), cacerts=[str(ca.cert)],
        local_id=ids[1], remote_id=ids[0],
    )  # fmt: skip


# ------------------------------------------------------------------ rekeys


def rekey_by_strongswan(sw: StrongSwan, peer: IkePeer) -> Event:
    """``swanctl --rekey`` the Child SA; our new Child SA once the old one is gone."""
    n = len(peer.events)
    sw.rekey(child=CHILD)
    rekeyed = peer.wait_for("ChildSaRekeyed", since=n)
    peer.wait_for("ChildSaDown", lambda e: e["child_id"] == rekeyed["old_child_id"], since=n)
    return rekeyed["child"]


def rekey_by_us(peer: IkePeer) -> Event:
    n = len(peer.events)
    peer.command("rekey_child")
    rekeyed = peer.wait_for("ChildSaRekeyed", since=n)
    down = peer.wait_for("ChildSaDown", lambda e: e["child_id"] == rekeyed["old_child_id"], since=n)
    assert down["reason"] == "rekeyed"
    return rekeyed["child"]


def ike_rekeyed(peer: IkePeer, ike: Event, n: int, by_us: bool) -> Event:
    """Our IKE SA record after an IKE rekey (whoever rekeyed is the new SA's initiator)."""
    r = peer.wait_for("IkeSaRekeyed", since=n)
    assert (r["old_spi_i"], r["old_spi_r"]) == (ike["spi_i"], ike["spi_r"])
    return {**ike, **{k: r[k] for k in ("spi_i", "spi_r", "proposal")}, "initiator": by_us}
