"""gatewayd.kernel: tunnel routes, the fwmark bypass rules and source addresses.

Everything happens in a throw-away network namespace that this thread enters: an
"uplink" veth pair with the peer's public network, a TUN device, and the gateway's
own LAN addresses on lo. The host's routes and rules are never touched.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import subprocess
from collections.abc import Iterator

import pytest

from esp.tun import TunDevice
from gatewayd.kernel import KernelRoutes, mark_socket
from tests.lab.netns import entered
from tests.lab.requires import require_root

TUN = "gwk0"
TABLE = 2000
MARK = 0x7D0
PEER4, PEER6 = "198.51.100.2", "2001:db8:1::2"
SITE_NETS = ["198.51.0.0/16", "10.2.0.0/16", "2001:db8::/32"]  # cover the peer!
LAN_NETS = ["10.1.0.0/16", "fd01::/48"]


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def lab() -> Iterator[TunDevice]:
    """Namespace with uplink (veth), the gateway's LAN addresses on lo, and a TUN."""
    require_root()
    with entered("krn"):
        ip("link", "set", "lo", "up")
        ip("addr", "add", "10.1.0.1/32", "dev", "lo")
        ip("addr", "add", "fd01::1/128", "dev", "lo")
        ip("link", "add", "up0", "type", "veth", "peer", "name", "up1")
        ip("addr", "add", "198.51.100.1/24", "dev", "up0")
        ip("addr", "add", "2001:db8:1::1/64", "dev", "up0", "nodad")
        ip("link", "set", "up0", "up")
        ip("link", "set", "up1", "up")
        tun = TunDevice.open(TUN, 1400, [])
        try:
            yield tun
        finally:
            tun.close()


@pytest.fixture
def routes(lab: TunDevice) -> Iterator[KernelRoutes]:
    kr = KernelRoutes(TUN, table=TABLE, fwmark=MARK, source_networks=LAN_NETS)
    try:
        yield kr
    finally:
        kr.close()


def route_get(dst: str, mark: int | None = None) -> dict:
    args = ["-j", "route", "get", dst] + (["mark", str(mark)] if mark is not None else [])
    (route,) = json.loads(ip(*args))
    return route


def table(family: str) -> list[dict]:
    # `ip -6 route show table N` fails while the table holds no IPv6 route at all.
    cp = subprocess.run(
        ["ip", "-j", family, "route", "show", "table", str(TABLE)], capture_output=True, text=True
    )
    if cp.returncode != 0 and "does not exist" in cp.stderr:
        return []
    cp.check_returncode()
    return json.loads(cp.stdout) if cp.stdout.strip() else []


def table_routes() -> set[str]:
    return {r["dst"] for r in table("-4") + table("-6")}


def our_rules(family: str) -> list[dict]:
    rules = json.loads(ip("-j", family, "rule", "show"))
    return [r for r in rules if r.get("table") == str(TABLE) or r.get("priority") == 9999]


