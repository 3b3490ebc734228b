"""Sites built from namespaces around one routed WAN.

Layout (site k = 1, 2, ... in the order added)::

    lan_k --(lan)-- gw_k --(wan)-- [nat_k --] wan router --...-- gw_j -- lan_j

* ``wan``: one router namespace. Each site hangs off it on its own veth and subnet, so
  the hub and every site are one hop apart and public addresses look like real ones.
  The router knows only WAN subnets: LAN-to-LAN traffic that reaches it unencrypted has
  nowhere to go, so a working LAN ping proves the tunnel carries it.
* ``gw_k``: the gateway under test (strongSwan or gatewayd), IP forwarding on.
* ``lan_k``: a host behind the gateway (the "LAN"; ``dummy`` links do not exist here).
* ``nat_k`` (optional): masquerades the gateway behind the site's public address.

Addresses (IPv6 optional), ``k`` = site index:

=================  ===========================  ==========================
link               IPv4                         IPv6
=================  ===========================  ==========================
WAN of site k      k=1 192.0.2.0/24, 2 198.51.   2001:db8:k::/64
                   100.0/24, 3 203.0.113.0/24,
                   k>=4 198.18.k.0/24
                   (router .254, site .1)       (router ::fe, site ::1)
behind NAT k       172.16.k.0/24 (nat .254,     fd10:k::/64 (nat ::fe,
                   gw .1)                       gw ::1)
LAN of site k      10.k.0.0/24 in 10.k.0.0/16   fd00:k::/64 in fd00:k::/48
                   (gw .1, host .2)             (gw ::1, host ::2)
=================  ===========================  ==========================
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from .netns import DEFAULT_PREFIX, Netns, veth

_SITE_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
_RFC5737 = ("192.0.2", "198.51.100", "203.0.113")


def _wan4(k: int) -> str:
    """First three octets of site k's WAN /24."""
    return _RFC5737[k - 1] if k <= len(_RFC5737) else f"198.18.{k}"


@dataclass
class Site:
    """One site's hosts and addresses; fields ending in ``_v6`` are None without IPv6."""

    name: str
    index: int
    gw: Netns
    lan: Netns
    nat: Netns | None
    public_v4: str  # what peers see and connect to (the NAT's address when NATed)
    gw_wan_v4: str  # the gateway's own WAN-side address (private when NATed)
    lan_net_v4: str  # the site's address space, e.g. 10.1.0.0/16
    gw_lan_v4: str
    lan_host_v4: str
    public_v6: str | None = None
    gw_wan_v6: str | None = None
    lan_net_v6: str | None = None
    gw_lan_v6: str | None = None
    lan_host_v6: str | None = None
    # Interface names inside gw: "wan" faces the WAN (or the NAT), "lan" faces the host.
    gw_wan_if: str = "wan"
    gw_lan_if: str = "lan"

    @property
    def hosts(self) -> list[Netns]:
        return [h for h in (self.lan, self.gw, self.nat) if h is not None]

    @property
    def lan_nets(self) -> list[str]:
        return [n for n in (self.lan_net_v4, self.lan_net_v6) if n]


@dataclass
class _Plan:
    name: str
    nat: bool


