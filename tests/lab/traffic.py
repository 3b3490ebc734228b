"""Traffic between lab hosts: ping, a hashed TCP transfer, iperf3."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any, NamedTuple

from .netns import Netns, NetnsError


class PingResult(NamedTuple):
    sent: int
    received: int
    loss: float  # percent


_PING_RX = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


def ping(
    ns: Netns, dst: str, count: int = 3, interval: float = 0.2, *, wait: float = 1.0
) -> PingResult:
    """``ping`` from ``ns``; never raises on loss, the caller judges the numbers."""
    argv = ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", str(wait), dst]
    cp = ns.run(argv, check=False, timeout=count * interval + wait + 10)
    m = _PING_RX.search(cp.stdout)
    if not m:
        raise NetnsError(f"[{ns.host}] ping {dst}: unexpected output\n{cp.stdout}{cp.stderr}")
    sent, received = int(m[1]), int(m[2])
    return PingResult(sent, received, 100.0 * (sent - received) / sent if sent else 100.0)


def wait_ping(ns: Netns, dst: str, *, timeout: float = 10) -> None:
    """Ping once per try until one answer comes back (routes/SAs settling)."""
    deadline = time.monotonic() + timeout
    while ping(ns, dst, count=1, wait=0.5).received == 0:
        if time.monotonic() > deadline:
            raise NetnsError(f"[{ns.host}] no answer from {dst} within {timeout}s")


# The receiver prints READY once listening, then the sha256 of everything it read.
_RECEIVER = """
import hashlib, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen(1)
print("READY", flush=True)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while data := c.recv(1 << 16):
    h.update(data); n += len(data)
print(h.hexdigest(), n, flush=True)
"""
# The sender streams random bytes and prints their sha256.
_SENDER = """
import hashlib, os, socket, sys
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection((host, port), timeout=30)
h, left = hashlib.sha256(), size
while left:
    chunk = os.urandom(min(left, 1 << 16)); h.update(chunk); c.sendall(chunk); left -= len(chunk)
c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
print(h.hexdigest(), flush=True)
"""


def tcp_transfer(
    src_ns: Netns,
    dst_ns: Netns,
    dst_addr: str,
    size_bytes: int,
    *,
    port: int = 5001,
    timeout: float = 120,
) -> tuple[str, str]:
    """Send ``size_bytes`` random bytes over TCP; returns (sha256 sent, sha256 received)."""
    rx = dst_ns.popen(
        [sys.executable, "-c", _RECEIVER, dst_addr, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert rx.stdout is not None
        ready = rx.stdout.readline().strip()
        if ready != "READY":
            raise NetnsError(f"[{dst_ns.host}] receiver failed: {ready} {rx.stderr.read()}")  # type: ignore[union-attr]
        tx = src_ns.run(
            [sys.executable, "-c", _SENDER, dst_addr, str(port), str(size_bytes)],
            timeout=timeout,
        )
        out, err = rx.communicate(timeout=30)
        if rx.returncode != 0:
            raise NetnsError(f"[{dst_ns.host}] receiver rc={rx.returncode}: {err}")
        sha_rx, n = out.split()
        if int(n) != size_bytes:
            raise NetnsError(f"received {n} of {size_bytes} bytes")
        return tx.stdout.strip(), sha_rx
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()


def _wait_listening(ns: Netns, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while f":{port} " not in ns.run(["ss", "-Hltn"]).stdout:
        if time.monotonic() > deadline:
            raise NetnsError(f"[{ns.host}] nothing listening on {port} after {timeout}s")
        time.sleep(0.05)


def iperf3(
    client_ns: Netns,
    server_ns: Netns,
    server_addr: str,
    *,
    seconds: float = 5,
    port: int = 5201,
    reverse: bool = False,
    udp: bool = False,
    bitrate: str | None = None,
    parallel: int = 1,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One iperf3 run; returns the client's parsed ``--json`` report.

    Throughput: ``r["end"]["sum_received"]["bits_per_second"]`` (TCP) or
    ``r["end"]["sum"]`` (UDP, with ``lost_percent`` and ``jitter_ms``).
    """
    server = server_ns.popen(
        ["iperf3", "-s", "-1", "-p", str(port), "-B", server_addr],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(server_ns, port, 10)
        argv = ["iperf3", "-c", server_addr, "-p", str(port), "-t", str(seconds), "--json"]
        argv += ["-P", str(parallel)]
        if reverse:
            argv.append("-R")
        if udp:
            argv.append("-u")
        if bitrate:
            argv += ["-b", bitrate]
        cp = client_ns.run([*argv, *extra], check=False, timeout=seconds + 30)
        result: dict[str, Any] = json.loads(cp.stdout)
        if cp.returncode != 0 or "error" in result:
            raise NetnsError(f"iperf3 failed: {result.get('error', cp.stderr)}")
        return result
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
