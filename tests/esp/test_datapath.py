"""esp.datapath: the two packet loops, end to end through a real TUN device and sockets.

Everything lives in one private network namespace per module (the test thread enters it;
the host's links are never touched):

    kernel --10.0.0.0/8, fd00::/8--> TUN dp0 --> DataPath --> ESP --> peer 127.0.0.2
    kernel <-------(inner packet)--- TUN dp0 <-- DataPath <-- ESP <-- peer 127.0.0.2

scapy's independent ESP implementation opens what DataPath sends and seals what it
receives, and an AF_PACKET socket on dp0 sees the exact bytes that cross the TUN device.
"""

from __future__ import annotations

import ipaddress
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

scapy_ipsec = pytest.importorskip("scapy.layers.ipsec")

from scapy.compat import raw  # noqa: E402
from scapy.layers.inet import IP, UDP, IPOption_NOP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from esp.datapath import DataPath, Transport  # noqa: E402
from esp.route_table import RouteTable  # noqa: E402
from esp.sa import MAX_SEQ_32, DropReason, EspParams, InboundSa, OutboundSa  # noqa: E402
from esp.sadb import SaDatabase  # noqa: E402
from esp.selectors import Selector, SelectorSet  # noqa: E402
from esp.tun import TunDevice, TunOptions  # noqa: E402
from tests.esp.packets import make_params  # noqa: E402
from tests.lab.netns import entered  # noqa: E402
from tests.lab.requires import require_root  # noqa: E402

pytestmark = pytest.mark.netns

ESP = scapy_ipsec.ESP
SecurityAssociation = scapy_ipsec.SecurityAssociation

TUN = "dp0"
LOCAL = "127.0.0.1"  # the gateway's public address: DataPath's sockets
PEER = "127.0.0.2"  # the peer gateway
TUN_V4, TUN_V6 = "10.1.0.1", "fd01::1"  # this gateway's network side (on the TUN)
SITE_V4, SITE_V6 = "10.2.0.7", "fd02::7"  # hosts behind the peer
KEY = ("site", "net")  # route target = the SA table's outbound key
SPI_OUT, SPI_IN = 0x1001, 0x2002
ETH_P_ALL = 0x0003
PACKET_HOST, PACKET_OUTGOING = 0, 4  # AF_PACKET pkttype: into the kernel / out of it
WAIT = 3.0

SCAPY_ALGOS = {  # suite of tests.esp.packets -> scapy's (crypt_algo, auth_algo)
    "aes256gcm16": ("AES-GCM", "NULL"),
    "chacha20poly1305": ("CHACHA20-POLY1305", "NULL"),
    "aes128-sha256": ("AES-CBC", "SHA2-256-128"),
}


# ------------------------------------------------------------------ namespace and TUN


def _sh(*argv: str, stdin: bytes | None = None) -> None:
    subprocess.run(argv, check=True, capture_output=True, input=stdin)


@pytest.fixture(scope="module", params=[True, False], ids=["offload", "plain"])
def offload(request: pytest.FixtureRequest) -> bool:
    """Every DataPath test runs with the offloads allowed (UDP GSO/GRO, and a vnet_hdr TUN
    device: TSO segmentation and coalescing) and with all of them forced off."""
    return bool(request.param)


