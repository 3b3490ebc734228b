"""The route table: which site and Child SA carries an outbound packet.

Longest-prefix match on the destination picks the route. A route-based site's route
names its Child SA directly; a policy-based site (one Child SA per (local network, site
network) pair) has a pair table under each of its prefixes, where a second longest-prefix
match on the packet's source picks the Child SA.

Threads: the control plane edits a RouteTable; every edit builds a new immutable
RouteSnapshot and publishes it by swapping one reference, so a data-path thread never
sees a half-updated table. A packet loop can take ``table.snapshot`` once per batch.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")  # the opaque Child SA key the data path hands to ESP
V = TypeVar("V")
PATCH_LIMIT = 16  # changed prefixes a publish patches in; beyond, it rebuilds


class RouteConflict(ValueError):
    """A prefix (or pair) is already claimed by another site, or in another way."""


@dataclass(frozen=True, slots=True)
class Route(Generic[T]):
    """One row of ``gatewayctl routes``.

    ``source`` is None for a route-based site (any source); for a policy-based site it is
    the local network of the (source, destination) pair this Child SA carries.
    """

    prefix: IPNetwork
    site: str
    target: T | None  # the Child SA key; None while the site has no Child SA
    source: IPNetwork | None = None

    @property
    def state(self) -> Literal["up", "down"]:
        """ "up" when a Child SA carries the route; "down" drops its packets."""
        return "down" if self.target is None else "up"


class _Lpm(Generic[V]):
    """An immutable longest-prefix-match map for one address family.

    One dict per prefix length present, int(network) -> value, longest first: a lookup
    costs one mask and one dict probe per distinct length, no ipaddress objects.
    """

    __slots__ = ("_bits", "_levels", "_plens")

    def __init__(self, items: Iterable[tuple[IPNetwork, V]], bits: int) -> None:
        by_len: dict[int, dict[int, V]] = {}
        for net, value in items:
            by_len.setdefault(net.prefixlen, {})[int(net.network_address)] = value
        self._set(by_len, bits)

    def _set(self, by_len: dict[int, dict[int, V]], bits: int) -> None:
        full = (1 << bits) - 1
        plens = sorted(by_len, reverse=True)
        self._bits = bits
        self._plens = tuple(plens)
        self._levels = tuple((full ^ (full >> plen), by_len[plen]) for plen in plens)

    def replaced(self, net: IPNetwork, value: V | None) -> _Lpm[V]:
        """A copy with ``net`` mapped to ``value`` (None: removed). Only the level of
        net's prefix length is copied (a C-speed dict copy); the others are shared."""
        levels = zip(self._plens, self._levels, strict=True)
        by_len = {plen: table for plen, (_mask, table) in levels}
        table = dict(by_len.get(net.prefixlen, {}))
        if value is None:
            table.pop(int(net.network_address), None)
        else:
            table[int(net.network_address)] = value
        if table:
            by_len[net.prefixlen] = table
        else:
            by_len.pop(net.prefixlen, None)
        new: _Lpm[V] = object.__new__(_Lpm)
        new._set(by_len, self._bits)
        return new

    def values(self) -> Iterator[V]:
        for _mask, table in self._levels:
            yield from table.values()

    def get(self, addr: int) -> V | None:
        for mask, table in self._levels:
            value = table.get(addr & mask)
            if value is not None:
                return value
        return None


# What a destination prefix leads to: a Route, or a policy-based site's pair table.
_Entry = Route[T] | _Lpm[Route[T]]
_Slot = Route[T] | dict[IPNetwork, Route[T]]  # the editable form of _Entry


