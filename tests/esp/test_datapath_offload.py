"""esp.datapath offloads: UDP GRO on the 4500 socket, UDP GSO for ESP in UDP, fallbacks.

Same private namespace and TUN device as tests/esp/test_datapath.py (its fixtures are
reused). On loopback the kernel hands a UDP_SEGMENT send to a UDP_GRO socket as one
coalesced buffer, so the GRO tests see the real thing; a receiver without UDP_GRO sees
the datagrams of a GSO send one by one.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("scapy.layers.ipsec")

from scapy.compat import raw
from scapy.layers.inet import IP

from esp.datapath import (
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    DataPath,
    Transport,
    offload_from_env,
)
from esp.sa import OutboundSa
from tests.esp import test_datapath as _base
from tests.esp.packets import make_params
from tests.esp.test_datapath import (
    ESP,
    LOCAL,
    PEER,
    SITE_V4,
    SPI_OUT,
    TUN_V4,
    WAIT,
    Rig,
    inbound_sa,
    inner_v4,
    routed,
    scapy_open,
    scapy_sa,
    udp_socket,
    wait_for,
)

pytestmark = pytest.mark.netns

# The fixtures of test_datapath.py, used here too; `offload` below pins rig to offload on.
tun = _base.tun
rig = _base.rig


def gso_send(sock: socket.socket, datagrams: list[bytes], addr: Any) -> None:
    """One sendmsg carrying all datagrams (all the first one's size, the last may be shorter)."""
    size = len(datagrams[0])
    sock.sendmsg(datagrams, [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, "little"))], 0, addr)


def sealed_of_size(theirs: Any, dport: int, size: int, tag: bytes) -> bytes:
    """An ESP packet (from scapy) of exactly ``size`` bytes carrying a UDP payload."""
    for pad in range(0, 64):
        esp = bytes(raw(theirs.encrypt(IP(inner_v4(dport, tag + b"." * pad)))[ESP]))
        if len(esp) == size:
            return esp
    raise AssertionError(f"no ESP packet of {size} bytes")


@pytest.fixture(scope="module")
def offload() -> bool:
    """This module tests the offloads themselves: its rigs always allow them."""
    return True


@pytest.fixture
def gro_rig(rig: Rig) -> Iterator[Rig]:
    if not rig.dp.gro_active:
        pytest.skip("the kernel has no UDP_GRO")
    yield rig


# ------------------------------------------------------------------ switches


def test_offload_switch_from_the_environment() -> None:
    assert offload_from_env({}) is True
    assert offload_from_env({"GATEWAYD_OFFLOAD": "auto"}) is True
    assert offload_from_env({"GATEWAYD_OFFLOAD": "off"}) is False
    assert offload_from_env({"GATEWAYD_OFFLOAD": " OFF "}) is False


