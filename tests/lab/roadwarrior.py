"""strongSwan road-warrior clients of a gatewayd with [p2s] (issue 6's interop scenarios).

``p2s_lab(lab, clients=3)`` builds the topology::

    hub-lan -- hub-gw [gatewayd, p2s] -- wan -- s1-gw [strongSwan site] -- s1-lan
                                          |
                                          +-- c1-gw, c2-gw, ... [strongSwan road warriors]

The hub's gatewayd has one strongSwan site (``s1``, whose selectors cover the pool, so
its LAN reaches the clients) and a ``[p2s]`` table. Each client host ``cK-gw`` runs its
own charon with one connection ``rw`` (child ``rw``) asking for a virtual IP
(``vips = 0.0.0.0``) and pinning the hub's certificate CA. A client is configured per
test as a certificate or EAP-MSCHAPv2 user with ``use_certificate``/``use_eap`` and
(re)started; the ``resolve`` plugin stays off (lab-notes.md), the DNS attribute shows in
charon's log.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .certs import CertFiles, make_ca, make_cert
from .gatewayd import Gatewayd, gateway_table, prepare_gateway_host, site_table
from .lab import Lab
from .presets import psk_site_to_site
from .strongswan import StrongSwan
from .swanctl_conf import Auth, Child, Connection, Secret
from .topology import Site, Topology

HUB_ID = "hub.p2s.example"
POOL = "172.16.201.0/24"
DNS = "10.1.0.53"
SITE_PSK = "lab-p2s-site-psk-0c41e7a9"
CONN = CHILD = "rw"
# What gatewayd and strongSwan 5.9.8 both accept by default, chosen explicitly.
IKE_PROPOSAL = "aes256gcm16-prfsha256-ecp256"
ESP_PROPOSAL = "aes256gcm16"


@dataclass
class P2sPki:
    """The hub's certificate (its own CA) and the client CA with client certificates."""

    dir: Path
    hub_ca: CertFiles
    hub: CertFiles
    client_ca: CertFiles
    stranger_ca: CertFiles
    clients: dict[str, CertFiles] = field(default_factory=dict)

    @classmethod
    def make(cls, d: Path) -> P2sPki:
        hub_ca = make_ca(d, "p2s lab hub CA", stem="hub-ca")
        return cls(
            d,
            hub_ca,
            make_cert(d, hub_ca, HUB_ID, dns=[HUB_ID], stem="hub"),
            make_ca(d, "p2s lab client CA", stem="client-ca"),
            make_ca(d, "p2s lab stranger CA", stem="stranger-ca"),
        )

    def client(self, name: str, *, stranger: bool = False) -> CertFiles:
        """A client certificate (cached by name), from the client CA or a CA we do not trust."""
        if name not in self.clients:
            ca = self.stranger_ca if stranger else self.client_ca
            self.clients[name] = make_cert(self.dir, ca, name, stem=f"client-{name}")
        return self.clients[name]


@dataclass
class RoadWarrior:
    """One client host and its charon; ``identity`` is what the hub's status lists."""

    site: Site
    sw: StrongSwan
    identity: str = ""

    @property
    def ns(self) -> Any:
        return self.site.gw

    def connect(self, timeout: int = 20) -> None:
        self.sw.initiate(CHILD, timeout=timeout)

    def try_connect(self, timeout: int = 15) -> bool:
        """Initiate; False (not an exception) when the hub refuses."""
        cp = self.sw.swanctl(
            "--initiate",
            "--child",
            CHILD,
            "--timeout",
            str(timeout),
            check=False,
            timeout=timeout + 10,
        )
        return cp.returncode == 0

    def disconnect(self) -> None:
        self.sw.terminate(ike=CONN)

    def virtual_ips(self) -> list[str]:
        for sa in self.sw.list_sas(CONN):
            if sa.state == "ESTABLISHED":
                return list(sa.raw.get("local-vips") or [])
        return []


@dataclass
class P2sLab:
    topo: Topology
    hub: Gatewayd
    site: StrongSwan
    pki: P2sPki
    clients: list[RoadWarrior]

    @property
    def hub_site(self) -> Site:
        return self.topo["hub"]

    @property
    def s1(self) -> Site:
        return self.topo["s1"]

    def p2s_status(self) -> dict[str, Any]:
        """``gatewayctl status --json``'s p2s section (the command line)."""
        status = json.loads(self.hub.ctl("status", "--json").stdout)
        p2s: dict[str, Any] = status["p2s"]
        return p2s

    def connected(self) -> dict[str, dict[str, Any]]:
        return {c["identity"]: c for c in self.p2s_status()["clients"]}

    def wait_clients(self, identities: set[str], timeout: float = 20) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            now = self.connected()
            return now if set(now) == identities else None

        result: dict[str, Any] = self.hub.wait_for(ok, timeout, f"p2s clients {identities}")
        return result


