"""A gatewayd hub with strongSwan sites around it (issue 4's interop scenarios).

``hub_with_strongswan_sites(lab, 3)`` builds ``hub_and_spokes(3)``, runs gatewayd in the
hub's gateway with one ``[[site]]`` per spoke, and a strongSwan (charon + kernel-libipsec)
in each spoke's gateway with a PSK connection ``<spoke>-hub`` / child ``net`` back to the
hub. A spoke behind a NAT initiates (the hub cannot reach it before the NAT has a
mapping), so its site on the hub is ``responder_only``; every other spoke only answers,
and the hub initiates to it.

Also here: a continuous ping in the background (``BackgroundPing``) whose exact count of
lost packets a test can assert on, the parsed ``gatewayctl routes --json``, and NAT
conntrack timeouts for the NAT namespace.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .gatewayd import Gatewayd, gateway_table, prepare_gateway_host, site_table
from .lab import Lab
from .netns import Netns, NetnsError
from .presets import psk_site_to_site
from .strongswan import StrongSwan
from .topology import Site, Topology

PSK = "lab-multisite-psk-5b0e8c2f9d41a6"
CHILD = "net"


@dataclass
class Spoke:
    """One strongSwan site: its hosts and addresses, its charon, its connection name."""

    site: Site
    sw: StrongSwan
    conn: str

    @property
    def name(self) -> str:
        return self.site.name

    def start(self) -> StrongSwan:
        """(Re)start charon with the same config (after ``kill``/``stop``)."""
        return self.sw.start()


@dataclass
class HubLab:
    topo: Topology
    hub: Gatewayd
    spokes: dict[str, Spoke] = field(default_factory=dict)

    @property
    def hub_site(self) -> Site:
        return self.topo["hub"]

    def __getitem__(self, name: str) -> Spoke:
        return self.spokes[name]

    def start(self) -> None:
        """Start every charon, then the hub; spokes behind a NAT initiate, the hub
        initiates to the others; returns once every tunnel is up and pinging."""
        for spoke in self.spokes.values():
            spoke.sw.start()
        self.hub.start()
        for spoke in self.spokes.values():
            if spoke.site.nat is not None:
                spoke.sw.initiate(CHILD)
        self.wait_all_up()

    def wait_all_up(self, timeout: float = 30) -> None:
        """Every spoke established on the hub and answering LAN-to-LAN pings."""
        for spoke in self.spokes.values():
            self.wait_up(spoke.name, timeout)

    def wait_up(self, name: str, timeout: float = 30) -> dict[str, Any]:
        spoke = self.spokes[name]
        status = self.hub.wait_established(name, timeout)
        spoke.sw.wait_established(spoke.conn, CHILD, timeout=timeout)
        wait_ping_both(self.hub_site, spoke.site, timeout)
        return status


def wait_ping_both(a: Site, b: Site, timeout: float = 20) -> None:
    """One answered ping each way between the two LAN hosts (tunnel carrying traffic)."""
    from .traffic import wait_ping

    wait_ping(a.lan, b.lan_host_v4, timeout=timeout)
    wait_ping(b.lan, a.lan_host_v4, timeout=timeout)


def hub_with_strongswan_sites(
    lab: Lab,
    n: int,
    *,
    nat: frozenset[int] = frozenset(),
    ipv6: bool = True,
    site_extra: Mapping[str, Any] | None = None,
    conn_kw: Mapping[str, Any] | None = None,
    child_kw: Mapping[str, Any] | None = None,
    start: bool = True,
) -> HubLab:
    """The hub (gatewayd) and ``n`` strongSwan spokes ``s1``..``sN``; ``nat`` lists the
    spokes behind a NAT. ``site_extra``: more ``[[site]]`` keys for every site on the hub;
    ``conn_kw``/``child_kw``: more ``Connection``/``Child`` settings for every spoke.
    With ``start``: everything started, every tunnel up and pinging."""
    topo = lab.hub_and_spokes(n, nat=nat, ipv6=ipv6)
    hub = topo["hub"]
    prepare_gateway_host(hub.gw)
    gw = lab.gatewayd(hub.gw, "hub")
    gw.gateway = gateway_table(hub)
    result = HubLab(topo, gw)
    for i in range(1, n + 1):
        site = topo[f"s{i}"]
        behind_nat = site.nat is not None
        extra: dict[str, Any] = dict(site_extra or {})
        if behind_nat:
            # The spoke proves its private address; only it can open the NAT mapping.
            extra.setdefault("id", site.gw_wan_v4)
            extra.setdefault("mode", "responder_only")
        gw.sites.append(site_table(site, PSK, **extra))
        sw = lab.strongswan(site.gw, site.name)
        conn, secret = psk_site_to_site(
            site, hub, PSK, name=f"{site.name}-hub", ipv6_lans=ipv6, **(conn_kw or {})
        )
        for key, value in (child_kw or {}).items():
            setattr(conn.children[0], key, value)
        sw.connections.append(conn)
        sw.secrets.append(secret)
        result.spokes[site.name] = Spoke(site, sw, conn.name)
    if start:
        result.start()
    return result


# -- routes ---------------------------------------------------------------------------------


def ctl_routes(gw: Gatewayd) -> list[dict[str, Any]]:
    """``gatewayctl routes --json``, parsed (the command line, not the Python client)."""
    out = json.loads(gw.ctl("routes", "--json").stdout)
    return list(out["routes"] if isinstance(out, dict) else out)


def route_states(gw: Gatewayd, site: str) -> set[str]:
    return {r["state"] for r in ctl_routes(gw) if r["site"] == site}


def wait_routes(gw: Gatewayd, site: str, state: str, timeout: float = 20) -> None:
    """The site's rows in ``gatewayctl routes --json`` all in ``state``."""
    gw.wait_for(lambda: route_states(gw, site) == {state}, timeout, f"{site} routes {state}")


