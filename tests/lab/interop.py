"""gatewayd against strongSwan, site to site: both peers of one test, and the checks that
they agree.

strongSwan runs in site ``a``'s gateway, gatewayd in site ``b``'s (the demo's layout).
``Peers`` makes both on a topology that several tests share and stops them after the
test; ``wait_agree`` compares strongSwan's ``--list-sas`` with gatewayd's status: the
same IKE SA (SPIs, algorithms, identities, opposite roles) and the same installed
Child SAs (SPIs crossed, algorithms, selectors mirrored).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .gatewayd import Gatewayd, prepare_gateway_host
from .lab import Lab
from .netns import Netns
from .sas import ChildSa, IkeSa
from .strongswan import StrongSwan
from .swanctl_conf import Auth, Child, Connection, Secret
from .topology import Site
from .traffic import ping, tcp_transfer, wait_ping

PSK = "gatewayd-s2s-interop-psk-5be07c2a"
CONN = "a-b"  # strongSwan's connection name


# -- strongSwan's view in gatewayd's notation ----------------------------------------------


def _encr(raw: dict[str, Any]) -> str:
    alg, size = raw.get("encr-alg", ""), raw.get("encr-keysize")
    return f"{alg}_{size}" if size and alg != "CHACHA20_POLY1305" else alg


def sw_ike_proposal(sa: IkeSa) -> str:
    """``AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384``, as gatewayd's status writes it."""
    r = sa.raw
    parts = [_encr(r), r.get("integ-alg"), r.get("prf-alg"), r.get("dh-group")]
    return "/".join(p for p in parts if p)


def sw_child_proposal(child: ChildSa) -> str:
    """``AES_GCM_16_256/ECP_384/NO_EXT_SEQ`` (the group only after a PFS rekey)."""
    r = child.raw
    esn = "EXT_SEQ" if r.get("esn") == "1" else "NO_EXT_SEQ"
    parts = [_encr(r), r.get("integ-alg"), r.get("dh-group"), esn]
    return "/".join(p for p in parts if p)


def installed(sa: IkeSa) -> list[ChildSa]:
    """Child SAs in use (a rekeyed one stays listed a few seconds as REKEYED/DELETING)."""
    return [c for c in sa.children if c.state == "INSTALLED"]


def _nets(ts: Sequence[str]) -> list[str]:
    return sorted(str(ipaddress.ip_network(t)) for t in ts)


def _dn_key(text: str) -> str:
    """An identity for comparison: without strongSwan's ``@`` on FQDNs, and with DNs
    written ``O=x,CN=y`` whether they came as that or as ``O=x, CN=y``."""
    return text.lstrip("@").replace(", ", ",").lower()


# -- agreement -----------------------------------------------------------------------------


@dataclass
class Agreement:
    """Both views once they agree."""

    site: dict[str, Any]  # gatewayd's status of the site
    ike: IkeSa  # strongSwan's IKE SA
    children: list[tuple[dict[str, Any], ChildSa]] = field(default_factory=list)

    def child(self, name: str) -> tuple[dict[str, Any], ChildSa]:
        """The (gatewayd, strongSwan) pair of the strongSwan child called ``name``."""
        for ours, theirs in self.children:
            if theirs.name == name:
                return ours, theirs
        raise KeyError(f"no Child SA {name!r}: {[t.name for _, t in self.children]}")


def disagreements(site: dict[str, Any], sas: list[IkeSa], children: int) -> list[str]:
    """What keeps the two views from agreeing (empty when they agree)."""
    established = [sa for sa in sas if sa.state == "ESTABLISHED"]
    if len(established) != 1:
        return [f"strongSwan has {len(established)} established IKE SAs: {sas}"]
    sa, ike = established[0], site.get("ike_sa")
    if site.get("state") != "established" or not ike:
        return [f"gatewayd's site is {site.get('state')} ({site.get('reason')})"]
    problems = []
    if (ike["spi_i"], ike["spi_r"]) != (sa.spi_i, sa.spi_r):
        problems.append(f"IKE SPIs: ours {ike['spi_i']}/{ike['spi_r']}, {sa.spi_i}/{sa.spi_r}")
    if (ike["role"] == "initiator") == sa.initiator:
        problems.append(f"both sides say role {ike['role']}")
    if ike["proposal"] != sw_ike_proposal(sa):
        problems.append(f"IKE proposal: ours {ike['proposal']}, theirs {sw_ike_proposal(sa)}")
    if _dn_key(str(ike.get("remote_id"))) != _dn_key(sa.local_id):
        problems.append(f"identity: we see {ike.get('remote_id')!r}, it is {sa.local_id!r}")
    theirs = installed(sa)
    ours = [c for c in site.get("child_sas") or [] if c.get("active", True)]
    if len(theirs) != children or len(ours) != children:
        problems.append(f"Child SAs: ours {len(ours)}, theirs {len(theirs)}, want {children}")
        return problems
    by_spi = {c.spi_in: c for c in theirs}
    for c in ours:
        t = by_spi.get(c["spi_out"])
        if t is None or t.spi_out != c["spi_in"]:
            problems.append(f"our Child SA {c['spi_in']}/{c['spi_out']} is not strongSwan's")
            continue
        if c["proposal"] != sw_child_proposal(t):
            problems.append(f"ESP proposal: ours {c['proposal']}, theirs {sw_child_proposal(t)}")
        if _nets(c["local_ts"]) != _nets(t.remote_ts) or _nets(c["remote_ts"]) != _nets(t.local_ts):
            problems.append(f"selectors: ours {c['local_ts']}=={c['remote_ts']}, theirs "
                            f"{t.local_ts}=={t.remote_ts}")  # fmt: skip
    return problems


