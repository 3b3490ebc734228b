"""esp.tun: a real TUN device inside a throw-away network namespace.

The test process's main thread enters the namespace (setns is per thread), so the
device, ping and `ip` all live there; the host's links are never touched.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from esp.tun import (
    IFF_MULTI_QUEUE,
    IFF_NO_PI,
    IFF_TUN,
    IFF_VNET_HDR,
    TunClosed,
    TunDevice,
    TunError,
    TunOptions,
)
from tests.lab.netns import entered
from tests.lab.requires import require_root

ADDR4 = ipaddress.ip_interface("10.99.0.1/24")
ADDR6 = ipaddress.ip_interface("fd00:99::1/64")


@pytest.fixture
def netns() -> Iterator[str]:
    require_root()
    with entered("tun") as ns:
        yield ns.name


@pytest.fixture
def tun(netns: str) -> Iterator[TunDevice]:
    # Plain packets (no virtio header): what these tests read and write by hand.
    dev = TunDevice.open("gwtun0", 1400, [ADDR4, ADDR6], TunOptions(vnet_hdr=False))
    try:
        yield dev
    finally:
        dev.close()


def ip_json(*args: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def read_until(dev: TunDevice, match: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
    """Read packets until one satisfies `match` (the kernel also sends RS/MLD noise)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if dev.wait_readable(left):
            pkt = os.read(dev.fileno(), 65535)
            if match(pkt):
                return pkt
    raise AssertionError("expected packet never appeared on the TUN device")


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo_request(src: str, dst: str, ident: int, seq: int, payload: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        0x1234,
        0,
        64,
        1,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp


# --- without root ----------------------------------------------------------------


def test_flags_for_later_batching_options() -> None:
    assert TunOptions().ifr_flags() == IFF_TUN | IFF_NO_PI
    assert TunOptions(vnet_hdr=True, queues=4).ifr_flags() == (
        IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE
    )


@pytest.mark.parametrize(
    ("name", "mtu", "addresses", "message"),
    [
        ("a" * 16, 1400, [], "invalid interface name"),
        ("bad/name", 1400, [], "invalid interface name"),
        ("", 1400, [], "invalid interface name"),
        ("gw0", 67, [], "MTU 67 out of range"),
        ("gw0", 1200, [ADDR6], "below IPv6's minimum"),
    ],
)
def test_bad_arguments_rejected_before_touching_the_system(
    name: str, mtu: int, addresses: list, message: str
) -> None:
    with pytest.raises(TunError, match=message):
        TunDevice.open(name, mtu, addresses)


# --- in a network namespace ------------------------------------------------------


@pytest.mark.netns
def test_open_sets_mtu_addresses_and_link_up(tun: TunDevice) -> None:
    (link,) = ip_json("-d", "link", "show", "dev", "gwtun0")
    assert link["mtu"] == 1400
    assert "UP" in link["flags"]
    assert link["linkinfo"]["info_kind"] == "tun"
    assert link["ifindex"] == tun.index
    (info,) = ip_json("addr", "show", "dev", "gwtun0")
    addrs = {(a["local"], a["prefixlen"]) for a in info["addr_info"] if a["scope"] == "global"}
    assert addrs == {("10.99.0.1", 24), ("fd00:99::1", 64)}
    v6 = next(a for a in info["addr_info"] if a["local"] == "fd00:99::1")
    assert not v6.get("tentative")  # usable at once (no DAD)


@pytest.mark.netns
def test_ping_appears_on_the_tun(tun: TunDevice) -> None:
    ping = subprocess.Popen(
        ["ping", "-c", "5", "-i", "0.2", "-W", "1", "10.99.0.2"], stdout=subprocess.DEVNULL
    )
    try:
        dst = bytes([10, 99, 0, 2])
        pkt = read_until(tun, lambda p: p[0] >> 4 == 4 and p[9] == 1 and p[16:20] == dst)
    finally:
        ping.kill()
        ping.wait()
    assert pkt[12:16] == bytes([10, 99, 0, 1])  # source: the TUN's address
    ihl = (pkt[0] & 0xF) * 4
    assert pkt[ihl] == 8  # ICMP echo request


@pytest.mark.netns
def test_ping6_appears_on_the_tun(tun: TunDevice) -> None:
    dst = ipaddress.IPv6Address("fd00:99::2").packed
    ping = subprocess.Popen(
        ["ping", "-6", "-c", "5", "-i", "0.2", "-W", "1", "fd00:99::2"], stdout=subprocess.DEVNULL
    )
    try:
        pkt = read_until(tun, lambda p: p[0] >> 4 == 6 and p[6] == 58 and p[24:40] == dst)
    finally:
        ping.kill()
        ping.wait()
    assert pkt[40] == 128  # ICMPv6 echo request


@pytest.mark.netns
def test_written_packet_reaches_the_kernel(tun: TunDevice) -> None:
    payload = b"gatewayd-tun-test"
    request = icmp_echo_request("10.99.0.2", "10.99.0.1", 0x4242, 7, payload)
    assert tun.write(request) == len(request)
    reply = read_until(tun, lambda p: p[0] >> 4 == 4 and p[9] == 1 and p[20] == 0)
    assert reply[12:16] == bytes([10, 99, 0, 1]) and reply[16:20] == bytes([10, 99, 0, 2])
    assert struct.unpack("!HH", reply[24:28]) == (0x4242, 7)
    assert reply[28:] == payload


@pytest.mark.netns
def test_close_removes_the_device(netns: str) -> None:
    dev = TunDevice.open("gwtun1", 1500, [ADDR4])
    assert ip_json("link", "show", "dev", "gwtun1")
    dev.close()
    dev.close()  # idempotent
    assert "gwtun1" not in {link["ifname"] for link in ip_json("link", "show")}
    with pytest.raises(TunClosed):
        dev.read()
    with pytest.raises(TunClosed):
        dev.write(b"\x45")


@pytest.mark.netns
def test_shutdown_wakes_a_blocked_reader(tun: TunDevice) -> None:
    outcome: list[BaseException | bytes] = []

    def reader() -> None:
        try:
            while True:  # skip any kernel noise until shutdown
                tun.read()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()
    tun.shutdown()
    thread.join(2)
    assert not thread.is_alive()
    assert isinstance(outcome[0], TunClosed)
    with pytest.raises(TunClosed):
        tun.wait_readable(0)


@pytest.mark.netns
def test_second_open_of_a_busy_device_fails_clearly(tun: TunDevice) -> None:
    with pytest.raises(TunError, match="in use"):
        TunDevice.open("gwtun0", 1400, [])


@pytest.mark.netns
def test_existing_non_tun_link_fails_clearly(netns: str) -> None:
    subprocess.run(
        ["ip", "link", "add", "gwveth0", "type", "veth", "peer", "name", "gwveth1"], check=True
    )
    with pytest.raises(TunError, match="gwveth0"):
        TunDevice.open("gwveth0", 1400, [])


@pytest.mark.netns
def test_open_from_a_running_event_loop(netns: str) -> None:
    async def main() -> TunDevice:
        return TunDevice.open("gwtun2", 1420, [ADDR4])

    dev = asyncio.run(main())
    try:
        (link,) = ip_json("link", "show", "dev", "gwtun2")
        assert link["mtu"] == 1420
    finally:
        dev.close()


@pytest.mark.netns
def test_multi_queue_and_vnet_header(netns: str) -> None:
    dev = TunDevice.open("gwtun3", 1500, [], TunOptions(vnet_hdr=True, queues=2))
    try:
        assert len(set(dev.filenos)) == 2
        details = subprocess.run(
            ["ip", "-d", "link", "show", "dev", "gwtun3"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert "multi_queue numqueues 2" in details
        assert "vnet_hdr on" in details
    finally:
        dev.close()
    assert "gwtun3" not in {link["ifname"] for link in ip_json("link", "show")}


def test_default_options_ask_for_offloads_and_a_bounded_queue(netns: str) -> None:
    """From the environment: vnet_hdr unless the offloads are off; the queue in front of
    the reader is fq_codel or, where the kernel lacks it, a FIFO bounded in bytes."""
    assert TunOptions.from_env({}).vnet_hdr is True
    assert TunOptions.from_env({"GATEWAYD_TUN_OFFLOAD": "off"}).vnet_hdr is False
    assert TunOptions.from_env({"GATEWAYD_TUN_QUEUE_BYTES": "65536"}).queue_bytes == 65536
    assert TunOptions.from_env({"GATEWAYD_TUN_QUEUE_BYTES": "0"}).queue_bytes is None
    dev = TunDevice.open("gwtun4", 1400, [], TunOptions(queue_bytes=100_000))
    try:
        shown = subprocess.run(
            ["tc", "qdisc", "show", "dev", "gwtun4"], capture_output=True, text=True, check=True
        ).stdout
        assert "fq_codel" in shown or ("bfifo" in shown and "limit 100000b" in shown), shown
    finally:
        dev.close()