def test_flags_follow_the_environment_unless_given(
    tun: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((LOCAL, 0))
        kwargs: dict[str, Any] = {"udp_sock": s, "raw_sock": None, "deliver_ike": print}
        monkeypatch.setenv("GATEWAYD_OFFLOAD", "off")
        dp = DataPath(tun, None, None, **kwargs)  # type: ignore[arg-type]
        assert (dp.gso, dp.gro) == (False, False)
        dp = DataPath(tun, None, None, gso=True, **kwargs)  # type: ignore[arg-type]
        assert (dp.gso, dp.gro) == (True, False)
        monkeypatch.setenv("GATEWAYD_OFFLOAD", "auto")
        dp = DataPath(tun, None, None, **kwargs)  # type: ignore[arg-type]
        assert (dp.gso, dp.gro) == (True, True)
    finally:
        s.close()


# ------------------------------------------------------------------ GRO on receive


def test_gro_batch_of_esp_ike_and_keepalive_is_split_like_single_datagrams(
    gro_rig: Rig,
) -> None:
    rig = gro_rig
    sa, theirs = inbound_sa(rig, "aes256gcm16")
    listener = udp_socket(TUN_V4, 7101)
    sender = udp_socket("127.0.0.3", 45001)
    try:
        size = len(bytes(raw(theirs.encrypt(IP(inner_v4(7101, b"esp-0" + b"." * 8)))[ESP])))
        size += 4  # leave room to hit it exactly
        first = sealed_of_size(theirs, 7101, size, b"esp-1")
        ike = b"\0\0\0\0" + bytes(range(size - 4))
        second = sealed_of_size(theirs, 7101, size, b"esp-2")
        bad = bytearray(sealed_of_size(theirs, 7101, size, b"esp-3"))
        bad[-1] ^= 1  # bad ICV: dropped and counted, the rest go on
        gso_send(sender, [first, ike, second, bytes(bad), b"\xff"], (LOCAL, rig.port))

        got = {listener.recv(65535).rstrip(b"."), listener.recv(65535).rstrip(b".")}
        assert got == {b"esp-1", b"esp-2"}
        assert rig.ike.get(timeout=WAIT) == (ike[4:], ("127.0.0.3", 45001), rig.port)
        assert wait_for(lambda: rig.dp.counters.keepalives_in == 1)
        assert wait_for(lambda: sa.drops["bad_icv"] == 1)  # type: ignore[index]
    finally:
        listener.close()
        sender.close()
    c = rig.dp.counters
    assert c.gro_batches == 1 and c.ike_in == 1 and not c.unexpected
    assert sa.packets == 2
    # The replay window saw each datagram: the same batch again is all replays.
    assert rig.sadb.malformed == rig.sadb.unknown_spi == 0


def test_gro_batch_replayed_is_dropped_per_datagram(gro_rig: Rig) -> None:
    rig = gro_rig
    sa, theirs = inbound_sa(rig, "aes128-sha256")
    size = len(bytes(raw(theirs.encrypt(IP(inner_v4(7102, b"r")))[ESP])))
    batch = [sealed_of_size(theirs, 7102, size, b"r%d" % i) for i in range(4)]
    sender = udp_socket("127.0.0.3", 0)
    listener = udp_socket(TUN_V4, 7102)
    try:
        gso_send(sender, batch, (LOCAL, rig.port))
        for _ in range(4):
            listener.recv(65535)
        gso_send(sender, batch, (LOCAL, rig.port))
        assert wait_for(lambda: sa.drops["replay"] == 4)  # type: ignore[index]
    finally:
        sender.close()
        listener.close()
    assert sa.packets == 4 and rig.dp.counters.gro_batches == 2


def test_gro_refused_by_the_kernel_falls_back_to_plain_receives(tun: Any, rig: Rig) -> None:
    class NoGro(socket.socket):
        def setsockopt(self, level: int, opt: int, *args: Any) -> None:  # type: ignore[override]
            if (level, opt) == (SOL_UDP, UDP_GRO):
                raise OSError(errno.ENOPROTOOPT, "Protocol not available")
            super().setsockopt(level, opt, *args)

    rig.dp.stop()
    sock = NoGro(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCAL, 0))
    dp = DataPath(
        tun,
        rig.sadb,
        rig.routes,
        udp_sock=sock,
        raw_sock=None,
        deliver_ike=lambda *a: None,
        gso=True,
        gro=True,
    )
    dp.start()
    listener = udp_socket(TUN_V4, 7103)
    try:
        assert not dp.gro_active
        _sa, theirs = inbound_sa(rig, "aes256gcm16")
        rig.peer_udp.sendto(
            bytes(raw(theirs.encrypt(IP(inner_v4(7103, b"plain recv")))[ESP])),
            sock.getsockname(),
        )
        assert listener.recv(65535) == b"plain recv"
    finally:
        dp.stop()
        sock.close()
        listener.close()


# ------------------------------------------------------------------ GSO on send


def _paused_datapath(tun: Any, rig: Rig, **flags: Any) -> DataPath:
    rig.dp.stop()
    return DataPath(
        tun,
        rig.sadb,
        rig.routes,
        udp_sock=rig.udp,
        raw_sock=rig.esp,
        deliver_ike=lambda *a: None,
        **flags,
    )