@dataclass
class Topology:
    """Add sites, then ``build()``; ``close()`` (or ``with``) removes every namespace."""

    prefix: str = DEFAULT_PREFIX
    ipv6: bool = True
    mtu: int | None = None
    sites: dict[str, Site] = field(default_factory=dict)
    wan: Netns | None = None
    _plans: list[_Plan] = field(default_factory=list)
    _hosts: list[Netns] = field(default_factory=list)

    def add_site(self, name: str, *, nat: bool = False) -> Self:
        if not _SITE_RE.match(name):
            raise ValueError(f"site name {name!r} must match {_SITE_RE.pattern}")
        if name in {p.name for p in self._plans} or name == "wan":
            raise ValueError(f"site {name!r} already added (or reserved)")
        self._plans.append(_Plan(name, nat))
        return self

    def __getitem__(self, name: str) -> Site:
        return self.sites[name]

    @property
    def hosts(self) -> list[Netns]:
        return list(self._hosts)

    def _host(self, host: str) -> Netns:
        ns = Netns(host, self.prefix)
        self._hosts.append(ns)
        return ns

    def build(self) -> Self:
        if self.wan is not None:
            raise RuntimeError("topology already built")
        try:
            self.wan = self._host("wan")
            self.wan.enable_forwarding()
            for k, plan in enumerate(self._plans, 1):
                self.sites[plan.name] = self._build_site(k, plan)
        except BaseException:
            self.close()
            raise
        return self

    def _build_site(self, k: int, plan: _Plan) -> Site:
        assert self.wan is not None
        v6 = self.ipv6
        w4, n4, l4 = _wan4(k), f"172.16.{k}", f"10.{k}.0"
        w6, n6, l6 = f"2001:db8:{k:x}:", f"fd10:{k:x}:", f"fd00:{k:x}:"
        gw = self._host(f"{plan.name}-gw")
        lan = self._host(f"{plan.name}-lan")
        nat = self._host(f"{plan.name}-nat") if plan.nat else None

        # The public side: the gateway itself, or the NAT in front of it.
        front = nat or gw
        veth(
            self.wan, front, a_ifname=plan.name, b_ifname="wan", mtu=self.mtu,
            a_addrs=[f"{w4}.254/24"] + ([f"{w6}:fe/64"] if v6 else []),
            b_addrs=[f"{w4}.1/24"] + ([f"{w6}:1/64"] if v6 else []),
        )  # fmt: skip
        front.add_route("default", via=f"{w4}.254")
        if v6:
            front.add_route("default", via=f"{w6}:fe", v6=True)
        gw_wan4, gw_wan6 = f"{w4}.1", f"{w6}:1"
        if nat is not None:
            veth(
                nat, gw, a_ifname="inside", b_ifname="wan", mtu=self.mtu,
                a_addrs=[f"{n4}.254/24"] + ([f"{n6}:fe/64"] if v6 else []),
                b_addrs=[f"{n4}.1/24"] + ([f"{n6}:1/64"] if v6 else []),
            )  # fmt: skip
            nat.enable_forwarding(v6=v6)
            nat.masquerade("wan")
            gw.add_route("default", via=f"{n4}.254")
            if v6:
                gw.add_route("default", via=f"{n6}:fe", v6=True)
            gw_wan4, gw_wan6 = f"{n4}.1", f"{n6}:1"

        veth(
            gw, lan, a_ifname="lan", b_ifname="gw", mtu=self.mtu,
            a_addrs=[f"{l4}.1/24"] + ([f"{l6}:1/64"] if v6 else []),
            b_addrs=[f"{l4}.2/24"] + ([f"{l6}:2/64"] if v6 else []),
        )  # fmt: skip
        gw.enable_forwarding(v6=v6)
        lan.add_route("default", via=f"{l4}.1")
        if v6:
            lan.add_route("default", via=f"{l6}:1", v6=True)

        def six(s: str) -> str | None:
            return str(ipaddress.ip_interface(s).ip) if v6 else None

        return Site(
            name=plan.name, index=k, gw=gw, lan=lan, nat=nat,
            public_v4=f"{w4}.1", gw_wan_v4=gw_wan4,
            lan_net_v4=f"10.{k}.0.0/16", gw_lan_v4=f"{l4}.1", lan_host_v4=f"{l4}.2",
            public_v6=six(f"{w6}:1"), gw_wan_v6=six(gw_wan6),
            lan_net_v6=f"fd00:{k:x}::/48" if v6 else None,
            gw_lan_v6=six(f"{l6}:1"), lan_host_v6=six(f"{l6}:2"),
        )  # fmt: skip

    def close(self) -> None:
        """Delete every host (processes first); safe to call twice."""
        errors: list[BaseException] = []
        for ns in reversed(self._hosts):
            try:
                ns.delete()
            except Exception as e:  # keep going: the rest must still be removed
                errors.append(e)
        self._hosts.clear()
        if errors:
            raise errors[0]

    def __enter__(self) -> Self:
        return self.build() if self.wan is None else self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def site_to_site(
    prefix: str = DEFAULT_PREFIX, *, nat_a: bool = False, nat_b: bool = False, ipv6: bool = True
) -> Topology:
    """``a-lan -- a-gw -- wan -- b-gw -- b-lan`` (built)."""
    return Topology(prefix, ipv6).add_site("a", nat=nat_a).add_site("b", nat=nat_b).build()


def hub_and_spokes(
    n: int, prefix: str = DEFAULT_PREFIX, *, nat: frozenset[int] = frozenset(), ipv6: bool = True
) -> Topology:
    """Site ``hub`` (index 1) and ``s1``..``sN`` (indices 2..N+1); ``nat`` lists spokes."""
    topo = Topology(prefix, ipv6).add_site("hub")
    for i in range(1, n + 1):
        topo.add_site(f"s{i}", nat=i in nat)
    return topo.build()