@pytest.fixture(scope="module")
def tun(offload: bool) -> Iterator[TunDevice]:
    """TUN dp0 in a private namespace that this thread has entered, routes into it."""
    require_root()
    with entered("dp"):
        # IPv6 only on dp0, without a link-local address or router solicitations:
        # the kernel must put nothing into the TUN by itself, so that every counter
        # below counts our packets alone.
        _sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        options = TunOptions(vnet_hdr=offload)
        dev = TunDevice.open(TUN, 1400, [ipaddress.ip_interface(f"{TUN_V4}/32")], options)
        try:
            _sh("ip", "link", "set", "dev", TUN, "addrgenmode", "none")
            _sh("sysctl", "-qw", f"net.ipv6.conf.{TUN}.router_solicitations=0")
            _sh("sysctl", "-qw", f"net.ipv6.conf.{TUN}.disable_ipv6=0")
            _sh("ip", "-6", "addr", "add", f"{TUN_V6}/128", "dev", TUN, "nodad")
            _sh("ip", "route", "add", "10.0.0.0/8", "dev", TUN)
            _sh("ip", "-6", "route", "add", "fd00::/8", "dev", TUN)
            if shutil.which("nft"):  # belt and braces against IPv6 housekeeping
                rules = (
                    "table inet quiet {\n chain out {\n"
                    "  type filter hook output priority 0;\n"
                    f'  oifname "{TUN}" icmpv6 type {{ nd-router-solicit,'
                    " nd-neighbor-solicit, mld-listener-report, mld2-listener-report }"
                    " drop\n }\n}\n"
                )
                _sh("nft", "-f", "-", stdin=rules.encode())
            yield dev
        finally:
            dev.close()


# ------------------------------------------------------------------ helpers


