"""The route table: longest-prefix match, policy-based pairs, conflicts, snapshots."""

from __future__ import annotations

import ipaddress
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esp.route_table import PATCH_LIMIT, Route, RouteConflict, RouteSnapshot, RouteTable


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def site_of(
    table: RouteTable[str] | RouteSnapshot[str], dst: str, src: str | None = None
) -> str | None:
    route = table.lookup(dst, src)
    return route.site if route else None


@pytest.fixture
def table() -> RouteTable[str]:
    t: RouteTable[str] = RouteTable()
    t.add("10.0.0.0/8", "wide", "sa-wide")
    t.add("10.1.0.0/16", "mid", "sa-mid")
    t.add("10.1.2.0/24", "narrow", "sa-narrow")
    t.add("10.1.2.3/32", "host", "sa-host")
    t.add("2001:db8::/32", "v6wide", "sa-v6wide")
    t.add("2001:db8:1::/48", "v6narrow", "sa-v6narrow")
    t.add("2001:db8:1::7/128", "v6host", "sa-v6host")
    return t


@pytest.mark.parametrize(
    "dst, site",
    [
        ("10.9.9.9", "wide"),
        ("10.1.9.9", "mid"),
        ("10.1.2.4", "narrow"),
        ("10.1.2.3", "host"),
        ("10.255.255.255", "wide"),
        ("11.0.0.0", None),
        ("9.255.255.255", None),
        ("2001:db8:ffff::1", "v6wide"),
        ("2001:db8:1::8", "v6narrow"),
        ("2001:db8:1::7", "v6host"),
        ("2001:db9::1", None),
        ("::a01:203", None),  # the IPv4 bits in an IPv6 address do not match IPv4 routes
    ],
)
def test_longest_prefix_wins(table: RouteTable[str], dst: str, site: str | None) -> None:
    assert site_of(table, dst) == site
    route = table.lookup(dst)
    assert table.lookup_packed(ip(dst)) == route
    assert (
        table.lookup_int(int(ipaddress.ip_address(dst)), ipaddress.ip_address(dst).version) == route
    )
    if route is not None:
        assert route.target == f"sa-{site}" and route.state == "up"
        assert ipaddress.ip_address(dst) in route.prefix


def test_default_routes_per_family(table: RouteTable[str]) -> None:
    table.add("0.0.0.0/0", "default4", "sa-d4")
    assert site_of(table, "8.8.8.8") == "default4"
    assert site_of(table, "10.1.2.3") == "host"
    assert site_of(table, "2001:4860::8888") is None
    table.add("::/0", "default6")
    route = table.lookup("2001:4860::8888")
    assert route is not None and route.site == "default6"
    assert route.target is None and route.state == "down"


def test_removal_falls_back_to_shorter_prefixes(table: RouteTable[str]) -> None:
    assert table.remove_site("narrow") == 1
    assert site_of(table, "10.1.2.4") == "mid"
    assert site_of(table, "10.1.2.3") == "host"
    assert table.remove_site("mid") == 1
    assert site_of(table, "10.1.2.4") == "wide"
    assert table.remove_site("mid") == 0
    assert table.remove_site("nobody") == 0
    assert len(table) == 5


def test_site_with_several_prefixes(table: RouteTable[str]) -> None:
    table.add("172.16.0.0/12", "multi", "sa-m")
    table.add("fd00::/8", "multi", "sa-m")
    assert site_of(table, "172.20.0.1") == site_of(table, "fd00::1") == "multi"
    assert table.remove_site("multi") == 2
    assert site_of(table, "172.20.0.1") is None and site_of(table, "fd00::1") is None


def test_same_prefix_on_two_sites_is_an_error(table: RouteTable[str]) -> None:
    before = table.snapshot
    with pytest.raises(RouteConflict, match="already routed to site 'mid'"):
        table.add("10.1.0.0/16", "other", "sa-x")
    with pytest.raises(RouteConflict):
        table.add(ipaddress.ip_network("2001:db8::/32"), "other")
    assert table.snapshot is before  # a refused edit publishes nothing
    assert site_of(table, "10.1.9.9") == "mid"


