"""Address pools: leases per identity, reuse on reconnect, bounds, expiry."""

from __future__ import annotations

import ipaddress

import pytest

from ike.p2s.pool import AddressPool

IP = ipaddress.ip_address


def test_hosts_skip_network_and_broadcast() -> None:
    pool = AddressPool(["10.0.0.0/30"])
    assert pool.acquire("a", 0.0) == IP("10.0.0.1")
    assert pool.acquire("b", 0.0) == IP("10.0.0.2")
    assert pool.acquire("c", 0.0) is None


def test_ipv6_skips_subnet_router_anycast() -> None:
    pool = AddressPool(["2001:db8::/126"])
    got = [pool.acquire(name, 0.0) for name in "abcd"]
    assert got == [IP("2001:db8::1"), IP("2001:db8::2"), IP("2001:db8::3"), None]


def test_same_identity_same_address_while_the_lease_lives() -> None:
    pool = AddressPool(["10.0.0.0/24"], lease_time=100.0)
    first = pool.acquire("alice", 0.0)
    assert pool.acquire("alice", 1.0) == first  # a second SA of the same client
    pool.release("alice", 10.0)
    assert pool.acquire("bob", 20.0) != first  # released addresses stay reserved
    assert pool.acquire("alice", 109.0) == first  # reconnect within the lease
    assert pool.active == 2


def test_expired_lease_is_reclaimed_only_when_needed() -> None:
    pool = AddressPool(["10.0.0.0/30"], lease_time=100.0)
    a = pool.acquire("alice", 0.0)
    pool.acquire("bob", 0.0)
    pool.release("alice", 10.0)
    assert pool.acquire("carol", 50.0) is None  # alice's lease still lives
    assert pool.acquire("carol", 110.0) == a
    assert pool.lease_of("alice") is None
    assert pool.acquire("alice", 120.0) is None  # she lost it; the pool is full again


def test_expired_lease_gives_a_fresh_address_to_the_same_identity() -> None:
    pool = AddressPool(["10.0.0.0/29"], lease_time=5.0)
    a = pool.acquire("alice", 0.0)
    pool.release("alice", 1.0)
    assert pool.acquire("alice", 100.0) != a  # the old one may be reused once all are used


def test_max_clients_bounds_active_leases() -> None:
    pool = AddressPool(["10.0.0.0/24"], max_clients=2)
    assert pool.acquire("a", 0.0) is not None
    assert pool.acquire("b", 0.0) is not None
    assert pool.acquire("c", 0.0) is None
    pool.release("a", 1.0)
    assert pool.acquire("c", 2.0) is not None
    assert pool.acquire("a", 3.0) is None  # its address is reserved but the pool is at max


def test_several_prefixes_are_used_in_order() -> None:
    pool = AddressPool(["10.0.0.0/31", "10.1.0.0/30"])
    got = [pool.acquire(str(i), 0.0) for i in range(5)]
    assert got == [IP("10.0.0.0"), IP("10.0.0.1"), IP("10.1.0.1"), IP("10.1.0.2"), None]


def test_release_unknown_identity_is_harmless() -> None:
    pool = AddressPool(["10.0.0.0/24"])
    pool.release("nobody", 0.0)
    assert pool.active == 0


def test_one_family_per_pool() -> None:
    with pytest.raises(ValueError):
        AddressPool(["10.0.0.0/24", "2001:db8::/64"])
    with pytest.raises(ValueError):
        AddressPool([])


def test_large_ipv6_pool_is_lazy() -> None:
    pool = AddressPool(["2001:db8:1::/64"], max_clients=1000)
    got = {pool.acquire(f"u{i}", 0.0) for i in range(1000)}
    assert len(got) == 1000 and None not in got