class RouteSnapshot(Generic[T]):
    """An immutable route table; safe to read from any thread without locks."""

    __slots__ = ("_routes", "_v4", "_v6")

    def __init__(self, slots: Mapping[IPNetwork, _Slot[T]] | None = None) -> None:
        entries = [(prefix, _entry(slot)) for prefix, slot in (slots or {}).items()]
        self._v4: _Lpm[_Entry[T]] = _Lpm((e for e in entries if e[0].version == 4), 32)
        self._v6: _Lpm[_Entry[T]] = _Lpm((e for e in entries if e[0].version == 6), 128)
        # Listed (and sorted) when first asked for: a gateway with many sites or clients
        # publishes a snapshot per change, and only status listings need the rows.
        self._routes: tuple[Route[T], ...] | None = None

    def replaced(self, prefix: IPNetwork, slot: _Slot[T] | None) -> RouteSnapshot[T]:
        """A copy with ``prefix``'s slot replaced (None: removed), sharing the rest."""
        new: RouteSnapshot[T] = object.__new__(RouteSnapshot)
        entry = None if slot is None else _entry(slot)
        if prefix.version == 4:
            new._v4, new._v6 = self._v4.replaced(prefix, entry), self._v6
        else:
            new._v4, new._v6 = self._v4, self._v6.replaced(prefix, entry)
        new._routes = None
        return new

    def lookup_int(self, dst: int, version: int, src: int | None = None) -> Route[T] | None:
        """The route for destination ``dst`` (and source ``src`` of the same family)."""
        entry = (self._v4 if version == 4 else self._v6).get(dst)
        if entry is None or type(entry) is Route:
            return entry
        if src is None:  # a policy-based prefix cannot be matched without the source
            return None
        return entry.get(src)  # type: ignore[union-attr]

    def lookup_packed(self, dst: bytes, src: bytes | None = None) -> Route[T] | None:
        """Like lookup() on the 4 or 16 raw address bytes of an IP header."""
        size = len(dst)
        if size == 4:
            lpm = self._v4
        elif size == 16:
            lpm = self._v6
        else:
            raise ValueError(f"an address is 4 or 16 bytes, not {size}")
        entry = lpm.get(int.from_bytes(dst, "big"))
        if entry is None or type(entry) is Route:
            return entry
        if src is None or len(src) != size:
            return None
        return entry.get(int.from_bytes(src, "big"))  # type: ignore[union-attr]

    def lookup(self, dst: str | IPAddress, src: str | IPAddress | None = None) -> Route[T] | None:
        """The route for a destination (and, for policy-based sites, a source) address."""
        d = ipaddress.ip_address(dst)
        if src is None:
            return self.lookup_int(int(d), d.version)
        s = ipaddress.ip_address(src)
        if s.version != d.version:
            return None
        return self.lookup_int(int(d), d.version, int(s))

    def routes(self) -> list[Route[T]]:
        """Every route, IPv4 then IPv6, by prefix then source."""
        if self._routes is None:
            rows: list[Route[T]] = []
            for lpm in (self._v4, self._v6):
                for entry in lpm.values():
                    if isinstance(entry, Route):
                        rows.append(entry)
                    else:
                        rows.extend(entry.values())
            self._routes = tuple(sorted(rows, key=_row_order))  # the same for every reader
        return list(self._routes)

    def __len__(self) -> int:
        return len(self.routes())


def _entry(slot: _Slot[T]) -> _Entry[T]:
    if isinstance(slot, Route):
        return slot
    return _Lpm(slot.items(), next(iter(slot)).max_prefixlen)


def _row_order(route: Route[T]) -> tuple[int, int, int, int, int]:
    src = route.source
    return (
        route.prefix.version,
        int(route.prefix.network_address),
        route.prefix.prefixlen,
        int(src.network_address) if src else -1,
        src.prefixlen if src else -1,
    )


def _network(prefix: str | IPNetwork) -> IPNetwork:
    return ipaddress.ip_network(prefix)  # strict: host bits set raise ValueError


