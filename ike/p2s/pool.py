"""Virtual IP address pools for remote-access clients, keyed by client identity.

A lease lives while the client is connected and for ``lease_time`` seconds after the
daemon releases it, so a reconnect of the same identity gets the same address back.
Expired leases are reclaimed lazily when the pool runs out. Time is passed in; no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Lease:
    identity: str
    address: IPAddress
    active: bool = True
    released_at: float | None = None


class PoolRange:
    """The usable hosts of one prefix: no network, broadcast or (IPv6) subnet-router address."""

    def __init__(self, network: Network | str) -> None:
        net = ipaddress.ip_network(network) if isinstance(network, str) else network
        self.network = net
        base = int(net.network_address)
        if net.num_addresses <= 2:  # /31, /32 (and v6 equivalents): every address is a host
            self.first, self.last = base, base + net.num_addresses - 1
        elif net.version == 4:
            self.first, self.last = base + 1, base + net.num_addresses - 2
        else:
            self.first, self.last = base + 1, base + net.num_addresses - 1

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def address(self, value: int) -> IPAddress:
        if self.network.version == 4:
            return ipaddress.IPv4Address(value)
        return ipaddress.IPv6Address(value)


class AddressPool:
    """Hands out addresses of one family from one or more prefixes."""

    def __init__(
        self,
        prefixes: Iterable[Network | str],
        *,
        max_clients: int | None = None,
        lease_time: float = 3600.0,
    ) -> None:
        self.ranges = [PoolRange(p) for p in prefixes]
        if not self.ranges:
            raise ValueError("an address pool needs at least one prefix")
        versions = {r.network.version for r in self.ranges}
        if len(versions) != 1:
            raise ValueError("an address pool holds one address family; use one pool per family")
        self.version = versions.pop()
        self.max_clients = max_clients
        self.lease_time = lease_time
        self.leases: dict[str, Lease] = {}
        self.by_address: dict[IPAddress, Lease] = {}
        self._cursor = 0  # offset of the next never-used address, across all ranges

    @property
    def active(self) -> int:
        return sum(1 for lease in self.leases.values() if lease.active)

    def acquire(self, identity: str, now: float) -> IPAddress | None:
        """The identity's address (its old one while the lease lives), or None if full."""
        lease = self.leases.get(identity)
        if lease is not None and lease.active:
            return lease.address  # another SA of a connected client
        if self.max_clients is not None and self.active >= self.max_clients:
            return None
        if lease is not None and not self._expired(lease, now):
            lease.active, lease.released_at = True, None
            return lease.address
        if lease is not None:
            self._drop(lease)
        address = self._fresh() or self._reclaim(now)
        if address is None:
            return None
        lease = Lease(identity, address)
        self.leases[identity] = lease
        self.by_address[address] = lease
        return address

    def release(self, identity: str, now: float) -> None:
        """The client is gone (deleted, DPD): keep its address for it until the lease expires."""
        lease = self.leases.get(identity)
        if lease is not None and lease.active:
            lease.active, lease.released_at = False, now

    def lease_of(self, identity: str) -> IPAddress | None:
        lease = self.leases.get(identity)
        return lease.address if lease is not None else None

    def _expired(self, lease: Lease, now: float) -> bool:
        return lease.released_at is not None and now >= lease.released_at + self.lease_time

    def _drop(self, lease: Lease) -> None:
        del self.leases[lease.identity]
        del self.by_address[lease.address]

    def _fresh(self) -> IPAddress | None:
        # Walk never-used addresses first so released ones stay reserved as long as possible.
        while True:
            offset = self._cursor
            for r in self.ranges:
                if offset < r.size:
                    self._cursor += 1
                    address = r.address(r.first + offset)
                    if address not in self.by_address:
                        return address
                    break
                offset -= r.size
            else:
                return None

    def _reclaim(self, now: float) -> IPAddress | None:
        expired = [lease for lease in self.leases.values() if self._expired(lease, now)]
        if not expired:
            return None
        oldest = min(expired, key=lambda lease: lease.released_at or 0.0)
        self._drop(oldest)
        return oldest.address