def test_readding_for_the_same_site_retargets(table: RouteTable[str]) -> None:
    route = table.add("10.1.0.0/16", "mid", "sa-mid-rekeyed")
    assert table.lookup("10.1.9.9") == route
    assert route.target == "sa-mid-rekeyed"
    assert len(table) == 7


def test_set_target_marks_a_site_up_or_down(table: RouteTable[str]) -> None:
    table.add("192.168.0.0/16", "mid", "sa-mid")
    assert table.set_target("mid", None) == 2
    assert [r.state for r in table.routes() if r.site == "mid"] == ["down", "down"]
    route = table.lookup("10.1.9.9")
    assert route is not None and route.state == "down"  # still matched: dropped, not leaked
    assert table.set_target("mid", "sa-mid-2") == 2
    assert {r.target for r in table.routes() if r.site == "mid"} == {"sa-mid-2"}
    assert table.set_target("nobody", "x") == 0


def test_bad_prefixes_are_refused() -> None:
    t: RouteTable[str] = RouteTable()
    with pytest.raises(ValueError):
        t.add("10.1.2.3/16", "s")  # host bits set
    with pytest.raises(ValueError):
        t.add("10.0.0.0/33", "s")
    with pytest.raises(ValueError):
        t.lookup_packed(b"\x0a\x00\x00")
    assert len(t) == 0


def test_routes_listing(table: RouteTable[str]) -> None:
    table.add_pair("pb", "10.200.0.0/16", "192.168.0.0/16", "sa-pb-2")
    table.add_pair("pb", "10.100.0.0/16", "192.168.0.0/16", "sa-pb-1")
    rows = [
        (str(r.prefix), r.site, r.target, str(r.source) if r.source else None, r.state)
        for r in table.routes()
    ]
    assert rows == [
        ("10.0.0.0/8", "wide", "sa-wide", None, "up"),
        ("10.1.0.0/16", "mid", "sa-mid", None, "up"),
        ("10.1.2.0/24", "narrow", "sa-narrow", None, "up"),
        ("10.1.2.3/32", "host", "sa-host", None, "up"),
        ("192.168.0.0/16", "pb", "sa-pb-1", "10.100.0.0/16", "up"),
        ("192.168.0.0/16", "pb", "sa-pb-2", "10.200.0.0/16", "up"),
        ("2001:db8::/32", "v6wide", "sa-v6wide", None, "up"),
        ("2001:db8:1::/48", "v6narrow", "sa-v6narrow", None, "up"),
        ("2001:db8:1::7/128", "v6host", "sa-v6host", None, "up"),
    ]


# -- policy-based sites: one Child SA per (local network, site network) pair


@pytest.fixture
def policy() -> RouteTable[str]:
    t: RouteTable[str] = RouteTable()
    t.add("0.0.0.0/0", "internet", "sa-inet")
    t.add_pair("dc", "10.1.0.0/16", "172.16.0.0/12", "sa-a")
    t.add_pair("dc", "10.1.5.0/24", "172.16.0.0/12", "sa-b")  # longer local prefix wins
    t.add_pair("dc", "10.1.0.0/16", "172.20.0.0/16", "sa-c")  # a longer remote prefix
    t.add_pair("dc", "fd00:1::/48", "fd00:2::/48", "sa-v6")
    return t


@pytest.mark.parametrize(
    "dst, src, target",
    [
        ("172.16.0.1", "10.1.0.1", "sa-a"),
        ("172.16.0.1", "10.1.5.9", "sa-b"),
        ("172.20.0.1", "10.1.5.9", "sa-c"),  # destination LPM first, then the pair table
        ("172.20.0.1", "10.1.0.1", "sa-c"),
        ("172.16.0.1", "10.2.0.1", None),  # no pair: drop, never fall back to another site
        ("172.16.0.1", None, None),
        ("8.8.8.8", "10.1.0.1", "sa-inet"),  # route-based: the source does not matter
        ("8.8.8.8", None, "sa-inet"),
        ("fd00:2::1", "fd00:1::1", "sa-v6"),
        ("fd00:2::1", "fd00:9::1", None),
        ("172.16.0.1", "fd00:1::1", None),  # mixed families never match
    ],
)
def test_pair_selection(
    policy: RouteTable[str], dst: str, src: str | None, target: str | None
) -> None:
    route = policy.lookup(dst, src)
    assert (route.target if route else None) == target
    packed = policy.lookup_packed(ip(dst), ip(src) if src else None)
    assert packed == route
    if route is not None and route.site == "dc":
        assert route.source is not None and ipaddress.ip_address(src or "") in route.source


