"""Every workload of the data-path benchmark against one running pair.

Each workload fills its own cells; a workload that fails writes "failed: reason" in its
cells and the next one still runs. CPU seconds per GB are the gateway processes' user +
system time during the 1-stream TCP a->b run over the gigabytes iperf3 received.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import traffic
from bench.pairs import Pair
from bench.procstat import total_cpu_seconds
from bench.section import Value
from bench.traffic import Hosts

# (key in results.json, row label in the table)
WORKLOADS: list[tuple[str, str]] = [
    ("tcp1_ab_mbps", "TCP 1 stream a->b, Mbit/s"),
    ("tcp1_ba_mbps", "TCP 1 stream b->a, Mbit/s"),
    ("tcp4_ab_mbps", "TCP 4 streams a->b, Mbit/s"),
    ("udp1400_mbps", "UDP 1400 B, <1% loss, Mbit/s"),
    ("ping_idle_p50_ms", "ping idle p50, ms"),
    ("ping_idle_p99_ms", "ping idle p99, ms"),
    ("ping_load_p50_ms", "ping under TCP load p50, ms"),
    ("ping_load_p99_ms", "ping under TCP load p99, ms"),
    ("cpu_s_per_gb", "CPU s/GB, both gateways"),
]
PING_COUNT, PING_INTERVAL = 200, 0.01


@dataclass
class Settings:
    seconds: int = 10  # each TCP run and the loaded-ping run
    udp_seconds: int = 3  # each step of the UDP search
    udp_steps: int = 7


def failed_note(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"failed: {type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


Counters = Callable[[], dict[str, dict[str, int]]]  # {host: {counter: value}}


def _grown(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, Any]:
    out = {}
    for host, values in after.items():
        old = before.get(host, {})
        if grown := {k: v - old.get(k, 0) for k, v in values.items() if v - old.get(k, 0)}:
            out[host] = grown
    return out


class Run:
    """The cells and details of one pair, filled workload by workload. ``counters`` reads
    the drop/error counters of the gateways; what each workload added is kept."""

    def __init__(self, pair: Pair, hosts: Hosts, settings: Settings, counters: Counters) -> None:
        self.pair, self.hosts, self.settings = pair, hosts, settings
        self.counters = counters
        self.cells: dict[str, Value] = {}
        self.details: dict[str, Any] = {"counted": {}}

    def _read_counters(self) -> dict[str, dict[str, int]]:
        try:
            return self.counters()
        except Exception as e:  # a counter we cannot read must not cost a measurement
            self.details.setdefault("counter_errors", []).append(str(e)[:500])
            return {}

    def step(self, name: str, keys: list[str], fn: Callable[[], None]) -> None:
        t0 = time.monotonic()
        before = self._read_counters()
        try:
            fn()
        except Exception as e:
            for key in keys:
                self.cells[key] = failed_note(e)
            self.details.setdefault("errors", {})[name] = str(e)[:2000]
        if counted := _grown(before, self._read_counters()):
            self.details["counted"][name] = counted
        shown = ", ".join(f"{k} {self.cells.get(k)}" for k in keys)
        print(f"  [{self.pair.label}] {shown} ({time.monotonic() - t0:.0f}s)", flush=True)

    def all(self) -> None:
        self.step("tcp1_ab", ["tcp1_ab_mbps", "cpu_s_per_gb"], self.tcp1_forward)
        self.step("tcp1_ba", ["tcp1_ba_mbps"], self.tcp1_reverse)
        self.step("tcp4_ab", ["tcp4_ab_mbps"], self.tcp4)
        self.step("udp1400", ["udp1400_mbps"], self.udp)
        self.step("ping_idle", ["ping_idle_p50_ms", "ping_idle_p99_ms"], self.ping_idle)
        self.step("ping_load", ["ping_load_p50_ms", "ping_load_p99_ms"], self.ping_loaded)

    def counted_lines(self) -> list[str]:
        """One line per workload that made a gateway count drops or errors."""
        return [
            f"{self.pair.label} {step}: "
            + "; ".join(f"{host} " + ", ".join(f"{k} {v}" for k, v in c.items())
                        for host, c in hosts.items())
            for step, hosts in self.details["counted"].items()
        ]  # fmt: skip

    # -- workloads -------------------------------------------------------------------
    def tcp1_forward(self) -> None:
        pids = self.pair.pids()
        before = total_cpu_seconds(pids)
        r = traffic.tcp(self.hosts, self.settings.seconds)
        cpu = total_cpu_seconds(pids) - before
        self.cells["tcp1_ab_mbps"] = round(r.mbps, 1)
        self.details["tcp1_ab"] = traffic.as_dict(r)
        if not pids:
            self.cells["cpu_s_per_gb"] = "n/a"
            return
        self.cells["cpu_s_per_gb"] = round(cpu / (r.bytes / 1e9), 2)
        self.details["cpu_s_tcp1_ab"] = round(cpu, 2)

    def tcp1_reverse(self) -> None:
        r = traffic.tcp(self.hosts, self.settings.seconds, reverse=True)
        self.cells["tcp1_ba_mbps"] = round(r.mbps, 1)
        self.details["tcp1_ba"] = traffic.as_dict(r)

    def tcp4(self) -> None:
        r = traffic.tcp(self.hosts, self.settings.seconds, streams=4)
        self.cells["tcp4_ab_mbps"] = round(r.mbps, 1)
        self.details["tcp4_ab"] = traffic.as_dict(r)

    def udp(self) -> None:
        tcp1 = self.cells.get("tcp1_ab_mbps")
        start = tcp1 if isinstance(tcp1, float) and tcp1 > 1 else 100.0
        s = self.settings
        best, trace = traffic.udp_search(
            lambda rate: traffic.udp(self.hosts, s.udp_seconds, rate), start, s.udp_steps
        )
        self.details["udp_search"] = [traffic.as_dict(p) for p in trace]
        if best is None:
            lowest = min(p.offered_mbps for p in trace)
            raise RuntimeError(f"loss >= {traffic.LOSS_LIMIT}% even at {lowest:.0f} Mbit/s")
        self.cells["udp1400_mbps"] = round(best.received_mbps, 1)

    def ping_idle(self) -> None:
        r = traffic.ping_rtt(self.hosts.client, self.hosts.server_addr, PING_COUNT, PING_INTERVAL)
        self.cells["ping_idle_p50_ms"] = r.p50_ms
        self.cells["ping_idle_p99_ms"] = r.p99_ms
        self.details["ping_idle"] = traffic.as_dict(r)

    def ping_loaded(self) -> None:
        """Pings a->b while one TCP stream a->b runs: start pinging 1 s into the stream
        (past slow start) and stop at least 0.5 s before its end."""
        seconds = max(self.settings.seconds, 3)
        count = min(PING_COUNT, int((seconds - 1.5) / PING_INTERVAL))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            load = pool.submit(traffic.tcp, self.hosts, seconds)
            time.sleep(1.0)
            r = traffic.ping_rtt(self.hosts.client, self.hosts.server_addr, count, PING_INTERVAL)
            tcp = load.result()
        self.cells["ping_load_p50_ms"] = r.p50_ms
        self.cells["ping_load_p99_ms"] = r.p99_ms
        self.details["ping_load"] = traffic.as_dict(r) | {"tcp_mbps": round(tcp.mbps, 1)}