def _burst_into_tun(count: int, size: int, last: int | None = None) -> list[bytes]:
    """count UDP payloads to SITE_V4, queued in the TUN device before anyone reads."""
    s = udp_socket("0.0.0.0")
    payloads = [b"%04d" % i + b"g" * (size - 4) for i in range(count)]
    if last is not None:
        payloads.append(b"last" + b"s" * (last - 4))
    try:
        for p in payloads:
            s.sendto(p, (SITE_V4, 9999))
    finally:
        s.close()
    return payloads


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "plain"])
def test_gso_burst_reaches_a_plain_receiver_one_by_one_in_order(
    tun: Any, rig: Rig, gso: bool
) -> None:
    params = make_params("aes256gcm16", spi=SPI_OUT)
    sa = OutboundSa(params, transport=rig.udp_transport())
    rig.install_outbound(sa)
    routed(rig, "10.2.0.0/16")
    dp = _paused_datapath(tun, rig, gso=gso, gro=False)
    payloads = _burst_into_tun(20, 600, last=100)  # 21 packets, the last one shorter
    dp.start()
    theirs = scapy_sa("aes256gcm16", params, LOCAL, PEER)
    try:
        for i, payload in enumerate(payloads):
            esp = rig.peer_udp.recv(65535)
            assert int.from_bytes(esp[4:8], "big") == i + 1  # in order, one by one
            inner = IP(scapy_open(theirs, esp))
            assert bytes(inner["UDP"].payload) == payload
    finally:
        dp.stop()
    assert sa.packets == 21 and dp.counters.send_errors == 0
    if gso:
        assert dp.counters.gso_sends >= 1  # 21 packets, at most 64 per batch
    else:
        assert dp.counters.gso_sends == 0


class _GsoFails(socket.socket):
    """A UDP socket whose sendmsg fails with a chosen errno (an old kernel, a bad NIC)."""

    errno_: int = errno.EIO
    calls = 0

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:  # type: ignore[override]
        type(self).calls += 1
        raise OSError(self.errno_, "refused")


@pytest.mark.parametrize(
    ("err", "remembered_after"), [(errno.EIO, 1), (errno.EINVAL, 3), (errno.ENOBUFS, None)]
)
def test_gso_refusal_falls_back_to_sendto(rig: Rig, err: int, remembered_after: int | None) -> None:
    sock = type("Fails", (_GsoFails,), {"errno_": err, "calls": 0})(
        socket.AF_INET, socket.SOCK_DGRAM
    )
    sock.bind((LOCAL, 0))
    dp = rig.dp
    addr = rig.peer_udp.getsockname()
    try:
        for round_ in range(4):
            run = [b"x" * 100, b"y" * 100, b"z" * 40]
            dp._flush_run(sock, addr, 100, run)
            assert run == []
            if remembered_after is None:  # a real send error: counted, nothing resent
                assert dp.counters.send_errors == 3 * (round_ + 1)
                continue
            for expected in (b"x" * 100, b"y" * 100, b"z" * 40):
                assert rig.peer_udp.recv(65535) == expected
            assert type(sock).calls == min(round_ + 1, remembered_after)
            assert (sock in dp._no_gso) == (round_ + 1 >= remembered_after)
    finally:
        sock.close()
    if remembered_after is not None:
        assert dp.counters.send_errors == 0


def test_flush_of_a_real_gso_run_counts_one_send(rig: Rig) -> None:
    run = [b"a" * 300, b"b" * 300, b"c" * 300, b"d" * 7]
    rig.dp._flush_run(rig.udp, rig.peer_udp.getsockname(), 300, run)
    got = [rig.peer_udp.recv(65535) for _ in range(4)]
    assert got == [b"a" * 300, b"b" * 300, b"c" * 300, b"d" * 7]
    assert rig.dp.counters.gso_sends == 1


def test_plain_esp_is_never_gso(tun: Any, rig: Rig) -> None:
    params = make_params("aes256gcm16", spi=SPI_OUT)
    sa = OutboundSa(params, transport=Transport(rig.esp, (PEER, 0), udp=False))
    rig.install_outbound(sa)
    routed(rig, "10.2.0.0/16")
    dp = _paused_datapath(tun, rig, gso=True, gro=True)
    _burst_into_tun(10, 300)
    dp.start()
    try:
        for _ in range(10):
            rig.peer_esp.recv(65535)
    finally:
        dp.stop()
    assert sa.packets == 10 and dp.counters.gso_sends == 0