def _client_connection(pki: P2sPki, local: Auth, client: Site, hub: Site) -> Connection:
    return Connection(
        name=CONN,
        local_addrs=[client.gw_wan_v4],
        remote_addrs=[hub.public_v4],
        local=local,
        remote=Auth("pubkey", id=HUB_ID, cacerts=[pki.hub_ca.cert.name]),
        children=[
            Child(CHILD, ["dynamic"], [hub.lan_net_v4, "10.2.0.0/16"], esp_proposals=[ESP_PROPOSAL])
        ],
        proposals=[IKE_PROPOSAL],
        extra={"vips": ["0.0.0.0"], "send_cert": "always"},
    )


def use_certificate(rw: RoadWarrior, lab: P2sLab, name: str, *, stranger: bool = False) -> None:
    """Make ``rw`` the certificate client ``name`` (restart its charon)."""
    files = lab.pki.client(name, stranger=stranger)
    sw = rw.sw
    sw.stop()  # charon deletes its IKE SA first: the hub forgets the previous user
    sw.add_cert(lab.pki.hub_ca.cert, "x509ca")
    sw.add_cert(files.key, "private")
    local = Auth("pubkey", id=files.dn, certs=[sw.add_cert(files.cert)])
    sw.connections[:] = [_client_connection(lab.pki, local, rw.site, lab.hub_site)]
    sw.secrets[:] = []
    rw.identity = files.dn
    sw.start()


def use_eap(rw: RoadWarrior, lab: P2sLab, user: str, password: str) -> None:
    """Make ``rw`` the EAP-MSCHAPv2 user ``user`` (restart its charon)."""
    sw = rw.sw
    sw.stop()
    sw.add_cert(lab.pki.hub_ca.cert, "x509ca")
    local = Auth("eap-mschapv2", id=f"{user}@rw.example", extra={"eap_id": user})
    sw.connections[:] = [_client_connection(lab.pki, local, rw.site, lab.hub_site)]
    sw.secrets[:] = [Secret("eap", secret=password, ids=[user])]
    rw.identity = user
    sw.start()


def p2s_lab(
    lab: Lab,
    workdir: Path,
    *,
    clients: int = 3,
    users: dict[str, str] | None = None,
    p2s: dict[str, Any] | None = None,
) -> P2sLab:
    """Everything built and started: the site tunnel up; clients configured by the test.

    ``users``: EAP-MSCHAPv2 user -> password (stored as NT hashes in ``users.toml``).
    ``p2s`` overrides keys of the hub's [p2s] table; the client CA, revocation list
    (``revoked.txt``, empty at first) and users file live in ``workdir``.
    """
    from gatewayd.p2s.users import nt_hash_of, render_users

    topo = lab.topology(ipv6=False).add_site("hub").add_site("s1")
    for k in range(1, clients + 1):
        topo.add_site(f"c{k}")
    topo.build()
    hub, s1 = topo["hub"], topo["s1"]
    pki = P2sPki.make(workdir)
    (workdir / "revoked.txt").write_text("# revoked client certificates\n")
    hashes = {u: nt_hash_of(pw) for u, pw in (users or {}).items()}
    (workdir / "users.toml").write_bytes(render_users(hashes))
    prepare_gateway_host(hub.gw)
    gw = lab.gatewayd(hub.gw, "hub")
    gw.gateway = gateway_table(
        hub, id=HUB_ID, certificate=str(pki.hub.cert), private_key=str(pki.hub.key)
    )
    gw.sites.append(
        site_table(s1, SITE_PSK, ike_proposals=[IKE_PROPOSAL], esp_proposals=[ESP_PROPOSAL])
    )
    gw.tables["p2s"] = {
        "address_pool": [POOL],
        "dns": [DNS],
        "auth": ["certificate", "eap-mschapv2"],
        "client_ca": [str(pki.client_ca.cert)],
        "revoked": str(workdir / "revoked.txt"),
        "users_file": str(workdir / "users.toml"),
        "ike_proposals": [IKE_PROPOSAL],
        "esp_proposals": [ESP_PROPOSAL],
        **(p2s or {}),
    }
    site = lab.strongswan(s1.gw, "s1")
    conn, secret = psk_site_to_site(
        s1,
        hub,
        SITE_PSK,
        name="s1-hub",
        ipv6_lans=False,
        ike_proposals=[IKE_PROPOSAL],
        esp_proposals=[ESP_PROPOSAL],
    )
    conn.children[0].remote_ts = [hub.lan_net_v4, POOL]  # the site reaches the clients
    conn.remote = Auth("psk", id=HUB_ID)  # the hub's one identity, also for its sites
    secret.ids = [s1.gw_wan_v4, HUB_ID]
    site.connections.append(conn)
    site.secrets.append(secret)
    site.start()
    gw.start()
    gw.wait_established("s1", timeout=30)
    site.wait_established("s1-hub", "net", timeout=30)
    rws = [
        RoadWarrior(topo[f"c{k}"], lab.strongswan(topo[f"c{k}"].gw, f"c{k}"))
        for k in range(1, clients + 1)
    ]
    return P2sLab(topo, gw, site, pki, rws)


def wait_until(ok: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = ok()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)
