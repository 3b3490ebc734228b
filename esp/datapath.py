"""The packet loops: TUN -> route table -> ESP -> network, and network -> ESP -> TUN.

Two threads, one per direction, outside the asyncio loop: per packet there is one read,
one route lookup (a dict probe per prefix length), one SA lookup (a dict access), one
AEAD call and one write; no callbacks, no logging, no locks. A TSO super-packet costs
one read, one route and SA lookup and one selector check for all its segments, which are
sealed in one loop (OutboundSa.seal_segments) into pairs of buffers that the send calls
take as iovecs, so no sealed packet is ever joined in Python. A receive call's packets
are opened in one loop too (_open_batch: SA by SPI, then InboundSa.open_packets).

The control plane changes what the loops see only by publishing new SA tables (esp.sadb)
and route snapshots (esp.route_table), which the out-loop picks up at the next frame it
reads.

Inbound, UDP port 4500 carries both ESP and IKE (RFC 3948): this loop owns that socket's
reads and hands IKE messages (non-ESP marker stripped) to ``deliver_ike``, which must be
thread-safe and bounded. Plain ESP (IP protocol 50) arrives on a raw socket.

Each loop reads up to ``batch`` packets per wake-up. Offloads (``gso``/``gro``, on unless
``GATEWAYD_OFFLOAD=off``; each falls back by itself where the kernel lacks it):
 - UDP GRO on the 4500 socket: one recvmsg may return several datagrams of one sender
   glued together (all ``gso_size`` bytes, the last possibly shorter); each is split off
   and handled exactly as a datagram of its own (ESP, IKE with its marker, keepalive).
 - UDP GSO for ESP in UDP: consecutive sealed packets of one size to one transport leave
   in one sendmsg with a UDP_SEGMENT cmsg (the last may be shorter); the run is flushed at
   the end of every batch, so no packet waits for the next one.
 - Plain ESP (the raw socket, where GSO/GRO do not exist): sendmmsg for the packets of a
   batch to one peer, recvmmsg for up to ``batch`` packets per call (esp.mmsg); one
   sendto/recvfrom per packet where libc lacks them.
 - TUN offloads (a TUN device opened with vnet_hdr; off with GATEWAYD_OFFLOAD=off or
   GATEWAYD_TUN_OFFLOAD=off): the out-loop reads TCP super-packets of up to 64 KB and
   cuts them into segments itself (esp.tso), so one read serves ~45 packets; the in-loop
   writes what one wake-up decrypted through esp.coalesce, which glues consecutive
   segments of one TCP flow back into one super-packet (checksums verified first), so
   the kernel forwards and delivers one packet instead of ~45. Both work for either
   ESP encapsulation.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from esp.coalesce import TunWriter
from esp.encap import NON_ESP_MARKER
from esp.mmsg import MmsgReceiver, MmsgSender
from esp.route_table import RouteTable
from esp.sa import NH_IPV4, NH_IPV6, EspDrop, OutboundSa, SequenceExhausted
from esp.sadb import SaDatabase
from esp.tso import (
    GSO_NONE,
    NEEDS_CSUM,
    TUN_F_CSUM,
    TUN_F_TSO4,
    TUN_F_TSO6,
    VNET_HDR,
    VNET_HDR_LEN,
    SegmentError,
    Segments,
    complete_csum,
    segment_headers,
)
from esp.tun import TunDevice, switched_on

Address = tuple[Any, ...]
DeliverIke = Callable[[bytes, Address, int], None]  # (message, peer address, local port)

MAX_DATAGRAM = 65535
_U32 = struct.Struct("!I")

# <linux/udp.h>; Python's socket module lacks the names.
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS is 64 on older kernels (128 on newer)
GSO_MAX_BYTES = 65000  # UDP payload of one GSO send: the whole must fit an IP packet
_GSO_SIZE = struct.Struct("=H")  # UDP_SEGMENT cmsg: a native __u16
_GRO_SIZE = struct.Struct("=i")  # UDP_GRO cmsg: a native int
_GRO_CMSG_SPACE = socket.CMSG_SPACE(_GRO_SIZE.size)
_GSO_FATAL = frozenset((errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP))
_GSO_EINVAL_STRIKES = 3  # EINVAL can be one odd batch (e.g. past the MTU); 3 = no GSO

OFFLOAD_ENV = "GATEWAYD_OFFLOAD"


def offload_from_env(environ: Any = None) -> bool:
    """GATEWAYD_OFFLOAD: "auto" (default; use what the kernel offers) or "off"."""
    return switched_on(os.environ if environ is None else environ, OFFLOAD_ENV)


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
    gso_sends: int = 0  # sendmsg calls carrying several datagrams (UDP GSO)
    mmsg_sends: int = 0  # sendmmsg calls carrying several plain ESP packets
    tso_frames: int = 0  # TUN super-packets cut into segments (vnet_hdr, esp.tso)
    # inbound thread
    keepalives_in: int = 0
    ike_in: int = 0  # IKE messages on port 4500 handed to the control plane
    tun_errors: int = 0
    recv_errors: int = 0
    gro_batches: int = 0  # receives that returned several coalesced datagrams (UDP GRO)
    mmsg_batches: int = 0  # recvmmsg calls that returned several plain ESP packets
    tun_writes: int = 0  # packets written to a vnet_hdr TUN (a super-packet counts once)
    tun_super_packets: int = 0  # of those, coalesced TCP super-packets (esp.coalesce)
    tun_coalesced: int = 0  # inner packets that went out inside a super-packet
    tun_bad_csum: int = 0  # runs cut short by a segment whose TCP checksum was wrong
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
        gso: bool | None = None,
        gro: bool | None = None,
    ) -> None:
        """gso / gro: try UDP GSO on sends / UDP GRO on the UDP socket's receives (each
        falls back to plain calls where the kernel refuses); False forces the plain path;
        None (the default, what the daemon uses) follows GATEWAYD_OFFLOAD."""
        self.tun = tun
        self.sadb = sadb
        self.routes = routes
        self.udp_sock = udp_sock
        self.raw_sock = raw_sock
        self.deliver_ike = deliver_ike
        self.batch = batch
        offload = offload_from_env()
        self.gso = offload if gso is None else gso
        self.gro = offload if gro is None else gro
        self.gro_active = False  # set by start(): UDP_GRO accepted on udp_sock
        # A TUN device opened with vnet_hdr (the default, esp.tun.TunOptions.from_env):
        # every TUN packet carries a virtio_net_hdr; start() asks for TSO, the out-loop
        # segments super-packets (esp.tso) and the in-loop coalesces (esp.coalesce).
        options = getattr(tun, "options", None)
        self.vnet = bool(getattr(options, "vnet_hdr", False))
        self.tun_offload_flags = 0  # what TUNSETOFFLOAD accepted
        self._no_gso: set[socket.socket] = set()  # sockets where GSO failed for good
        self._gso_einval: dict[socket.socket, int] = {}
        self.counters = PathCounters()
        self._udp_port = udp_sock.getsockname()[1]
        # IPv4 raw sockets deliver the IP header too; IPv6 ones do not.
        self._raw_has_ip_header = raw_sock is not None and raw_sock.family == socket.AF_INET
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._threads: list[threading.Thread] = []
        self._tun_fd = -1
        self.tun_writer: TunWriter | None = None  # vnet_hdr only: coalesces TCP segments
        # Plain ESP batching (recvmmsg/sendmmsg), with the other offloads' switches.
        self._raw_out: MmsgSender | None = None
        self._raw_in: MmsgReceiver | None = None
        self._pieces: list[bytes] = []  # the out-loop's sealed super-packet (reused)
        # Where the in-loop hands decrypted packets (start() picks the TUN writer).
        self._deliver: Callable[[bytes], None] = self._write_tun

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._tun_fd = self.tun.fileno()
        os.set_blocking(self._tun_fd, False)
        self.tun_writer = TunWriter(self._tun_fd, self.counters) if self.vnet else None
        # Decrypted packets go to the coalescing writer (flushed per wake-up) or straight
        # to the TUN device.
        self._deliver = self.tun_writer.add if self.tun_writer else self._write_tun
        if self.raw_sock is not None:
            with contextlib.suppress(OSError):  # no sendmmsg/recvmmsg: one call a packet
                self._raw_out = MmsgSender(self.raw_sock, self.batch) if self.gso else None
            with contextlib.suppress(OSError):
                self._raw_in = MmsgReceiver(self.raw_sock, self.batch) if self.gro else None
        if self.vnet:
            for flags in (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, TUN_F_CSUM, 0):
                try:
                    self.tun.set_offload(flags)
                except OSError:
                    continue
                self.tun_offload_flags = flags
                break
        for sock in (self.udp_sock, self.raw_sock):
            if sock is not None:
                sock.setblocking(False)
        self.gro_active = False
        if self.gro:
            try:
                self.udp_sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro_active = True
            except OSError:
                pass  # an old kernel: one datagram per receive, as before
        else:  # a socket handed over from an earlier DataPath may still have it on
            with contextlib.suppress(OSError):
                self.udp_sock.setsockopt(SOL_UDP, UDP_GRO, 0)
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
        read_size = MAX_DATAGRAM + (VNET_HDR_LEN + 64 if self.vnet else 0)
        batch = self.batch
        c = self.counters
        routes, sadb = self.routes, self.sadb
        gso = self.gso
        vnet, from_vnet = self.vnet, self._from_vnet
        route_to_sa = self._route_to_sa
        send_segments = self._send_segments
        flush = self._flush_run
        raw_out = self._raw_out
        raw_sock = self.raw_sock
        flush_raw = self._flush_raw
        raw_run: list[bytes] = []  # plain ESP for one address, sent with one sendmmsg
        raw_addr: Address = ()
        note_unexpected = self._note_unexpected
        # The GSO run being collected: datagrams of run_size bytes (the last may be
        # shorter) for one socket and address. The list is reused from run to run.
        run: list[bytes] = []
        run_sock: socket.socket | None = None
        run_addr: Address = ()
        run_size = run_bytes = 0
        while True:
            events = poller.poll()
            if any(f == stop for f, _ in events):
                return
            for _ in range(batch):
                try:
                    frame = read(fd, read_size)
                except BlockingIOError:
                    break
                except OSError:
                    c.tun_errors += 1
                    break
                # The control plane publishes new tables by rebinding: taken per frame read,
                # so a packet read after a switch (make-before-break) uses the new SA.
                lookup = routes.snapshot.lookup_packed
                sa_for = sadb.outbound_table.get
                try:
                    packet = from_vnet(frame) if vnet else frame
                    if packet is None:
                        continue  # malformed, counted
                    if isinstance(packet, Segments):
                        # A TSO super-packet: its segments leave in order, after what
                        # is already collected.
                        if run:
                            flush(run_sock, run_addr, run_size, run)
                        if raw_run:
                            flush_raw(raw_out, raw_addr, raw_run)  # type: ignore[arg-type]
                        send_segments(packet, lookup, sa_for)
                        continue
                    found = route_to_sa(packet, lookup, sa_for)
                    if found is None:
                        continue
                    sa, next_header = found
                    try:
                        esp = sa.seal(packet, next_header)
                    except EspDrop:
                        continue  # counted on the SA (selector)
                    except SequenceExhausted:
                        c.seq_exhausted += 1
                        continue
                    t: Transport = sa.transport  # type: ignore[assignment]
                    if raw_out is not None and t.sock is raw_sock:
                        if raw_run and t.addr != raw_addr:
                            flush_raw(raw_out, raw_addr, raw_run)  # clears raw_run
                        raw_run.append(esp)
                        raw_addr = t.addr
                        if len(raw_run) >= batch:
                            flush_raw(raw_out, raw_addr, raw_run)
                        continue
                    if not (gso and t.udp):
                        try:
                            t.sock.sendto(esp, t.addr)
                        except OSError:
                            c.send_errors += 1
                        continue
                    size = len(esp)
                    if run:
                        if (
                            size <= run_size
                            and t.sock is run_sock
                            and t.addr == run_addr
                            and run_bytes + size <= GSO_MAX_BYTES
                        ):
                            run.append(esp)
                            run_bytes += size
                            if size < run_size or len(run) >= GSO_MAX_SEGMENTS:
                                flush(run_sock, run_addr, run_size, run)  # clears run
                            continue
                        flush(run_sock, run_addr, run_size, run)
                    run.append(esp)
                    run_sock, run_addr, run_size, run_bytes = t.sock, t.addr, size, size
                except Exception as exc:  # a bug must cost one packet, never the loop
                    note_unexpected(exc)
            if run:
                try:
                    flush(run_sock, run_addr, run_size, run)
                except Exception as exc:
                    run.clear()
                    note_unexpected(exc)
            if raw_run:
                assert raw_out is not None
                try:
                    flush_raw(raw_out, raw_addr, raw_run)
                except Exception as exc:
                    raw_run.clear()
                    note_unexpected(exc)

    def _route_to_sa(
        self,
        packet: bytes,
        lookup: Callable[[bytes, bytes], Any],
        sa_for: Callable[[Any], Any],
        packets: int = 1,
    ) -> tuple[OutboundSa, int] | None:
        """The SA and ESP next header for an IP packet from the TUN (None: a drop, counted
        ``packets`` times: the segments of a super-packet count one each)."""
        c = self.counters
        n = len(packet)
        version = packet[0] >> 4 if n else 0
        if version == 4 and n >= 20:
            route = lookup(packet[16:20], packet[12:16])
            next_header = NH_IPV4
        elif version == 6 and n >= 40:
            route = lookup(packet[24:40], packet[8:24])
            next_header = NH_IPV6
        else:
            c.malformed_out += packets
            return None
        if route is None or route.target is None:
            c.no_route += packets
            return None
        sa = sa_for(route.target)
        if sa is None:
            c.no_sa += packets
            return None
        return sa, next_header

    def _send_segments(
        self,
        segments: Segments,
        lookup: Callable[[bytes, bytes], Any],
        sa_for: Callable[[Any], Any],
    ) -> None:
        """Seal a TSO super-packet's segments (they share addresses and ports: one route
        and SA lookup, one selector check) and send them in as few system calls as the
        transport allows."""
        c = self.counters
        count = len(segments.headers)
        found = self._route_to_sa(segments.headers[0], lookup, sa_for, count)
        if found is None:
            return
        sa, next_header = found
        pieces = self._pieces  # reused: two buffers per ESP packet (esp.sa seal_run)
        try:  # emptied whatever happens: a failed seal must leave nothing to send later
            try:
                sa.seal_segments(segments, next_header, pieces)
            except EspDrop:
                return  # counted on the SA (selector)
            except SequenceExhausted:
                c.seq_exhausted += count - len(pieces) // 2  # send what still fitted
            if pieces:
                self._send_pieces(sa.transport, pieces)  # type: ignore[arg-type]
        finally:
            pieces.clear()

    def _send_pieces(self, t: Transport, pieces: list[bytes]) -> None:
        """Send ESP packets given as buffer pairs: UDP GSO in chunks of one size, else
        sendmmsg, else one sendto each."""
        count = len(pieces) // 2
        if t.udp and self.gso:
            size = len(pieces[0]) + len(pieces[1])
            per = max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size))
            for first in range(0, count, per):
                chunk = pieces[2 * first : 2 * (first + per)]
                self._flush_run(t.sock, t.addr, size, chunk, parts=2)
            return
        if not t.udp and self._raw_out is not None and t.sock is self.raw_sock:
            slots = self.batch
            for first in range(0, count, slots):
                chunk = pieces[2 * first : 2 * (first + slots)]
                self._flush_raw(self._raw_out, t.addr, chunk, parts=2)
            return
        join = b"".join
        for i in range(0, len(pieces), 2):
            try:
                t.sock.sendto(join(pieces[i : i + 2]), t.addr)
            except OSError:
                self.counters.send_errors += 1

    def _from_vnet(self, frame: bytes) -> Segments | bytes | None:
        """What one frame read from a vnet_hdr TUN holds: a TSO super-packet's segments,
        or one packet (its partial checksum completed); None if malformed (counted)."""
        if len(frame) < VNET_HDR_LEN:
            self.counters.malformed_out += 1
            return None
        flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
        try:
            if gso_type != GSO_NONE:
                self.counters.tso_frames += 1
                return segment_headers(memoryview(frame)[VNET_HDR_LEN:], gso_type, gso_size)
            if flags & NEEDS_CSUM:
                packet = bytearray(frame[VNET_HDR_LEN:])
                complete_csum(packet, csum_start, csum_offset)
                return bytes(packet)
        except SegmentError:
            self.counters.malformed_out += 1
            return None
        return frame[VNET_HDR_LEN:]

    def _flush_run(
        self,
        sock: socket.socket | None,
        addr: Address,
        size: int,
        run: list[bytes],
        parts: int = 1,
    ) -> None:
        """Send the collected datagrams (one sendmsg with UDP_SEGMENT when there are
        several and the socket takes it, else one sendto each); empties ``run``. Each
        datagram is ``parts`` consecutive buffers of run."""
        assert sock is not None
        c = self.counters
        count = len(run) // parts
        try:
            if count > 1 and sock not in self._no_gso:
                try:
                    sock.sendmsg(run, [(SOL_UDP, UDP_SEGMENT, _GSO_SIZE.pack(size))], 0, addr)
                except OSError as exc:
                    if not self._gso_refused(sock, exc):
                        c.send_errors += count
                        return
                    # else: the kernel did not take it; send them one by one below
                else:
                    c.gso_sends += 1
                    return
            join = b"".join
            for i in range(0, len(run), parts):
                try:
                    sock.sendto(run[i] if parts == 1 else join(run[i : i + parts]), addr)
                except OSError:
                    c.send_errors += 1
        finally:
            run.clear()

    def _flush_raw(
        self, sender: MmsgSender, addr: Address, run: list[bytes], parts: int = 1
    ) -> None:
        """Send the plain ESP packets collected for addr in one sendmmsg; empties run.
        Each packet is ``parts`` consecutive buffers of run."""
        c = self.counters
        try:
            sent = sender.send(run, addr, parts)
        except OSError:
            sent = 0
        if sent > 1:
            c.mmsg_sends += 1
        c.send_errors += len(run) // parts - sent  # e.g. the socket buffer was full (EAGAIN)
        run.clear()

    def _gso_refused(self, sock: socket.socket, exc: OSError) -> bool:
        """True if exc means "no GSO here" (then remember it for the socket)."""
        if exc.errno in _GSO_FATAL:
            self._no_gso.add(sock)
            return True
        if exc.errno == errno.EINVAL:
            strikes = self._gso_einval.get(sock, 0) + 1
            self._gso_einval[sock] = strikes
            if strikes >= _GSO_EINVAL_STRIKES:
                self._no_gso.add(sock)
            return True
        return False

    # -- inbound: network -> ESP -> TUN --------------------------------------------

    def _inbound_loop(self) -> None:
        poller = select.poll()
        udp_fd = self.udp_sock.fileno()
        poller.register(udp_fd, select.POLLIN)
        if self.raw_sock is not None:
            poller.register(self.raw_sock.fileno(), select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        stop = self._stop_r
        drain_udp = self._drain_udp_gro if self.gro_active else self._drain_udp
        writer = self.tun_writer
        while True:
            for fd, _ in poller.poll():
                if fd == stop:
                    return
                try:
                    if fd == udp_fd:
                        drain_udp()
                    else:
                        self._drain_raw()
                except Exception as exc:
                    self._note_unexpected(exc)
                if writer is not None:  # what this wake-up decrypted goes out now
                    try:
                        writer.flush()
                    except Exception as exc:
                        self._note_unexpected(exc)

    def _udp_datagram(self, data: bytes | memoryview, addr: Address) -> None:
        """One datagram from port 4500 that is not ESP: keepalive, IKE (marker stripped),
        or a runt (counted as malformed)."""
        n = len(data)
        if n == 1 and data[0] == 0xFF:
            self.counters.keepalives_in += 1  # RFC 3948 §2.3: ignored
        elif n >= 4 and data[:4] == NON_ESP_MARKER:
            self.counters.ike_in += 1
            self.deliver_ike(bytes(data[4:]), addr, self._udp_port)
        else:
            self._open_and_deliver(data)

    def _open_batch(self, packets: list[Any], addr: Address | None) -> None:
        """Open what one receive call brought and hand the inner packets to the TUN side.
        addr: the UDP sender (port 4500 also carries IKE and keepalives: _udp_datagram),
        None on the raw ESP socket. Consecutive packets of one SA are opened by its loop
        (InboundSa.open_packets); each packet on its own: a failure costs that one."""
        sadb = self.sadb
        table = sadb.inbound_table
        unpack = _U32.unpack_from
        deliver, note = self._deliver, self._note_unexpected
        i, n = 0, len(packets)
        while i < n:
            data = packets[i]
            try:
                # SPI 0 is the non-ESP marker (RFC 3948); shorter than 8 is no ESP.
                if data is not None and len(data) >= 8 and (spi := unpack(data)[0]):
                    sa = table.get(spi)
                    if sa is not None:
                        # It takes this packet at least (its SPI); max(): never loop.
                        i = max(sa.open_packets(packets, i, deliver, note), i + 1)
                        continue
                    sadb.unknown_spi += 1
                elif data is None:  # longer than a receive slot (esp.mmsg)
                    sadb.malformed += 1
                elif addr is None:
                    self._open_and_deliver(data)
                else:
                    self._udp_datagram(data, addr)
            except Exception as exc:
                note(exc)
            i += 1

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
            self._open_batch([data], addr)

    def _drain_udp_gro(self) -> None:
        recvmsg = self.udp_sock.recvmsg
        c = self.counters
        open_batch = self._open_batch
        for _ in range(self.batch):
            try:
                data, ancdata, _flags, addr = recvmsg(MAX_DATAGRAM, _GRO_CMSG_SPACE)
            except BlockingIOError:
                return
            except OSError:
                c.recv_errors += 1
                return
            seg = 0
            for level, kind, value in ancdata:
                if level == SOL_UDP and kind == UDP_GRO and len(value) >= _GRO_SIZE.size:
                    seg = _GRO_SIZE.unpack_from(value)[0]
            n = len(data)
            if seg <= 0 or seg >= n:
                open_batch([data], addr)
                continue
            c.gro_batches += 1
            view = memoryview(data)
            open_batch([view[at : at + seg] for at in range(0, n, seg)], addr)

    def _drain_raw(self) -> None:
        assert self.raw_sock is not None
        if self._raw_in is not None:
            self._drain_raw_mmsg(self._raw_in)
            return
        recv = self.raw_sock.recvfrom
        got: list[Any] = []
        for _ in range(self.batch):
            try:
                data, _addr = recv(MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError:
                self.counters.recv_errors += 1
                break
            got.append(data)
        self._open_batch(self._strip_ip_headers(got), None)

    def _drain_raw_mmsg(self, receiver: MmsgReceiver) -> None:
        """recvmmsg: up to ``batch`` packets per call. Each view is used up (opened into
        new bytes or dropped) before the next call reuses the buffers."""
        c = self.counters
        for _ in range(4):  # bounded: the other socket gets its turn
            try:
                packets = receiver.receive()
            except OSError:
                c.recv_errors += 1
                return
            if len(packets) > 1:
                c.mmsg_batches += 1
            self._open_batch(self._strip_ip_headers(packets), None)
            if len(packets) < self.batch:
                return

    def _strip_ip_headers(self, packets: list[Any]) -> list[Any]:
        """The ESP part of what the raw socket returned: IPv4 raw sockets deliver the IP
        header too (an empty packet becomes a runt, counted as malformed later)."""
        if not self._raw_has_ip_header:
            return packets
        return [p if not p else memoryview(p)[(p[0] & 0x0F) * 4 :] for p in packets]

    def _write_tun(self, inner: bytes) -> None:
        try:
            os.write(self._tun_fd, inner)
        except OSError:
            self.counters.tun_errors += 1

    def _open_and_deliver(self, packet: bytes | memoryview) -> None:
        """The slow path for one packet (SA looked up by sadb.open, which counts runts)."""
        try:
            _sa, _next_header, inner = self.sadb.open(packet)
        except EspDrop:
            return  # counted by the SA table or the SA
        self._deliver(inner)