def wait_agree(
    gw: Gatewayd, site: str, sw: StrongSwan, *, children: int = 1, timeout: float = 20
) -> Agreement:
    """Poll until gatewayd's ``site`` and strongSwan's connection show the same SAs."""
    deadline = time.monotonic() + timeout
    while True:
        status = gw.site(site)
        sas = sw.list_sas(CONN)
        problems = disagreements(status, sas, children)
        if not problems:
            sa = next(s for s in sas if s.state == "ESTABLISHED")
            by_spi = {c.spi_in: c for c in installed(sa)}
            pairs = [
                (c, by_spi[c["spi_out"]]) for c in status["child_sas"] if c.get("active", True)
            ]
            return Agreement(status, sa, pairs)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"gatewayd and strongSwan disagree after {timeout}s: {problems}\n"
                f"gatewayd: {status}\nstrongSwan: {sas}"
            )
        time.sleep(0.2)


# -- traffic -------------------------------------------------------------------------------


def assert_traffic(
    src: Netns, dst: Netns, dst_addr: str, *, size: int = 3 << 20, port: int = 5001
) -> None:
    """Ping ``dst_addr`` from ``src`` without loss, and a TCP transfer whose SHA-256 matches."""
    wait_ping(src, dst_addr)
    result = ping(src, dst_addr, count=5, interval=0.05)
    assert result.loss == 0, f"ping {dst_addr}: {result}"
    sent, received = tcp_transfer(src, dst, dst_addr, size, port=port)
    assert sent == received, f"TCP to {dst_addr}: sha256 {sent} sent, {received} received"


# -- configs -------------------------------------------------------------------------------


def sw_connection(
    me: Site,
    peer: Site,
    children: Sequence[Child],
    *,
    ike: Sequence[str] = ("aes256gcm16-prfsha256-ecp256",),
    local: Auth | None = None,
    remote: Auth | None = None,
    **kw: Any,
) -> Connection:
    """strongSwan's connection ``a-b`` (PSK with the gateways' addresses unless told)."""
    return Connection(
        CONN,
        [me.gw_wan_v4],
        [peer.public_v4],
        local=local or Auth("psk", id=me.gw_wan_v4),
        remote=remote or Auth("psk", id=peer.gw_wan_v4),
        children=list(children),
        proposals=list(ike),
        **kw,
    )


def sw_child(
    me: Site, peer: Site, esp: Sequence[str] = ("aes256gcm16",), *, name: str = "net",
    local_ts: Sequence[str] | None = None, remote_ts: Sequence[str] | None = None,
) -> Child:  # fmt: skip
    """One child between the sites' IPv4 LANs (or the given selectors)."""
    return Child(
        name,
        list(local_ts or [me.lan_net_v4]),
        list(remote_ts or [peer.lan_net_v4]),
        esp_proposals=list(esp),
    )


def psk_secret(me: Site, peer: Site, psk: str = PSK) -> Secret:
    return Secret("ike", secret=psk, ids=[me.gw_wan_v4, peer.gw_wan_v4])


def gw_site(peer: Site, **extra: Any) -> dict[str, Any]:
    """gatewayd's ``[[site]]`` for strongSwan's site (PSK, IPv4 LAN unless told)."""
    site: dict[str, Any] = {
        "name": peer.name,
        "address": peer.public_v4,
        "networks": [peer.lan_net_v4],
    }
    if extra.get("auth", "psk") == "psk" and "psk_file" not in extra:
        site["psk"] = PSK
    return {**site, **extra}


def gw_gateway(me: Site, **extra: Any) -> dict[str, Any]:
    return {"name": me.name, "address": me.gw_wan_v4, "networks": [me.lan_net_v4], **extra}


# -- the two peers of one test ---------------------------------------------------------------


class Peers:
    """strongSwan in ``a.gw`` and gatewayd in ``b.gw`` for one test on a shared lab.

    Names carry ``tag`` so the logs of earlier tests stay apart; ``close()`` stops both
    and drops their logs from the lab's failure report."""

    def __init__(self, lab: Lab, a: Site, b: Site, tag: str) -> None:
        self.lab, self.a, self.b, self.tag = lab, a, b, tag
        self.sw: StrongSwan | None = None
        self.gw: Gatewayd | None = None
        self._logs: list[str] = []

    def strongswan(self, conn: Connection, secrets: Sequence[Secret] = (), **kw: Any) -> StrongSwan:
        """A configured, not yet started strongSwan (``add_cert`` before ``start``)."""
        name = f"sw-{self.tag}"
        sw = self.lab.strongswan(self.a.gw, name, **kw)
        sw.connections.append(conn)
        sw.secrets.extend(secrets)
        self._logs.append(f"strongswan {name}")
        self.sw = sw
        return sw

    def gatewayd(self, gateway: dict[str, Any], sites: list[dict[str, Any]]) -> Gatewayd:
        """A configured, not yet started gatewayd."""
        name = f"gatewayd-{self.tag}"
        prepare_gateway_host(self.b.gw)
        gw = self.lab.gatewayd(self.b.gw, name)
        gw.gateway, gw.sites = gateway, sites
        self._logs.append(name)
        self.gw = gw
        return gw

    def close(self) -> None:
        if self.gw is not None:
            self.gw.stop(timeout=10)
        if self.sw is not None:
            self.sw.stop(timeout=3)
        for name in self._logs:
            self.lab.logs.pop(name, None)