def wait_kernel_routes(
    gw: Gatewayd, prefixes: list[str], present: bool, timeout: float = 20
) -> None:
    """Each prefix present in (or gone from) the tunnel table."""

    def ok() -> bool:
        have = gw.route_prefixes()
        return all((p in have) == present for p in prefixes)

    what = f"kernel routes {prefixes} {'present' if present else 'gone'}"
    gw.wait_for(ok, timeout, what)


# -- a ping that runs while things happen ---------------------------------------------------

_PING_RX = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


class BackgroundPing:
    """``ping -i INTERVAL`` from ``ns`` to ``dst`` until ``stop()``; then ``sent``/``received``.

    ``-D -O`` make ping print every missing reply with its time stamp, so a failure
    shows when the loss happened."""

    def __init__(self, ns: Netns, dst: str, interval: float = 0.2, wait: float = 2.0) -> None:
        self.ns, self.dst = ns, dst
        argv = ["ping", "-n", "-D", "-O", "-i", str(interval), "-W", str(wait), dst]
        self.proc = ns.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.started = time.monotonic()
        self.sent = self.received = 0
        self.output = ""

    def stop(self) -> tuple[int, int]:
        """SIGINT (ping prints its summary); returns (sent, received)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.output = out
        m = _PING_RX.search(out)
        if not m:
            raise NetnsError(f"[{self.ns.host}] ping {self.dst}: no summary\n{out[-2000:]}")
        self.sent, self.received = int(m[1]), int(m[2])
        return self.sent, self.received

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def missed_lines(self) -> list[str]:
        return [ln for ln in self.output.splitlines() if "no answer yet" in ln]

    def __enter__(self) -> BackgroundPing:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()


# -- NAT ------------------------------------------------------------------------------------


def shorten_nat_udp_timeouts(nat: Netns, seconds: int) -> dict[str, int]:
    """Set the NAT namespace's conntrack UDP timeouts (both the one-way and the
    "stream" one, used once a flow has seen replies); returns the values read back."""
    out = {}
    for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
        nat.sysctl(f"net.netfilter.{key}", seconds)
        value = nat.run(["sysctl", "-n", f"net.netfilter.{key}"]).stdout.strip()
        out[key] = int(value)
    return out


def conntrack_udp(nat: Netns) -> list[str]:
    """The NAT's UDP conntrack entries (``/proc/net/nf_conntrack`` inside it)."""
    cp = nat.run(["cat", "/proc/net/nf_conntrack"], check=False)
    return [ln for ln in cp.stdout.splitlines() if " udp " in f" {ln} "]
