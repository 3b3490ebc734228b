"""Kernel routing for the tunnel: site routes via the TUN device, and the bypass.

The routes live in a table of their own (default 2000), consulted through the rule
"not fwmark MARK lookup TABLE" (IPv4 and IPv6, priority 10000). The daemon's own UDP
and raw sockets carry SO_MARK = MARK (`mark_socket`), so its IKE and ESP packets skip
the tunnel table and follow the main table even when a site's networks cover the
peer's public address. This is what wg-quick does.

All netlink work of one KernelRoutes runs on its own worker thread with its own
IPRoute socket: the methods are safe from any thread, including the asyncio loop's
(they block for one netlink round trip; `await asyncio.to_thread(...)` avoids even that).
"""

from __future__ import annotations

import errno
import functools
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from gatewayd.logging import get_logger

__all__ = [
    "DEFAULT_FWMARK",
    "DEFAULT_RULE_PRIORITY",
    "DEFAULT_TABLE",
    "KernelRoutes",
    "mark_socket",
]

DEFAULT_TABLE = 2000
DEFAULT_FWMARK = 2000
DEFAULT_RULE_PRIORITY = 10000
SOURCE_CACHE_S = 2.0  # how long add() trusts the device index and source addresses it read

SO_MARK = getattr(socket, "SO_MARK", 36)
FIB_RULE_INVERT = 0x2
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40
FAMILIES = (socket.AF_INET, socket.AF_INET6)

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address
T = TypeVar("T")

log = get_logger(component="kernel")


