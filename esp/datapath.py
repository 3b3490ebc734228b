"""The packet loops: TUN -> route table -> ESP -> network, and network -> ESP -> TUN.

Two threads, one per direction, outside the asyncio loop: per packet there is one read,
one route lookup (a dict probe per prefix length), one SA lookup (a dict access), one
AEAD call and one write; no callbacks, no logging, no locks. The control plane changes
what they see only by publishing new SA tables (esp.sadb) and route snapshots
(esp.route_table), which the loops pick up at the next batch.

Inbound, UDP port 4500 carries both ESP and IKE (RFC 3948): this loop owns that socket's
reads and hands IKE messages (non-ESP marker stripped) to ``deliver_ike``, which must be
thread-safe and bounded. Plain ESP (IP protocol 50) arrives on a raw socket.

Each loop reads up to ``batch`` packets per wake-up; batching with GSO/GRO and TUN
offloads can replace the read/write calls here without changing the shape.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from esp.encap import NON_ESP_MARKER
from esp.route_table import RouteTable
from esp.sa import NH_IPV4, NH_IPV6, EspDrop, SequenceExhausted
from esp.sadb import SaDatabase
from esp.tun import TunDevice

Address = tuple[Any, ...]
DeliverIke = Callable[[bytes, Address, int], None]  # (message, peer address, local port)

MAX_DATAGRAM = 65535
_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class Transport:
    """Where an outbound SA's packets go: the socket and the sendto() address."""

    sock: socket.socket
    addr: Address  # (ip, port) for ESP in UDP; (ip, 0) on the raw ESP socket
    udp: bool

    @property
    def label(self) -> str:
        return "udp" if self.udp else "esp"


@dataclass
class PathCounters:
    """Drops and events that belong to no SA. Each field is written by one thread."""

    # outbound thread
    no_route: int = 0  # no route (or the site is down) for the destination
    no_sa: int = 0  # a route, but its Child SA is not installed (yet)
    malformed_out: int = 0  # not an IPv4/IPv6 packet from the TUN device
    seq_exhausted: int = 0
    send_errors: int = 0
    # inbound thread
    keepalives_in: int = 0
    ike_in: int = 0  # IKE messages on port 4500 handed to the control plane
    tun_errors: int = 0
    recv_errors: int = 0
    # either thread
    unexpected: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        out = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        out["unexpected"] = sum(self.unexpected.values())
        return out


class DataPath:
    """The two packet loops of one gateway. start() once; stop() before closing the TUN."""

    def __init__(
        self,
        tun: TunDevice,
        sadb: SaDatabase,
        routes: RouteTable[Any],
        *,
        udp_sock: socket.socket,
        raw_sock: socket.socket | None,
        deliver_ike: DeliverIke,
        batch: int = 64,
    ) -> None:
        self.tun = tun
        self.sadb = sadb
        self.routes = routes
        self.udp_sock = udp_sock
        self.raw_sock = raw_sock
        self.deliver_ike = deliver_ike
        self.batch = batch
        self.counters = PathCounters()
        self._udp_port = udp_sock.getsockname()[1]
        # IPv4 raw sockets deliver the IP header too; IPv6 ones do not.
        self._raw_has_ip_header = raw_sock is not None and raw_sock.family == socket.AF_INET
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._threads: list[threading.Thread] = []
        self._tun_fd = -1

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._tun_fd = self.tun.fileno()
        os.set_blocking(self._tun_fd, False)
        for sock in (self.udp_sock, self.raw_sock):
            if sock is not None:
                sock.setblocking(False)
        for name, target in (("esp-out", self._outbound_loop), ("esp-in", self._inbound_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        if self._stop_w < 0:
            return  # already stopped: the wake-up pipe is closed
        with contextlib.suppress(BlockingIOError):
            os.write(self._stop_w, b"x")
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_r = self._stop_w = -1

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _note_unexpected(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.counters.unexpected[name] = self.counters.unexpected.get(name, 0) + 1

    # -- outbound: TUN -> ESP ------------------------------------------------------

    def _outbound_loop(self) -> None:
        fd = self.tun.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        stop = self._stop_r
        read = os.read
        batch = self.batch
        send = self._send_one
        while True:
            events = poller.poll()
            if any(f == stop for f, _ in events):
                return
            lookup = self.routes.snapshot.lookup_packed
            for _ in range(batch):
                try:
                    packet = read(fd, MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError:
                    self.counters.tun_errors += 1
                    break
                try:
                    send(packet, lookup)
                except Exception as exc:  # a bug must cost one packet, never the loop
                    self._note_unexpected(exc)

    def _send_one(self, packet: bytes, lookup: Callable[..., Any]) -> None:
        c = self.counters
        version = packet[0] >> 4 if packet else 0
        if version == 4 and len(packet) >= 20:
            route = lookup(packet[16:20], packet[12:16])
            next_header = NH_IPV4
        elif version == 6 and len(packet) >= 40:
            route = lookup(packet[24:40], packet[8:24])
            next_header = NH_IPV6
        else:
            c.malformed_out += 1
            return
        if route is None or route.target is None:
            c.no_route += 1
            return
        sa = self.sadb.outbound(route.target)
        if sa is None:
            c.no_sa += 1
            return
        try:
            esp = sa.seal(packet, next_header)
        except EspDrop:
            return  # counted on the SA (selector)
        except SequenceExhausted:
            c.seq_exhausted += 1
            return
        t: Transport = sa.transport  # type: ignore[assignment]
        try:
            t.sock.sendto(esp, t.addr)
        except OSError:
            c.send_errors += 1

    # -- inbound: network -> ESP -> TUN --------------------------------------------

    def _inbound_loop(self) -> None:
        poller = select.poll()
        udp_fd = self.udp_sock.fileno()
        poller.register(udp_fd, select.POLLIN)
        if self.raw_sock is not None:
            poller.register(self.raw_sock.fileno(), select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        stop = self._stop_r
        while True:
            for fd, _ in poller.poll():
                if fd == stop:
                    return
                try:
                    if fd == udp_fd:
                        self._drain_udp()
                    else:
                        self._drain_raw()
                except Exception as exc:
                    self._note_unexpected(exc)

    def _drain_udp(self) -> None:
        recv = self.udp_sock.recvfrom
        c = self.counters
        for _ in range(self.batch):
            try:
                data, addr = recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                c.recv_errors += 1  # e.g. ICMP port unreachable reported on the socket
                return
            n = len(data)
            if n == 1 and data[0] == 0xFF:
                c.keepalives_in += 1  # RFC 3948 §2.3: ignored
            elif n >= 4 and data[:4] == NON_ESP_MARKER:
                c.ike_in += 1
                self.deliver_ike(data[4:], addr, self._udp_port)
            else:
                self._open_and_deliver(data)

    def _drain_raw(self) -> None:
        assert self.raw_sock is not None
        recv = self.raw_sock.recvfrom
        strip = self._raw_has_ip_header
        for _ in range(self.batch):
            try:
                data, _addr = recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                self.counters.recv_errors += 1
                return
            if strip:
                if not data:
                    self.sadb.malformed += 1
                    continue
                data = data[(data[0] & 0x0F) * 4 :]
            self._open_and_deliver(data)

    def _open_and_deliver(self, packet: bytes) -> None:
        try:
            _sa, _next_header, inner = self.sadb.open(packet)
        except EspDrop:
            return  # counted by the SA table or the SA
        try:
            os.write(self._tun_fd, inner)
        except OSError:
            self.counters.tun_errors += 1