def connected_source(dst: str, mark: int | None) -> str:
    """The source address the kernel picks for a UDP socket to dst (a real route lookup)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if mark is not None:
            mark_socket(sock, mark)
        sock.connect((dst, 4500))
        return str(sock.getsockname()[0])


@pytest.mark.netns
def test_rules_installed_idempotently_and_removed(routes: KernelRoutes) -> None:
    assert not routes.rules_installed()
    routes.install_rules()
    routes.install_rules()
    for family in ("-4", "-6"):
        (rule,) = our_rules(family)
        assert rule["priority"] == 10000
        assert rule["fwmark"] == hex(MARK)
        assert "not" in rule  # inverted: everything *without* the mark
    assert "not from all fwmark 0x7d0 lookup 2000" in ip("-4", "rule", "show")
    assert "not from all fwmark 0x7d0 lookup 2000" in ip("-6", "rule", "show")
    assert routes.rules_installed()
    routes.remove_rules()
    routes.remove_rules()
    assert our_rules("-4") == [] and our_rules("-6") == []
    assert not routes.rules_installed()


@pytest.mark.netns
def test_add_remove_sync_flush(routes: KernelRoutes) -> None:
    routes.add("10.2.0.0/16")
    routes.add(ipaddress.ip_network("10.2.0.0/16"))  # replace: no error, no duplicate
    routes.add("2001:db8::/32")
    assert table_routes() == {"10.2.0.0/16", "2001:db8::/32"}
    assert routes.installed() == {
        ipaddress.ip_network("10.2.0.0/16"),
        ipaddress.ip_network("2001:db8::/32"),
    }
    routes.remove("10.2.0.0/16")
    routes.remove("10.2.0.0/16")  # already gone: fine
    assert table_routes() == {"2001:db8::/32"}

    routes.sync(["10.3.0.0/16", "0.0.0.0/0", "fd02::/48"])
    assert table_routes() == {"10.3.0.0/16", "default", "fd02::/48"}
    routes.sync(["10.3.0.0/16"])
    assert table_routes() == {"10.3.0.0/16"}
    # Nothing leaked into the main table.
    assert "10.3.0.0/16" not in ip("route", "show")

    routes.flush()
    assert table_routes() == set()
    routes.flush()


@pytest.mark.netns
def test_routes_use_the_tun_and_carry_the_gateways_lan_address(routes: KernelRoutes) -> None:
    routes.sync(SITE_NETS)
    (v4,) = [r for r in table("-4") if r["dst"] == "10.2.0.0/16"]
    assert v4["dev"] == TUN and v4["prefsrc"] == "10.1.0.1" and v4["scope"] == "link"
    (v6,) = table("-6")
    assert v6["dev"] == TUN and v6["prefsrc"] == "fd01::1"
    assert routes.source_addresses() == {socket.AF_INET: "10.1.0.1", socket.AF_INET6: "fd01::1"}


def test_a_source_address_that_went_away_is_looked_up_again(routes: KernelRoutes) -> None:
    """add() reuses the device index and source addresses it read for a moment; a route
    that fails with them (the address is gone) is retried with fresh ones."""
    routes.add("10.2.0.0/16")
    ip("addr", "del", "10.1.0.1/32", "dev", "lo")
    ip("addr", "add", "10.1.0.7/32", "dev", "lo")
    routes.add("10.3.0.0/16")  # within the cache's lifetime: 10.1.0.1 is cached, and gone
    (v4,) = [r for r in table("-4") if r["dst"] == "10.3.0.0/16"]
    assert v4["prefsrc"] == "10.1.0.7"


@pytest.mark.netns
def test_marked_traffic_bypasses_the_tunnel_table(routes: KernelRoutes) -> None:
    routes.sync(SITE_NETS)
    routes.install_rules()

    # The site's networks cover the peer's public address: ordinary traffic goes
    # into the tunnel, the gateway's own (marked) IKE/ESP traffic does not.
    assert route_get(PEER4)["dev"] == TUN
    assert route_get(PEER4, MARK)["dev"] == "up0"
    assert route_get(PEER6)["dev"] == TUN
    assert route_get(PEER6, MARK)["dev"] == "up0"
    assert route_get("10.2.3.4")["dev"] == TUN

    # The same with real sockets: SO_MARK set by mark_socket picks the uplink.
    assert connected_source(PEER4, MARK) == "198.51.100.1"
    assert connected_source(PEER4, None) == "10.1.0.1"
    assert connected_source(PEER6, MARK) == "2001:db8:1::1"
    assert connected_source(PEER6, None) == "fd01::1"

    # Without the rules, the tunnel table is not consulted at all.
    routes.remove_rules()
    assert route_get(PEER4)["dev"] == "up0"
    unrouted = subprocess.run(["ip", "route", "get", "10.2.3.4"], capture_output=True, text=True)
    assert unrouted.returncode != 0 and "unreachable" in unrouted.stderr


@pytest.mark.netns
def test_suppress_main_default_keeps_specific_main_routes_for_full_tunnel(
    lab: TunDevice,
) -> None:
    with KernelRoutes(TUN, table=TABLE, fwmark=MARK, suppress_main_default=True) as kr:
        kr.sync(["0.0.0.0/0", "::/0"])
        kr.install_rules()
        assert "lookup main suppress_prefixlength 0" in ip("-4", "rule", "show")
        assert route_get("203.0.113.9")["dev"] == TUN  # default: through the tunnel
        assert route_get("198.51.100.7")["dev"] == "up0"  # connected uplink stays
        kr.remove_rules()
        assert "suppress_prefixlength" not in ip("-4", "rule", "show")
        assert "suppress_prefixlength" not in ip("-6", "rule", "show")
        kr.flush()


@pytest.mark.netns
def test_usable_from_asyncio_and_other_threads(routes: KernelRoutes) -> None:
    async def main() -> None:
        routes.add("10.4.0.0/16")  # directly on the loop thread
        await asyncio.to_thread(routes.add, "10.5.0.0/16")
        await asyncio.gather(*(asyncio.to_thread(routes.add, f"10.{n}.0.0/16") for n in (6, 7)))

    asyncio.run(main())
    assert table_routes() == {"10.4.0.0/16", "10.5.0.0/16", "10.6.0.0/16", "10.7.0.0/16"}


@pytest.mark.netns
def test_tun_gone_means_no_routes_and_clear_error(lab: TunDevice) -> None:
    with KernelRoutes("gwnosuch", table=TABLE, fwmark=MARK) as kr:
        with pytest.raises(OSError, match="does not exist"):
            kr.add("10.2.0.0/16")
        assert kr.installed() == set()
        kr.flush()
        kr.remove("10.2.0.0/16")


def test_parameters_validated() -> None:
    with pytest.raises(ValueError):
        KernelRoutes(TUN, table=254)
    with pytest.raises(ValueError):
        KernelRoutes(TUN, fwmark=0)
    kr = KernelRoutes(TUN)
    kr.close()
    with pytest.raises(RuntimeError):
        kr.add("10.0.0.0/8")
    with pytest.raises(ValueError):
        KernelRoutes(TUN, source_networks=["10.1.0.1/16"])  # host bits set


def test_mark_socket_sets_so_mark() -> None:
    require_root()  # SO_MARK needs CAP_NET_ADMIN
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        mark_socket(sock, MARK)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK) == MARK