def mark_socket(sock: socket.socket, mark: int = DEFAULT_FWMARK) -> None:
    """Set SO_MARK so this socket's packets bypass the tunnel table (needs CAP_NET_ADMIN).

    Call it before connect()/first send: a connected socket caches its route.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    except PermissionError as exc:
        raise PermissionError(exc.errno, "cannot set SO_MARK: needs CAP_NET_ADMIN") from None


def _network(prefix: str | IPNetwork) -> IPNetwork:
    return prefix if isinstance(prefix, IPv4Network | IPv6Network) else ip_network(prefix)


def _family(net: IPNetwork | IPAddress) -> int:
    return socket.AF_INET if net.version == 4 else socket.AF_INET6


def _ignore(codes: Iterable[int], fn: Callable[[], object]) -> bool:
    """Run fn; True if it worked, False if it failed with one of `codes` (e.g. ENOENT)."""
    try:
        fn()
    except NetlinkError as exc:
        if exc.code in codes:
            return False
        raise
    return True


class KernelRoutes:
    """Routes for the site networks via TUN device `ifname`, and the bypass rules."""

    def __init__(
        self,
        ifname: str,
        *,
        table: int = DEFAULT_TABLE,
        fwmark: int = DEFAULT_FWMARK,
        rule_priority: int = DEFAULT_RULE_PRIORITY,
        source_networks: Sequence[str | IPNetwork] = (),
        suppress_main_default: bool = False,
    ) -> None:
        """
        source_networks: the gateway's own networks; a local address inside them
            becomes the routes' `src`, so the gateway's own traffic to a site leaves
            with an address the site routes back through the tunnel.
        suppress_main_default: also add "lookup main suppress_prefixlength 0" just
            before the tunnel rule, so that the main table's specific routes (LAN,
            uplink) still win over a site covering 0.0.0.0/0 or ::/0.
        """
        if not 0 < table < 2**32 or table in (253, 254, 255):
            raise ValueError(f"table {table} is reserved or out of range")
        if not 0 < fwmark < 2**32:
            raise ValueError("fwmark must be a non-zero 32-bit value")
        self.ifname = ifname
        self.table = table
        self.fwmark = fwmark
        self.rule_priority = rule_priority
        self.source_networks = tuple(_network(n) for n in source_networks)
        self.suppress_main_default = suppress_main_default
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"netlink-{ifname}")
        self._link_cache: tuple[float, int, dict[int, str]] | None = None  # worker thread only
        self._worker: threading.Thread | None = None
        self._ipr: IPRoute | None = None
        self._closed = False

    # -- threading -----------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("KernelRoutes is closed")
        if threading.current_thread() is self._worker:
            return fn(*args)
        return self._pool.submit(fn, *args).result()

    def _nl(self) -> IPRoute:
        # Created on the worker thread, used only there.
        if self._ipr is None:
            self._worker = threading.current_thread()
            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        """Close the netlink socket. Routes and rules stay: call flush()/remove_rules() first."""
        if self._closed:
            return

        def shut() -> None:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None

        self._pool.submit(shut).result()
        self._closed = True
        self._pool.shutdown(wait=True)

    def __enter__(self) -> KernelRoutes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rules ---------------------------------------------------------------------

    def _rule_specs(self) -> list[dict[str, Any]]:
        specs: list[dict[str, Any]] = []
        for family in FAMILIES:
            if self.suppress_main_default:
                specs.append(
                    {
                        "family": family,
                        "priority": self.rule_priority - 1,
                        "table": RT_TABLE_MAIN,
                        "FRA_SUPPRESS_PREFIXLEN": 0,
                    }
                )
            specs.append(
                {
                    "family": family,
                    "priority": self.rule_priority,
                    "table": self.table,
                    "fwmark": self.fwmark,
                    "fwmask": 0xFFFFFFFF,
                    "flags": FIB_RULE_INVERT,
                }
            )
        return specs

    @staticmethod
    def _rule_matches(msg: Any, spec: dict[str, Any]) -> bool:
        table = msg.get_attr("FRA_TABLE") or msg["table"]
        suppress = msg.get_attr("FRA_SUPPRESS_PREFIXLEN")
        return bool(
            msg["family"] == spec["family"]
            and msg.get_attr("FRA_PRIORITY") == spec["priority"]
            and table == spec["table"]
            and (msg.get_attr("FRA_FWMARK") or 0) == spec.get("fwmark", 0)
            and msg["flags"] & FIB_RULE_INVERT == spec.get("flags", 0) & FIB_RULE_INVERT
            and ("FRA_SUPPRESS_PREFIXLEN" not in spec or suppress == 0)
        )

    def _count_rules(self, spec: dict[str, Any]) -> int:
        dump = self._nl().rule("dump", family=spec["family"])
        return sum(1 for msg in dump if self._rule_matches(msg, spec))

    def install_rules(self) -> None:
        """Add the bypass rule(s) for IPv4 and IPv6 unless already there."""

        def work() -> None:
            for spec in self._rule_specs():
                if self._count_rules(spec) == 0:
                    self._nl().rule("add", **spec)
            log.info("policy rules installed", table=self.table, fwmark=self.fwmark)

        self._call(work)

    def remove_rules(self) -> None:
        """Remove every copy of our rules; fine when they are already gone."""

        def delete(spec: dict[str, Any]) -> None:
            self._nl().rule("del", **spec)

        def work() -> None:
            for spec in self._rule_specs():
                for _ in range(self._count_rules(spec)):
                    _ignore((errno.ENOENT,), functools.partial(delete, spec))

        self._call(work)

    def rules_installed(self) -> bool:
        return self._call(lambda: all(self._count_rules(s) for s in self._rule_specs()))

    # -- routes --------------------------------------------------------------------

    def _index(self) -> int:
        found = self._nl().link_lookup(ifname=self.ifname)
        if not found:
            raise OSError(errno.ENODEV, f"interface {self.ifname!r} does not exist")
        return int(found[0])

    def _sources(self) -> dict[int, str]:
        """family -> a usable local address inside source_networks (lowest ifindex first)."""
        if not self.source_networks:
            return {}
        found: dict[int, tuple[int, str]] = {}
        for msg in self._nl().addr("dump"):
            flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if addr is None or flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
                continue
            ip = ip_address(addr.split("%")[0])
            if not any(ip in net for net in self.source_networks if net.version == ip.version):
                continue
            fam = _family(ip)
            if fam not in found or msg["index"] < found[fam][0]:
                found[fam] = (msg["index"], str(ip))
        return {fam: addr for fam, (_idx, addr) in found.items()}

    def _replace(self, net: IPNetwork, index: int, sources: dict[int, str]) -> None:
        fam = _family(net)
        spec: dict[str, Any] = {
            "family": fam,
            "dst": str(net.network_address),
            "dst_len": net.prefixlen,
            "oif": index,
            "table": self.table,
            "proto": RTPROT_STATIC,
            "scope": RT_SCOPE_LINK if fam == socket.AF_INET else RT_SCOPE_UNIVERSE,
        }
        if fam in sources:
            spec["prefsrc"] = sources[fam]
        self._nl().route("replace", **spec)

    def _delete(self, net: IPNetwork, index: int | None) -> bool:
        spec: dict[str, Any] = {
            "family": _family(net),
            "dst": str(net.network_address),
            "dst_len": net.prefixlen,
            "table": self.table,
            "scope": RT_SCOPE_NOWHERE,  # any scope, as `ip route del` does
        }
        if index is not None:
            spec["oif"] = index
        return _ignore((errno.ENOENT, errno.ESRCH), lambda: self._nl().route("del", **spec))

    def _installed(self) -> set[IPNetwork]:
        found = self._nl().link_lookup(ifname=self.ifname)
        if not found:
            return set()  # the kernel drops a device's routes with the device
        index = found[0]
        nets: set[IPNetwork] = set()
        for fam in FAMILIES:
            for msg in self._nl().route("dump", family=fam, table=self.table):
                table = msg.get_attr("RTA_TABLE") or msg["table"]
                if table != self.table or msg.get_attr("RTA_OIF") != index:
                    continue
                cls = IPv4Network if fam == socket.AF_INET else IPv6Network
                # A default route has no RTA_DST.
                nets.add(cls((msg.get_attr("RTA_DST") or 0, msg["dst_len"])))
        return nets

    def add(self, prefix: str | IPNetwork) -> None:
        """Route `prefix` via the TUN device in our table (replace: idempotent)."""
        net = _network(prefix)

        def work() -> None:
            # The device index and source addresses rarely change: looked up once per
            # SOURCE_CACHE_S, not per route (1,000 sites coming up meant 3,000 netlink
            # round trips). A failure with cached values retries with fresh ones.
            now = time.monotonic()
            cached = self._link_cache
            if cached is None or now - cached[0] > SOURCE_CACHE_S:
                cached = self._link_cache = (now, self._index(), self._sources())
            try:
                self._replace(net, cached[1], cached[2])
            except (OSError, NetlinkError):
                self._link_cache = None
                self._replace(net, self._index(), self._sources())

        self._call(work)
        log.debug("route added", prefix=str(net), table=self.table)

    def remove(self, prefix: str | IPNetwork) -> None:
        """Remove the route for `prefix`; fine when it is not there."""
        net = _network(prefix)

        def work() -> None:
            found = self._nl().link_lookup(ifname=self.ifname)
            if found:
                self._delete(net, int(found[0]))

        self._call(work)
        log.debug("route removed", prefix=str(net), table=self.table)

    def sync(self, prefixes: Iterable[str | IPNetwork]) -> None:
        """Make the table's routes via our device exactly `prefixes` (IPv4 and IPv6)."""
        wanted = {_network(p) for p in prefixes}

        def work() -> None:
            index = self._index()
            for net in self._installed() - wanted:
                self._delete(net, index)
            sources = self._sources()
            for net in sorted(wanted, key=lambda n: (n.version, n)):
                self._replace(net, index, sources)

        self._call(work)
        log.info("routes synced", count=len(wanted), table=self.table)

    def flush(self) -> None:
        """Remove all our routes (tunnel down, shutdown)."""

        def work() -> None:
            found = self._nl().link_lookup(ifname=self.ifname)
            if found:
                for net in self._installed():
                    self._delete(net, int(found[0]))

        self._call(work)

    def installed(self) -> set[IPNetwork]:
        """The prefixes currently routed via our device in our table."""
        return self._call(self._installed)

    def source_addresses(self) -> dict[int, str]:
        """family (AF_INET/AF_INET6) -> the `src` routes get now."""
        return self._call(self._sources)
