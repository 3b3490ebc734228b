"""Packet capture in a lab namespace (tcpdump) and a small reader for its UDP datagrams."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .netns import Netns, NetnsError


class Capture:
    """``with Capture(ns, "wan", path, "udp"):`` records to a pcap file until exit."""

    def __init__(self, ns: Netns, ifname: str, path: str | Path, bpf: str = "udp") -> None:
        self.ns, self.ifname, self.path, self.bpf = ns, ifname, Path(path).resolve(), bpf
        self.proc: subprocess.Popen[Any] | None = None

    def start(self, timeout: float = 10) -> Self:
        # --immediate-mode: without it packets wait in the ring buffer for a block
        # timeout and a prompt stop loses them; -U: write each one at once.
        argv = ["tcpdump", "-n", "-U", "--immediate-mode", "-s", "0", "-i", self.ifname]
        argv += ["-w", str(self.path)]
        self.proc = self.ns.popen([*argv, *self.bpf.split()], stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        # tcpdump says "listening on IF" on stderr once the socket is attached.
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "listening on" in line:
                return self
            if not line and self.proc.poll() is not None:
                break
        raise NetnsError(f"[{self.ns.host}] tcpdump did not start on {self.ifname}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)  # flushes and closes the file
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Datagram:
    ts: float
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes


def read_udp(path: str | Path) -> list[Datagram]:
    """UDP datagrams (IPv4/IPv6 over Ethernet) of a classic pcap file, in capture order.

    IP fragments and non-UDP packets are skipped: the lab's IKE messages fit one packet.
    """
    data = Path(path).read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        raise ValueError(f"{path}: not a pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(end + "I", data[20:24])[0]
    if linktype != 1:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet (1)")
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(end + "IIII", data[off : off + 16])
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        if (d := _udp(frame, sec + frac / (1e9 if nano else 1e6))) is not None:
            out.append(d)
    return out


def _udp(frame: bytes, ts: float) -> Datagram | None:
    etype, ip = struct.unpack("!H", frame[12:14])[0], frame[14:]
    if etype == 0x8100:  # one VLAN tag
        etype, ip = struct.unpack("!H", frame[16:18])[0], frame[18:]
    if etype == 0x0800 and len(ip) >= 20:
        ihl, proto = (ip[0] & 0x0F) * 4, ip[9]
        frag = struct.unpack("!H", ip[6:8])[0]
        if proto != 17 or frag & 0x3FFF:
            return None
        total = struct.unpack("!H", ip[2:4])[0]
        src, dst, l4 = ip[12:16], ip[16:20], ip[ihl:total]
    elif etype == 0x86DD and len(ip) >= 40:
        if ip[6] != 17:  # extension headers are not expected in the lab
            return None
        plen = struct.unpack("!H", ip[4:6])[0]
        src, dst, l4 = ip[8:24], ip[24:40], ip[40 : 40 + plen]
    else:
        return None
    sport, dport, ulen = struct.unpack("!HHH", l4[:6])
    return Datagram(
        ts,
        str(ipaddress.ip_address(src)),
        str(ipaddress.ip_address(dst)),
        sport,
        dport,
        bytes(l4[8:ulen]),
    )