class RouteTable(Generic[T]):
    """The control plane's handle on the route table: edits publish new snapshots.

    Edits take a lock (control-plane writers may race one another); lookups never do.
    Inside ``with table.batch():`` edits are published once, at the end.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._slots: dict[IPNetwork, _Slot[T]] = {}
        self._by_site: dict[str, set[IPNetwork]] = {}  # each site's prefixes
        self._dirty: set[IPNetwork] = set()  # prefixes changed since the last publish
        self._batch_depth = 0
        self._snapshot: RouteSnapshot[T] = RouteSnapshot()

    @property
    def snapshot(self) -> RouteSnapshot[T]:
        """The table as last published; it never changes after this call returns it."""
        return self._snapshot

    # -- edits (control plane)

    def add(self, prefix: str | IPNetwork, site: str, target: T | None = None) -> Route[T]:
        """Route ``prefix`` to a route-based site; re-adding for the same site retargets it.

        RouteConflict if another site has the prefix, or the site has it as policy-based.
        """
        net = _network(prefix)
        with self._lock:
            slot = self._slots.get(net)
            if slot is not None:
                self._check_owner(net, slot, site, policy=False)
            route = Route(net, site, target)
            self._put(net, route, site)
            self._publish()
        return route

    def add_pair(
        self,
        site: str,
        local: str | IPNetwork,
        remote: str | IPNetwork,
        target: T | None = None,
    ) -> Route[T]:
        """Route (source in ``local``, destination in ``remote``) to a policy-based site.

        Re-adding the same pair retargets it. RouteConflict if another site has ``remote``,
        or the site has it as a route-based prefix.
        """
        src, dst = _network(local), _network(remote)
        if src.version != dst.version:
            raise ValueError(f"pair {src} -> {dst} mixes IPv4 and IPv6")
        with self._lock:
            slot = self._slots.get(dst)
            if slot is not None:
                self._check_owner(dst, slot, site, policy=True)
            pairs = dict(slot) if isinstance(slot, dict) else {}
            route = Route(dst, site, target, src)
            pairs[src] = route
            self._put(dst, pairs, site)
            self._publish()
        return route

    def set_target(self, site: str, target: T | None) -> int:
        """Point every route of ``site`` at ``target`` (None: down); returns how many.

        Meant for route-based sites, whose routes share one Child SA; a policy-based
        site's pairs are retargeted one by one with add_pair().
        """
        return self._edit_site(site, lambda r: Route(r.prefix, r.site, target, r.source))

    def remove_site(self, site: str) -> int:
        """Remove every route (and pair) of ``site``; returns how many."""
        return self._edit_site(site, lambda r: None)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Publish the edits made inside the block as one snapshot (e.g. on reload)."""
        with self._lock:
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
                self._publish()

    # -- reads (any thread): the current snapshot answers

    def lookup(self, dst: str | IPAddress, src: str | IPAddress | None = None) -> Route[T] | None:
        return self._snapshot.lookup(dst, src)

    def lookup_packed(self, dst: bytes, src: bytes | None = None) -> Route[T] | None:
        return self._snapshot.lookup_packed(dst, src)

    def lookup_int(self, dst: int, version: int, src: int | None = None) -> Route[T] | None:
        return self._snapshot.lookup_int(dst, version, src)

    def routes(self) -> list[Route[T]]:
        return self._snapshot.routes()

    def __len__(self) -> int:
        return len(self._snapshot)

    # -- internals

    @staticmethod
    def _check_owner(net: IPNetwork, slot: _Slot[T], site: str, *, policy: bool) -> None:
        owner = slot.site if isinstance(slot, Route) else next(iter(slot.values())).site
        if owner != site:
            raise RouteConflict(f"{net} is already routed to site {owner!r}")
        if isinstance(slot, dict) != policy:
            kind = "policy-based" if isinstance(slot, dict) else "route-based"
            raise RouteConflict(f"{net} is already a {kind} route of site {site!r}")

    def _put(self, net: IPNetwork, slot: _Slot[T] | None, site: str) -> None:
        if slot is None:
            self._slots.pop(net, None)
            nets = self._by_site.get(site)
            if nets is not None:
                nets.discard(net)
                if not nets:
                    del self._by_site[site]
        else:
            self._slots[net] = slot
            self._by_site.setdefault(site, set()).add(net)
        self._dirty.add(net)

    def _edit_site(self, site: str, change: Callable[[Route[T]], Route[T] | None]) -> int:
        count = 0
        with self._lock:
            for net in list(self._by_site.get(site, ())):
                slot = self._slots[net]
                if isinstance(slot, Route):
                    count += 1
                    self._put(net, change(slot), site)
                    continue
                pairs = {}
                for src, route in slot.items():
                    count += 1
                    new = change(route)
                    if new is not None:
                        pairs[src] = new
                self._put(net, pairs or None, site)
            if count:
                self._publish()
        return count

    def _publish(self) -> None:
        # One reference assignment: readers see the old snapshot or the new, never a mix.
        # A few changed prefixes patch the last snapshot (one level's dict copied each);
        # many (a reload, a big batch) rebuild it.
        if self._batch_depth:
            return
        dirty, self._dirty = self._dirty, set()
        if len(dirty) > PATCH_LIMIT:
            self._snapshot = RouteSnapshot(self._slots)
            return
        snap = self._snapshot
        for net in dirty:
            snap = snap.replaced(net, self._slots.get(net))
        self._snapshot = snap
