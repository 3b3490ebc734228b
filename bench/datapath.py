"""Section "datapath": the bare path, gatewayd, strongSwan and wireguard-go, one run.

    python -m bench datapath        (root; BENCH_SECONDS=10, BENCH_PAIRS=all by default)

One site_to_site topology (IPv4): a-lan -- a-gw -- wan -- b-gw -- b-lan. Each pair in
turn is started, checked to be the only thing running in the lab, measured (see
bench/workloads.py) and stopped completely. A pair that fails to start, or a workload
that fails, shows "failed: reason" in its cells; the run goes on. Every process and
namespace is removed at the end, also on Ctrl-C, SIGTERM or an error.

Environment: ``BENCH_SECONDS`` (each TCP run; default 10), ``BENCH_PAIRS`` (a comma list
of bare, gatewayd, gatewayd_esp, strongswan, wireguard_go; default all),
``BENCH_UDP_STEPS`` (runs of the UDP rate search; default 7).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator

from bench import dp_report, kstats
from bench.gatewayd_pair import GatewaydEspPair, GatewaydPair
from bench.pairs import BarePair, Pair
from bench.section import Report
from bench.strongswan_pair import StrongSwanPair
from bench.traffic import Hosts
from bench.wireguard_pair import WireguardPair
from bench.workloads import WORKLOADS, Run, Settings, failed_note
from tests.lab import Lab, cleanup_stale, require_root
from tests.lab.gatewayd import prepare_gateway_host
from tests.lab.topology import Topology

PAIRS: dict[str, type[Pair]] = {
    p.key: p for p in (BarePair, GatewaydPair, GatewaydEspPair, StrongSwanPair, WireguardPair)
}


def settings_from_env() -> tuple[Settings, list[str]]:
    seconds = int(os.environ.get("BENCH_SECONDS") or 10)
    if seconds < 1:
        raise SystemExit("BENCH_SECONDS must be at least 1")
    keys = [k.strip() for k in (os.environ.get("BENCH_PAIRS") or ",".join(PAIRS)).split(",")]
    if unknown := [k for k in keys if k not in PAIRS]:
        raise SystemExit(f"BENCH_PAIRS: unknown {unknown}; know {list(PAIRS)}")
    keys = [k for k in PAIRS if k in keys]  # always in the table's order
    udp_seconds = max(1, min(3, round(seconds * 0.3)))
    steps = int(os.environ.get("BENCH_UDP_STEPS") or 7)
    return Settings(seconds, udp_seconds, steps), keys


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the Lab still removes everything."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _check_alone(topo: Topology, allowed: list[int]) -> None:
    """Nothing but ``allowed`` may run in the lab's namespaces."""
    stray = []
    for ns in topo.hosts:
        for pid in set(ns.pids()) - set(allowed):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue  # gone meanwhile
            stray.append(f"{comm}[{pid}] in {ns.host}")
    if stray:
        raise RuntimeError(f"other processes run in the lab: {', '.join(stray)}")


def _counters(pair: Pair, topo: Topology) -> dict[str, dict[str, int]]:
    """Per gateway host: the kernel's drop counters and the gateway's own."""
    out = {}
    for name, site in topo.sites.items():
        tunnel = pair.tunnel_interface(name)
        ifnames = [site.gw_wan_if, *([tunnel] if tunnel else [])]
        out[f"{name}-gw"] = kstats.counters(site.gw, ifnames) | pair.counters(name)
    return out


def _measure(pair: Pair, topo: Topology, hosts: Hosts, settings: Settings) -> Run:
    print(f"== {pair.label}", flush=True)
    run = Run(pair, hosts, settings, lambda: _counters(pair, topo))
    t0 = time.monotonic()
    try:
        _check_alone(topo, [])
        pair.start()
        run.details["start_s"] = round(time.monotonic() - t0, 1)
        _check_alone(topo, pair.pids())
        run.all()
        pair.snapshot()
    except Exception as e:
        reason = failed_note(e)
        print(f"  [{pair.label}] {reason}", flush=True)
        for key, _ in WORKLOADS:
            run.cells.setdefault(key, reason)
        run.details["error"] = str(e)[:4000]
    finally:
        try:
            pair.stop()
        except Exception as e:
            run.details["stop_error"] = str(e)[:2000]
        try:
            run.details |= pair.details()
            run.details["problems"] = pair.problems()
        except Exception as e:
            run.details["details_error"] = str(e)[:2000]
    run.details["elapsed_s"] = round(time.monotonic() - t0, 1)
    return run


def run() -> Report:
    require_root()
    settings, keys = settings_from_env()
    cleanup_stale()
    started = time.monotonic()
    runs: dict[str, Run] = {}
    with _sigterm_as_interrupt(), Lab() as lab:
        topo = lab.site_to_site(ipv6=False)
        a, b = topo["a"], topo["b"]
        for site in (a, b):  # the same loose rp_filter for every pair (gatewayd needs it)
            prepare_gateway_host(site.gw)
        hosts = Hosts(a.lan, b.lan, b.lan_host_v4)
        for key in keys:
            runs[key] = _measure(PAIRS[key](lab, topo), topo, hosts, settings)
        workdir = lab.workdir
    failed = any(isinstance(v, str) and v.startswith("failed") for r in runs.values()
                 for v in r.cells.values())  # fmt: skip
    if failed:
        print(f"\nlogs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    labels = {k: PAIRS[k].label for k in runs}
    return dp_report.report(runs, labels, settings, time.monotonic() - started)
