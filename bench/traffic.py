"""Traffic between the two LAN hosts: iperf3 TCP and UDP, a UDP rate search, ping RTTs."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from tests.lab import Netns, NetnsError, iperf3

UDP_PACKET = 1400  # bytes of IP packet: fits every tunnel's MTU (1400, 1400, 1420)
UDP_PAYLOAD = UDP_PACKET - 20 - 8  # IPv4 and UDP headers
LOSS_LIMIT = 1.0  # percent
SATURATED = 5.0  # percent: loss that says the path ran at its capacity
UDP_BUFFER = "4M"


@dataclass(frozen=True)
class Hosts:
    """``client`` (site a's LAN host) sends to ``server`` (site b's) unless reversed."""

    client: Netns
    server: Netns
    server_addr: str


class Tcp(NamedTuple):
    mbps: float
    bytes: int  # received
    retransmits: int


def tcp(hosts: Hosts, seconds: int, *, reverse: bool = False, streams: int = 1) -> Tcp:
    r = iperf3(hosts.client, hosts.server, hosts.server_addr, seconds=seconds,
               reverse=reverse, parallel=streams)  # fmt: skip
    received, sent = r["end"]["sum_received"], r["end"]["sum_sent"]
    return Tcp(received["bits_per_second"] / 1e6, int(received["bytes"]),
               int(sent.get("retransmits", 0)))  # fmt: skip


class UdpPoint(NamedTuple):
    offered_mbps: float
    received_mbps: float
    loss_percent: float


def udp(hosts: Hosts, seconds: int, rate_mbps: float) -> UdpPoint:
    """One UDP run at ``rate_mbps``; 4 MiB socket buffers (net.core.rmem_max here) so the
    receiving iperf3 absorbs bursts and the loss measured is the path's."""
    r = iperf3(
        hosts.client, hosts.server, hosts.server_addr, seconds=seconds, udp=True,
        bitrate=f"{rate_mbps:.3f}M", extra=("-l", str(UDP_PAYLOAD), "-w", UDP_BUFFER),
    )  # fmt: skip
    received = r["end"]["sum_received"]
    return UdpPoint(rate_mbps, received["bits_per_second"] / 1e6, float(received["lost_percent"]))


def udp_search(
    measure: Callable[[float], UdpPoint], start_mbps: float, steps: int
) -> tuple[UdpPoint | None, list[UdpPoint]]:
    """The highest received rate with loss under ``LOSS_LIMIT``, in at most ``steps`` runs.

    Doubles ``start_mbps`` while runs pass (until the sender itself falls short of the
    offered rate), then bisects between the best pass and the lowest failed rate. A
    saturated path (loss >= 5 %) usually still delivers about its capacity, so such a
    failure also sets a soft bound, 110 % of what got through, and the next run tries 97 %
    of that; a pass close to the soft bound drops it (the path collapsed under overload,
    the bound was too low). Stops when the bounds are within 5 %.
    """
    best: UdpPoint | None = None
    hard: float | None = None  # the lowest rate that failed
    soft: float | None = None
    rate, trace = start_mbps, []
    for _ in range(steps):
        point = measure(rate)
        trace.append(point)
        if point.loss_percent < LOSS_LIMIT:
            if best is None or point.received_mbps > best.received_mbps:
                best = point
            if hard is None:
                if point.received_mbps < 0.9 * rate:
                    break  # the sending host, not the path, is the limit
                rate *= 2
                continue
            if soft is not None and rate >= 0.9 * soft:
                soft = None
        else:
            hard = min(hard or rate, rate)
            if point.loss_percent >= SATURATED:
                soft = 1.1 * point.received_mbps
        floor = best.offered_mbps if best else 0.0
        if soft is not None and soft <= floor:
            soft = None
        bound = min(hard, soft or hard)
        if bound - floor < 0.05 * bound:
            break
        rate = (floor + bound) / 2
        if point.loss_percent >= SATURATED and soft is not None:
            rate = max(rate, 0.97 * point.received_mbps)
            rate = min(rate, 0.97 * bound)
    return best, trace


class Rtt(NamedTuple):
    sent: int
    received: int
    p50_ms: float
    p99_ms: float


_TIME = re.compile(r"time=([\d.]+) ms")
_SENT = re.compile(r"(\d+) packets transmitted")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p % of values <= it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ping_rtt(ns: Netns, dst: str, count: int, interval: float = 0.01) -> Rtt:
    argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", dst]
    cp = ns.run(argv, check=False, timeout=count * interval + 30)
    times = [float(t) for t in _TIME.findall(cp.stdout)]
    sent = _SENT.search(cp.stdout)
    if not times or not sent:
        raise NetnsError(f"ping {dst}: no replies\n{cp.stdout[-500:]}{cp.stderr[-500:]}")
    return Rtt(int(sent[1]), len(times), percentile(times, 50), percentile(times, 99))


def as_dict(t: NamedTuple) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in t._asdict().items()}