def test_pairs_update_and_remove(policy: RouteTable[str]) -> None:
    policy.add_pair("dc", "10.1.5.0/24", "172.16.0.0/12", "sa-b2")  # rekey: same pair
    route = policy.lookup("172.16.0.1", "10.1.5.9")
    assert route is not None and route.target == "sa-b2"
    assert len(policy) == 5
    assert policy.set_target("dc", None) == 4
    route = policy.lookup("172.16.0.1", "10.1.5.9")
    assert route is not None and route.state == "down"
    assert policy.remove_site("dc") == 4
    assert site_of(policy, "172.16.0.1", "10.1.0.1") == "internet"
    assert len(policy) == 1


def test_pair_conflicts(policy: RouteTable[str]) -> None:
    with pytest.raises(RouteConflict, match="already routed to site 'dc'"):
        policy.add_pair("other", "10.1.0.0/16", "172.16.0.0/12", "x")
    with pytest.raises(RouteConflict, match="policy-based"):
        policy.add("172.16.0.0/12", "dc", "x")
    with pytest.raises(RouteConflict, match="route-based"):
        policy.add_pair("internet", "10.1.0.0/16", "0.0.0.0/0", "x")
    with pytest.raises(RouteConflict, match="already routed to site 'internet'"):
        policy.add_pair("dc", "10.1.0.0/16", "0.0.0.0/0", "x")
    with pytest.raises(ValueError, match="mixes IPv4 and IPv6"):
        policy.add_pair("dc", "fd00:1::/48", "172.30.0.0/16", "x")
    assert len(policy) == 5


# -- publishing: readers only ever see whole snapshots


def test_old_snapshot_is_unchanged_by_edits(table: RouteTable[str]) -> None:
    old = table.snapshot
    table.remove_site("narrow")
    table.add("10.1.2.0/24", "replacement", "sa-r")
    assert old.lookup("10.1.2.4") is not None and site_of(old, "10.1.2.4") == "narrow"
    assert site_of(table.snapshot, "10.1.2.4") == "replacement"
    assert table.snapshot is not old


def test_batch_publishes_once(table: RouteTable[str]) -> None:
    before = table.snapshot
    with table.batch():
        table.remove_site("wide")
        table.add("10.0.0.0/8", "wide2", "sa-w2")
        assert table.snapshot is before  # nothing visible mid-way
        assert site_of(table, "10.9.9.9") == "wide"
    assert table.snapshot is not before
    assert site_of(table, "10.9.9.9") == "wide2"


def test_concurrent_readers_never_see_a_half_update() -> None:
    # Two prefixes always move together between sites "a" and "b"; a reader checking
    # both on one snapshot must always see them on the same site.
    t: RouteTable[str] = RouteTable()
    t.add("10.0.0.0/8", "a", "sa")
    t.add("10.1.0.0/16", "a", "sa")
    stop = threading.Event()
    torn: list[tuple[str | None, str | None]] = []
    seen: set[str | None] = set()

    def reader() -> None:
        while not stop.is_set():
            snap = t.snapshot
            pair = (site_of(snap, "10.9.0.1"), site_of(snap, "10.1.0.1"))
            seen.add(pair[0])
            if pair[0] != pair[1] or pair[0] is None:
                torn.append(pair)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for th in threads:
        th.start()
    for i in range(2000):
        new = "b" if i % 2 == 0 else "a"
        with t.batch():
            t.remove_site("a" if new == "b" else "b")
            t.add("10.0.0.0/8", new, "sa")
            t.add("10.1.0.0/16", new, "sa")
    stop.set()
    for th in threads:
        th.join()
    assert torn == []
    assert seen <= {"a", "b"}


def test_route_is_immutable() -> None:
    route: Route[str] = Route(ipaddress.ip_network("10.0.0.0/8"), "s", "t")
    with pytest.raises(AttributeError):
        route.site = "other"  # type: ignore[misc]


# -- LPM against a brute-force reference