# ------------------------------------------------------------------ TUN vnet_hdr (experimental)


def _vnet_datapath(tun: Any) -> DataPath:
    """A DataPath that believes its TUN device carries virtio_net_hdr frames (not started)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOCAL, 0))
    dp = DataPath(tun, None, None, udp_sock=s, raw_sock=None, deliver_ike=print)  # type: ignore[arg-type]
    dp.vnet = True
    s.close()
    return dp


def test_vnet_frames_become_the_segments_the_kernel_would_send(tun: Any) -> None:
    from scapy.layers.inet import TCP

    from esp.tso import GSO_TCPV4, NEEDS_CSUM, VNET_HDR, Segments

    dp = _vnet_datapath(tun)
    payload = bytes(range(256)) * 12  # 3072 bytes: 3 segments of 1000 and one of 72
    ip = IP(src="10.1.0.5", dst=SITE_V4, id=9)
    big = bytes(raw(ip / TCP(sport=1, dport=2, seq=5, flags="PA", chksum=0) / payload))
    frame = VNET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, 40, 1000, 20, 16) + big
    cut = dp._from_vnet(frame)
    assert isinstance(cut, Segments)
    segments = cut.packets()
    assert [len(p) for p in segments] == [1040, 1040, 1040, 112]
    for i, seg in enumerate(segments):
        want = IP(src="10.1.0.5", dst=SITE_V4, id=9 + i) / TCP(
            sport=1, dport=2, seq=5 + 1000 * i, flags="PA" if i == 3 else "A"
        )
        assert seg == bytes(raw(want / payload[1000 * i : 1000 * (i + 1)]))
    assert dp.counters.tso_frames == 1

    # Not segmented, partial checksum: completed; no flags: passed as it is.
    small = IP(src="10.1.0.5", dst=SITE_V4) / TCP(sport=1, dport=2) / b"hello"
    want = bytes(raw(small))
    partial = bytearray(want)
    pseudo = int.from_bytes(partial[12:20], "big") + 6 + len(want) - 20
    partial[36:38] = (pseudo % 0xFFFF or 0xFFFF).to_bytes(2, "big")
    assert dp._from_vnet(VNET_HDR.pack(NEEDS_CSUM, 0, 0, 0, 20, 16) + partial) == want
    assert dp._from_vnet(bytes(10) + want) == want
    # Malformed: counted, nothing sent.
    assert dp._from_vnet(b"short") is None
    assert dp._from_vnet(VNET_HDR.pack(0, GSO_TCPV4, 0, 1000, 0, 0) + b"\x60" + bytes(50)) is None
    assert dp.counters.malformed_out == 2


def test_tun_options_from_env() -> None:
    from esp.tun import TunOptions

    assert TunOptions.from_env({}).vnet_hdr is True
    assert TunOptions.from_env({"GATEWAYD_OFFLOAD": "off"}).vnet_hdr is False
    assert TunOptions.from_env({"GATEWAYD_TUN_OFFLOAD": "on"}).vnet_hdr is True
    assert TunOptions.from_env({"GATEWAYD_TUN_OFFLOAD": "off"}).vnet_hdr is False


def test_tun_gets_a_long_queue_and_no_link_local(tun: Any) -> None:
    import ipaddress
    import subprocess

    from esp.tun import TunDevice, TunOptions

    dev = TunDevice.open("dpq9", 1400, [ipaddress.ip_interface("10.9.0.1/32")], TunOptions())
    try:
        shown = subprocess.run(
            ["ip", "-d", "link", "show", "dpq9"], capture_output=True, text=True, check=True
        ).stdout
        assert "qlen 2000" in shown and "addrgenmode none" in shown
        addrs = subprocess.run(
            ["ip", "-6", "addr", "show", "dev", "dpq9"], capture_output=True, text=True
        ).stdout
        assert "fe80" not in addrs
    finally:
        dev.close()


# ------------------------------------------------------------------ TSO super-packets out


@pytest.mark.parametrize(
    ("udp", "offloads"),
    [(True, True), (True, False), (False, True), (False, False)],
    ids=["udp-gso", "udp-plain", "esp-mmsg", "esp-plain"],
)
def test_super_packet_segments_leave_sealed_and_in_order(
    tun: Any, rig: Rig, udp: bool, offloads: bool
) -> None:
    """_send_segments: one route/SA lookup, sealed as pairs of buffers, sent by UDP GSO
    (in chunks under 64 KB), sendmmsg or one call each; the peer opens every segment."""
    import struct

    from scapy.layers.inet import TCP

    from esp.tso import GSO_TCPV4, segment_headers

    params = make_params("aes256gcm16", spi=SPI_OUT)
    transport = rig.udp_transport() if udp else rig.esp_transport()
    sa = OutboundSa(params, transport=transport)
    rig.install_outbound(sa)
    routed(rig, "10.2.0.0/16")
    dp = _paused_datapath(tun, rig, gso=offloads, gro=offloads)
    dp.start()  # sets up sendmmsg; the loops are not needed here
    dp.stop()
    payload = bytes(range(256)) * 253  # 64,768 bytes: 64 segments of 1000 and one of 768
    tcp = TCP(sport=1, dport=2, seq=5, flags="PA", chksum=0)
    big = bytes(raw(IP(src="10.1.0.5", dst=SITE_V4, id=9) / tcp / payload))
    segments = segment_headers(big, GSO_TCPV4, 1000)
    dp._send_segments(segments, rig.routes.snapshot.lookup_packed, rig.sadb.outbound_table.get)
    theirs = scapy_sa("aes256gcm16", params, LOCAL, PEER)
    want = segments.packets()
    assert len(want) == 65
    for i, segment in enumerate(want):
        if udp:
            esp = rig.peer_udp.recv(65535)
        else:
            packet = rig.peer_esp.recv(65535)
            esp = packet[(packet[0] & 0x0F) * 4 :]
        assert struct.unpack_from("!I", esp, 4)[0] == i + 1  # in order
        assert scapy_open(theirs, esp) == segment
    c = dp.counters
    assert sa.packets == 65 and c.send_errors == 0 and c.no_route == 0
    if udp and offloads:
        assert c.gso_sends >= 2  # 65 packets of 1,096 bytes do not fit one 64 KB send
    if not udp and offloads:
        assert c.mmsg_sends >= 1
    if not offloads:
        assert c.gso_sends == c.mmsg_sends == 0


def test_a_failed_seal_leaves_nothing_to_send_and_no_route_counts_segments(
    tun: Any, rig: Rig
) -> None:
    """A seal that raises half-way leaves the reused buffer list empty (nothing stale
    goes out with the next super-packet); drops before sealing count every segment."""
    from scapy.layers.inet import TCP

    from esp.tso import GSO_TCPV4, segment_headers

    params = make_params("aes256gcm16", spi=SPI_OUT)
    sa = OutboundSa(params, transport=rig.udp_transport())
    rig.install_outbound(sa)
    dp = _paused_datapath(tun, rig, gso=True, gro=True)
    big = bytes(raw(IP(src="10.1.0.5", dst=SITE_V4) / TCP(sport=1, dport=2) / (b"x" * 5000)))
    segments = segment_headers(big, GSO_TCPV4, 1000)
    lookup, sa_for = rig.routes.snapshot.lookup_packed, rig.sadb.outbound_table.get
    dp._send_segments(segments, lookup, sa_for)  # no route yet
    assert dp.counters.no_route == 5

    routed(rig, "10.2.0.0/16")
    lookup = rig.routes.snapshot.lookup_packed

    def failing(seq: int, segs: Any, next_header: int, into: list[bytes]) -> None:
        into.append(b"stale")
        raise MemoryError

    sa._seal_run = failing
    with pytest.raises(MemoryError):
        dp._send_segments(segments, lookup, sa_for)
    assert dp._pieces == []
    sa._seal_run = None
    dp._send_segments(segments, lookup, sa_for)
    theirs = scapy_sa("aes256gcm16", params, LOCAL, PEER)
    for i in range(5):
        esp = rig.peer_udp.recv(65535)
        assert int.from_bytes(esp[4:8], "big") == 6 + i  # 1..5 were taken by the failure
        assert scapy_open(theirs, esp) == segments.packets()[i]