def wait_for(pred: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def udp_socket(addr: str, port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(WAIT)
    return s


def esp_socket(addr: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
    s.bind((addr, 0))
    s.settimeout(WAIT)
    return s


def scapy_sa(suite: str, params: EspParams, src: str = PEER, dst: str = LOCAL) -> Any:
    crypt, auth = SCAPY_ALGOS[suite]
    return SecurityAssociation(
        ESP,
        spi=params.spi,
        crypt_algo=crypt,
        crypt_key=params.encr_key,  # AEAD: key | salt, as scapy splits it
        auth_algo=auth,
        auth_key=params.integ_key or None,
        tunnel_header=IP(src=src, dst=dst),
    )


def scapy_open(sa: Any, esp_bytes: bytes) -> bytes:
    """The inner packet of an ESP packet (SPI through ICV), opened by scapy."""
    wire = IP(raw(IP(src=LOCAL, dst=PEER, proto=50) / Raw(esp_bytes)))
    return bytes(raw(sa.decrypt(wire)))


def inner_v4(dport: int, payload: bytes, src: str = SITE_V4, dst: str = TUN_V4) -> bytes:
    return bytes(raw(IP(src=src, dst=dst, id=0x4242) / UDP(sport=4321, dport=dport) / payload))


@dataclass
class Rig:
    dp: DataPath
    sadb: SaDatabase
    routes: RouteTable[Any]
    udp: socket.socket  # DataPath's ESP-in-UDP + IKE socket (port 4500's job)
    esp: socket.socket  # DataPath's plain ESP socket
    peer_udp: socket.socket
    peer_esp: socket.socket
    hdrincl: socket.socket  # sends whole IP packets as built (IP_HDRINCL)
    capture: socket.socket  # AF_PACKET on dp0
    ike: queue.Queue[tuple[bytes, Any, int]]

    @property
    def port(self) -> int:
        return int(self.udp.getsockname()[1])

    def udp_transport(self) -> Transport:
        return Transport(self.udp, (PEER, self.peer_udp.getsockname()[1]), udp=True)

    def esp_transport(self) -> Transport:
        return Transport(self.esp, (PEER, 0), udp=False)

    def tun_packet(self, pkttype: int, match: Callable[[bytes], bool]) -> bytes:
        """The next packet crossing dp0 in one direction that satisfies ``match``."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                data, addr = self.capture.recvfrom(65535)
            except TimeoutError:
                continue
            if addr[2] == pkttype and match(data):
                return data
        raise AssertionError("no such packet crossed the TUN device")

    def send_udp_esp(self, esp_bytes: bytes) -> None:
        self.peer_udp.sendto(esp_bytes, (LOCAL, self.port))

    def send_raw_esp(self, esp_bytes: bytes, options: int = 0) -> None:
        header = IP(src=PEER, dst=LOCAL, proto=50, options=[IPOption_NOP()] * options)
        self.hdrincl.sendto(raw(header / Raw(esp_bytes)), (LOCAL, 0))

    def kernel_send(self, dst: str, payload: bytes, sport: int = 0) -> bytes:
        """A UDP datagram the kernel routes into dp0; returns the packet DataPath read,
        checksum complete (with TUN offloads the capture shows the partial checksum the
        kernel leaves for the reader to finish, esp.tso.complete_csum)."""
        s = udp_socket("::" if ":" in dst else "0.0.0.0", sport)
        try:
            s.sendto(payload, (dst, 9999))
        finally:
            s.close()
        return _udp_checksum_completed(self.tun_packet(PACKET_OUTGOING, lambda p: payload in p))

    def install_outbound(self, sa: OutboundSa, key: Any = KEY) -> None:
        self.sadb.install_outbound(key, sa)


def _udp_checksum_completed(packet: bytes) -> bytes:
    ip = IP(packet) if packet[0] >> 4 == 4 else IPv6(packet)
    del ip[UDP].chksum
    return bytes(raw(ip))


@pytest.fixture
def rig(tun: TunDevice, offload: bool) -> Iterator[Rig]:
    sadb = SaDatabase()
    routes: RouteTable[Any] = RouteTable()
    socks = [udp_socket(LOCAL), esp_socket(LOCAL), udp_socket(PEER), esp_socket(PEER)]
    hdrincl = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    capture.bind((TUN, ETH_P_ALL))
    capture.settimeout(0.2)
    ike: queue.Queue[tuple[bytes, Any, int]] = queue.Queue()
    dp = DataPath(
        tun,
        sadb,
        routes,
        udp_sock=socks[0],
        raw_sock=socks[1],
        deliver_ike=lambda data, addr, port: ike.put((data, addr, port)),
        gso=offload,
        gro=offload,
    )
    r = Rig(dp, sadb, routes, socks[0], socks[1], socks[2], socks[3], hdrincl, capture, ike)
    dp.start()
    try:
        yield r
    finally:
        dp.stop()
        for s in (*socks, hdrincl, capture):
            s.close()


def routed(r: Rig, *prefixes: str, key: Any = KEY) -> None:
    with r.routes.batch():
        for p in prefixes:
            r.routes.add(p, "site", key)


def inbound_sa(r: Rig, suite: str) -> tuple[InboundSa, Any]:
    """Our inbound SA installed in the table, and scapy's sealing twin of it."""
    params = make_params(suite, spi=SPI_IN)
    sa = InboundSa(params)
    r.sadb.install_inbound(sa)
    return sa, scapy_sa(suite, params)


# ------------------------------------------------------------------ outbound


@pytest.mark.parametrize("suite", list(SCAPY_ALGOS))
def test_outbound_udp_encap_carries_the_exact_kernel_packet(rig: Rig, suite: str) -> None:
    params = make_params(suite, spi=SPI_OUT)
    sa = OutboundSa(params, transport=rig.udp_transport())
    rig.install_outbound(sa)
    routed(rig, "10.2.0.0/16")

    sent = rig.kernel_send(SITE_V4, b"outbound over udp " + suite.encode())

    esp_bytes, addr = rig.peer_udp.recvfrom(65535)
    assert addr == (LOCAL, rig.port)  # ESP-in-UDP leaves from the 4500 socket
    assert int.from_bytes(esp_bytes[:4], "big") == SPI_OUT
    assert int.from_bytes(esp_bytes[4:8], "big") == 1
    inner = scapy_open(scapy_sa(suite, params, LOCAL, PEER), esp_bytes)
    assert inner == sent
    assert IP(inner)[UDP].dport == 9999 and IP(inner).dst == SITE_V4
    assert (sa.packets, sa.bytes) == (1, len(sent))
    counters = rig.dp.counters.as_dict()
    assert counters["no_route"] == counters["no_sa"] == counters["send_errors"] == 0


def test_outbound_plain_esp_and_ipv6_inner(rig: Rig) -> None:
    params = make_params("aes256gcm16", spi=SPI_OUT)
    sa = OutboundSa(params, transport=rig.esp_transport())
    rig.install_outbound(sa)
    routed(rig, "10.2.0.0/16", "fd02::/64")
    theirs = scapy_sa("aes256gcm16", params, LOCAL, PEER)

    for dst in (SITE_V4, SITE_V6):
        sent = rig.kernel_send(dst, b"plain esp to " + dst.encode())
        packet = rig.peer_esp.recv(65535)  # IPv4 raw socket: IP header included
        outer = IP(packet)
        assert (outer.src, outer.dst, outer.proto) == (LOCAL, PEER, 50)
        inner = bytes(raw(theirs.decrypt(outer)))
        assert inner == sent
    assert IPv6(inner).dst == SITE_V6
    assert sa.packets == 2


def test_policy_pair_route_needs_the_source(rig: Rig) -> None:
    """A policy-based pair route matches on the source as well as the destination."""
    params = make_params("aes256gcm16", spi=SPI_OUT)
    sa = OutboundSa(params, transport=rig.udp_transport())
    rig.install_outbound(sa)
    rig.routes.add_pair("site", "10.1.0.0/24", "10.2.0.0/16", KEY)

    sent = rig.kernel_send(SITE_V4, b"pair match")  # source: the TUN's 10.1.0.1
    assert scapy_open(scapy_sa("aes256gcm16", params, LOCAL, PEER), rig.peer_udp.recv(65535)) == (
        sent
    )


def test_no_route_and_no_sa_are_counted_then_traffic_flows(rig: Rig) -> None:
    c = rig.dp.counters
    rig.routes.add("10.4.0.0/16", "site", None)  # the site is down
    rig.routes.add("10.5.0.0/16", "site", KEY)  # routed, but no Child SA yet

    rig.kernel_send("10.3.0.1", b"not in the route table")
    assert wait_for(lambda: c.no_route == 1)
    rig.kernel_send("10.4.0.1", b"route without target")
    assert wait_for(lambda: c.no_route == 2)
    rig.kernel_send("10.5.0.1", b"route without SA")
    assert wait_for(lambda: c.no_sa == 1)
    rig.peer_udp.settimeout(0.3)
    with pytest.raises(TimeoutError):
        rig.peer_udp.recv(65535)

    # Publishing an SA is all it takes: the loop sees the new table at the next packet.
    params = make_params("aes256gcm16", spi=SPI_OUT)
    rig.install_outbound(OutboundSa(params, transport=rig.udp_transport()))
    sent = rig.kernel_send("10.5.0.1", b"now with an SA")
    rig.peer_udp.settimeout(WAIT)
    esp_bytes = rig.peer_udp.recv(65535)
    assert scapy_open(scapy_sa("aes256gcm16", params, LOCAL, PEER), esp_bytes) == sent
    assert (c.no_route, c.no_sa, c.malformed_out, c.send_errors) == (2, 1, 0, 0)


def test_outbound_switch_to_a_new_sa_is_immediate(rig: Rig) -> None:
    """Make-before-break on the send side: one install_outbound moves the next packet."""
    old = OutboundSa(make_params("aes256gcm16", spi=SPI_OUT), transport=rig.udp_transport())
    new_params = make_params("chacha20poly1305", spi=0x3003)
    new = OutboundSa(new_params, transport=rig.udp_transport())
    rig.install_outbound(old)
    routed(rig, "10.2.0.0/16")
    rig.kernel_send(SITE_V4, b"on the old SA")
    assert int.from_bytes(rig.peer_udp.recv(65535)[:4], "big") == SPI_OUT

    assert rig.sadb.install_outbound(KEY, new) is old
    sent = rig.kernel_send(SITE_V4, b"on the new SA")
    esp_bytes = rig.peer_udp.recv(65535)
    assert int.from_bytes(esp_bytes[:4], "big") == 0x3003
    assert scapy_open(scapy_sa("chacha20poly1305", new_params, LOCAL, PEER), esp_bytes) == sent
    assert (old.packets, new.packets) == (1, 1)


def test_exhausted_sequence_selector_and_send_error_cost_one_packet(rig: Rig) -> None:
    c = rig.dp.counters
    exhausted = OutboundSa(
        make_params("aes256gcm16", spi=SPI_OUT), transport=rig.udp_transport(), last_seq=MAX_SEQ_32
    )
    only_tcp = SelectorSet.outbound(
        [Selector.from_network("0.0.0.0/0")], [Selector.from_ts("10.6.0.1", "10.6.0.1", 6)]
    )
    picky = OutboundSa(
        make_params("aes256gcm16", spi=0x4004), only_tcp, transport=rig.udp_transport()
    )
    unreachable = OutboundSa(
        make_params("aes256gcm16", spi=0x5005),
        transport=Transport(rig.udp, ("203.0.113.1", 4500), udp=True),  # no route there
    )
    for key, sa, net in (
        (("site", "a"), exhausted, "10.5.0.0/16"),
        (("site", "b"), picky, "10.6.0.0/16"),
        (("site", "c"), unreachable, "10.7.0.0/16"),
    ):
        rig.install_outbound(sa, key)
        rig.routes.add(net, "site", key)

    rig.kernel_send("10.5.0.1", b"seq space used up")
    assert wait_for(lambda: c.seq_exhausted == 1)
    assert exhausted.packets == 0 and exhausted.seq == MAX_SEQ_32  # never wraps
    rig.kernel_send("10.6.0.1", b"udp is outside the selectors")
    assert wait_for(lambda: picky.selector_drops == 1)
    rig.kernel_send("10.7.0.1", b"sendto fails")
    assert wait_for(lambda: c.send_errors == 1)

    # The loop is alive and well: a good SA still carries the next packet.
    params = make_params("aes256gcm16", spi=SPI_OUT + 1)
    rig.install_outbound(OutboundSa(params, transport=rig.udp_transport()))
    routed(rig, "10.2.0.0/16")
    sent = rig.kernel_send(SITE_V4, b"after the failures")
    assert scapy_open(scapy_sa("aes256gcm16", params, LOCAL, PEER), rig.peer_udp.recv(65535)) == (
        sent
    )
    assert not c.unexpected


# ------------------------------------------------------------------ inbound


@pytest.mark.parametrize("suite", list(SCAPY_ALGOS))
def test_inbound_udp_encap_reaches_a_socket_behind_the_tun(rig: Rig, suite: str) -> None:
    sa, theirs = inbound_sa(rig, suite)
    listener = udp_socket(TUN_V4, 7001)
    try:
        inner = inner_v4(7001, b"inbound over udp")
        rig.send_udp_esp(bytes(raw(theirs.encrypt(IP(inner))[ESP])))
        assert listener.recvfrom(65535) == (b"inbound over udp", (SITE_V4, 4321))
    finally:
        listener.close()
    assert rig.tun_packet(PACKET_HOST, lambda p: p[16:20] == socket.inet_aton(TUN_V4)) == inner
    assert (sa.packets, sa.bytes) == (1, len(inner))


def test_inbound_plain_esp_with_ip_options_and_ipv6_inner(rig: Rig) -> None:
    sa, theirs = inbound_sa(rig, "aes256gcm16")
    v4 = udp_socket(TUN_V4, 7002)
    v6 = udp_socket(TUN_V6, 7002)
    try:
        inner = inner_v4(7002, b"raw esp")
        rig.send_raw_esp(bytes(raw(theirs.encrypt(IP(inner))[ESP])))
        assert v4.recvfrom(65535) == (b"raw esp", (SITE_V4, 4321))
        # An outer header with options (IHL 6): DataPath must skip it by its length.
        inner = inner_v4(7002, b"raw esp, outer options")
        rig.send_raw_esp(bytes(raw(theirs.encrypt(IP(inner))[ESP])), options=4)
        assert v4.recvfrom(65535) == (b"raw esp, outer options", (SITE_V4, 4321))
        inner6 = IPv6(src=SITE_V6, dst=TUN_V6) / UDP(sport=4321, dport=7002) / b"v6 inside"
        rig.send_raw_esp(bytes(raw(theirs.encrypt(inner6)[ESP])))
        data, addr = v6.recvfrom(65535)
        assert (data, addr[:2]) == (b"v6 inside", (SITE_V6, 4321))
    finally:
        v4.close()
        v6.close()
    assert sa.packets == 3
    assert rig.sadb.malformed == rig.sadb.unknown_spi == 0


def test_ike_on_the_udp_port_reaches_deliver_ike_without_the_marker(rig: Rig) -> None:
    sender = udp_socket("127.0.0.3", 45000)
    try:
        message = bytes(range(28)) + b"IKE message"
        sender.sendto(b"\0\0\0\0" + message, (LOCAL, rig.port))
        assert rig.ike.get(timeout=WAIT) == (message, ("127.0.0.3", 45000), rig.port)
    finally:
        sender.close()
    assert rig.dp.counters.ike_in == 1
    assert rig.sadb.malformed == rig.sadb.unknown_spi == 0


def test_keepalives_are_counted_and_ignored(rig: Rig) -> None:
    sa, theirs = inbound_sa(rig, "aes256gcm16")
    for _ in range(3):
        rig.send_udp_esp(b"\xff")
    assert wait_for(lambda: rig.dp.counters.keepalives_in == 3)
    assert rig.ike.empty()
    assert rig.sadb.malformed == rig.sadb.unknown_spi == 0
    listener = udp_socket(TUN_V4, 7003)
    try:
        rig.send_udp_esp(bytes(raw(theirs.encrypt(IP(inner_v4(7003, b"after")))[ESP])))
        assert listener.recv(65535) == b"after"
    finally:
        listener.close()
    assert sa.packets == 1


def test_bad_packets_are_counted_by_reason_and_both_loops_survive(rig: Rig) -> None:
    sa, theirs = inbound_sa(rig, "aes128-sha256")
    good = bytes(raw(theirs.encrypt(IP(inner_v4(7004, b"good one")))[ESP]))
    tampered = bytearray(bytes(raw(theirs.encrypt(IP(inner_v4(7004, b"tampered")))[ESP])))
    tampered[-1] ^= 0x01
    unknown = (0x7777).to_bytes(4, "big") + good[4:]
    truncated = good[:24]  # right SPI, shorter than IV + one block + ICV

    rig.send_udp_esp(b"\x01\x02\x03")  # shorter than an ESP header
    rig.send_udp_esp(b"\x00")  # one byte, not a keepalive
    rig.send_raw_esp(b"")  # an IP packet with nothing after the header
    assert wait_for(lambda: rig.sadb.malformed == 3)
    rig.send_udp_esp(unknown)
    rig.send_raw_esp(unknown)
    assert wait_for(lambda: rig.sadb.unknown_spi == 2)
    rig.send_udp_esp(truncated)
    rig.send_udp_esp(bytes(tampered))
    rig.send_raw_esp(bytes(tampered))
    assert wait_for(lambda: sa.drops[DropReason.BAD_ICV] == 2)
    assert wait_for(lambda: sa.drops[DropReason.MALFORMED] == 1)

    listener = udp_socket(TUN_V4, 7004)
    try:
        rig.send_udp_esp(good)
        assert listener.recv(65535) == b"good one"
        rig.send_raw_esp(good)  # the same packet again, on the other socket
        assert wait_for(lambda: sa.drops[DropReason.REPLAY] == 1)
        listener.settimeout(0.3)
        with pytest.raises(TimeoutError):
            listener.recv(65535)
    finally:
        listener.close()
    counters = rig.sadb.counters()
    assert counters.drops[DropReason.BAD_ICV] == 2
    assert counters.drops[DropReason.UNKNOWN_SPI] == 2
    assert counters.drops[DropReason.MALFORMED] == 4  # 3 before any SA + 1 on the SA
    assert counters.in_packets == 1
    assert rig.dp.running and not rig.dp.counters.unexpected
    assert rig.ike.empty()
    # and the outbound loop too
    params = make_params("aes256gcm16", spi=SPI_OUT)
    rig.install_outbound(OutboundSa(params, transport=rig.udp_transport()))
    routed(rig, "10.2.0.0/16")
    sent = rig.kernel_send(SITE_V4, b"outbound still works")
    assert scapy_open(scapy_sa("aes256gcm16", params, LOCAL, PEER), rig.peer_udp.recv(65535)) == (
        sent
    )


def test_a_failing_deliver_ike_costs_one_message(tun: TunDevice, rig: Rig) -> None:
    """A bug in the control plane's hand-off must not kill the inbound loop."""
    rig.dp.stop()
    calls: list[bytes] = []

    def deliver(data: bytes, addr: Any, port: int) -> None:
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("boom")

    dp = DataPath(
        tun,
        rig.sadb,
        rig.routes,
        udp_sock=rig.udp,
        raw_sock=rig.esp,
        deliver_ike=deliver,
        gso=rig.dp.gso,
        gro=rig.dp.gro,
    )
    dp.start()
    try:
        _sa, theirs = inbound_sa(rig, "aes256gcm16")
        rig.send_udp_esp(b"\0\0\0\0first")
        assert wait_for(lambda: dp.counters.unexpected == {"RuntimeError": 1})
        rig.send_udp_esp(b"\0\0\0\0second")
        assert wait_for(lambda: calls == [b"first", b"second"])
        listener = udp_socket(TUN_V4, 7005)
        try:
            rig.send_udp_esp(bytes(raw(theirs.encrypt(IP(inner_v4(7005, b"alive")))[ESP])))
            assert listener.recv(65535) == b"alive"
        finally:
            listener.close()
        assert dp.running and dp.counters.ike_in == 2
    finally:
        dp.stop()


# ------------------------------------------------------------------ lifecycle


def test_stop_joins_both_threads_promptly(rig: Rig) -> None:
    threads = [t for t in threading.enumerate() if t.name in ("esp-out", "esp-in")]
    assert sorted(t.name for t in threads) == ["esp-in", "esp-out"]
    assert all(t.is_alive() for t in threads)
    time.sleep(0.1)  # both loops are now blocked in poll()
    started = time.monotonic()
    rig.dp.stop()
    assert time.monotonic() - started < 0.5
    assert not rig.dp.running
    assert not any(t.is_alive() for t in threads)
    rig.dp.stop()  # idempotent


def test_stop_under_load(rig: Rig) -> None:
    sa, theirs = inbound_sa(rig, "aes256gcm16")
    packets = [bytes(raw(theirs.encrypt(IP(inner_v4(7006, b"x" * 200)))[ESP])) for _ in range(300)]
    done = threading.Event()

    def flood() -> None:
        for p in packets:
            rig.send_udp_esp(p)
        done.set()

    flooder = threading.Thread(target=flood)
    flooder.start()
    assert wait_for(lambda: sa.packets > 0)
    started = time.monotonic()
    rig.dp.stop()
    assert time.monotonic() - started < 1.0
    assert not rig.dp.running
    flooder.join(5)
    assert done.is_set()