v4_prefixes = st.builds(
    lambda addr, plen: ipaddress.ip_network((addr, plen), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
v6_prefixes = st.builds(
    lambda addr, plen: ipaddress.ip_network((addr, plen), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)


def _reference(
    prefixes: list[ipaddress.IPv4Network | ipaddress.IPv6Network], addr: str
) -> str | None:
    a = ipaddress.ip_address(addr)
    matches = [p for p in prefixes if p.version == a.version and a in p]
    return str(max(matches, key=lambda p: p.prefixlen)) if matches else None


@settings(max_examples=200, deadline=None)
@given(
    prefixes=st.lists(st.one_of(v4_prefixes, v6_prefixes), max_size=40, unique=True),
    probes=st.lists(st.integers(0, 2**128 - 1), max_size=30),
    picks=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 2**128 - 1)), max_size=30),
)
def test_lpm_matches_brute_force(
    prefixes: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    probes: list[int],
    picks: list[tuple[int, int]],
) -> None:
    t: RouteTable[str] = RouteTable()
    for p in prefixes:
        t.add(p, str(p), f"sa-{p}")  # each prefix its own site: the site names the prefix
    addrs = [str(ipaddress.IPv4Address(n % 2**32)) for n in probes]
    addrs += [str(ipaddress.IPv6Address(n)) for n in probes]
    for index, noise in picks:  # addresses inside (or at the edge of) the prefixes
        if prefixes:
            p = prefixes[index % len(prefixes)]
            host_bits = p.max_prefixlen - p.prefixlen
            offset = noise % (1 << host_bits) if host_bits else 0
            addrs.append(str(ipaddress.ip_address(int(p.network_address) + offset)))
    for addr in addrs:
        route = t.lookup(addr)
        assert (route.site if route else None) == _reference(prefixes, addr)
        assert t.lookup_packed(ip(addr)) == route


# ------------------------------------------------------------------ patched snapshots

_PREFIXES = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "0.0.0.0/0",
             "fd00::/8", "fd00:1::/32", "fd00:1::5/128"]  # fmt: skip
_SOURCES = ["192.168.0.0/16", "192.168.1.0/24", "fc00::/7"]
_PROBES = ["10.9.9.9", "10.1.9.9", "10.1.2.9", "10.1.2.3", "8.8.8.8", "fd00:9::1",
           "fd00:1::9", "fd00:1::5", "2001:db8::1"]  # fmt: skip
_PROBE_SOURCES = [None, "192.168.1.7", "192.168.9.9", "fc00::1"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "pair", "target", "remove", "batch", "bulk"]),
            st.sampled_from(["s1", "s2", "s3"]),
            st.integers(0, len(_PREFIXES) - 1),
            st.integers(0, len(_SOURCES) - 1),
            st.integers(0, 3),
        ),
        max_size=40,
    )
)
def test_patched_snapshots_equal_rebuilt_ones(ops: list[tuple[str, str, int, int, int]]) -> None:
    """Every edit publishes by patching the last snapshot (or rebuilding past a limit):
    whatever the sequence, the table answers as one built from scratch."""
    table: RouteTable[int] = RouteTable()
    for op, site, p, src, target in ops:
        prefix = _PREFIXES[p]
        try:
            if op == "add":
                table.add(prefix, site, target)
            elif op == "pair":
                source = _SOURCES[src]
                if (":" in source) == (":" in prefix):
                    table.add_pair(site, source, prefix, target)
            elif op == "target":
                table.set_target(site, target or None)
            elif op == "remove":
                table.remove_site(site)
            elif op == "batch":
                with table.batch():
                    for q in _PREFIXES[:4]:
                        table.add(q, site, target)
            else:  # more prefixes than a publish patches in: a rebuild
                with table.batch():
                    for k in range(PATCH_LIMIT + 4):
                        table.add(f"172.16.{k}.{target}/32", site, target)
        except RouteConflict:
            pass
        fresh: RouteSnapshot[int] = RouteSnapshot(table._slots)
        snap = table.snapshot
        assert snap.routes() == fresh.routes()
        for dst in _PROBES:
            for s in _PROBE_SOURCES:
                if s is not None and (":" in s) != (":" in dst):
                    continue
                assert snap.lookup(dst, s) == fresh.lookup(dst, s), (dst, s)
