"""Where the kernel of a gateway namespace dropped packets: a device's queueing discipline,
the device itself (a full TUN queue shows as tx dropped), UDP receive buffers, raw (ESP)
socket queues."""

from __future__ import annotations

import json

from tests.lab import Netns

UDP_FIELDS = ("InErrors", "RcvbufErrors", "SndbufErrors")


def _link(ns: Netns, ifname: str) -> dict[str, int]:
    out = ns.ip("-s", "-j", "link", "show", "dev", ifname, check=False)
    if not out.strip():
        return {}
    stats = json.loads(out)[0].get("stats64", {})
    return {
        f"{ifname} {way} {what}": int(stats[way][what])
        for way in ("rx", "tx")
        for what in ("dropped", "errors")
        if way in stats
    }


def _qdisc(ns: Netns, ifname: str) -> dict[str, int]:
    """Packets the device's queueing discipline dropped (a full queue before the device)."""
    cp = ns.run(["tc", "-s", "-j", "qdisc", "show", "dev", ifname], check=False)
    if cp.returncode != 0 or not cp.stdout.strip():
        return {}
    return {f"{ifname} qdisc drops": sum(int(q.get("drops", 0)) for q in json.loads(cp.stdout))}


def _udp(ns: Netns) -> dict[str, int]:
    rows = [ln.split() for ln in ns.run(["cat", "/proc/net/snmp"]).stdout.splitlines()]
    udp = [r[1:] for r in rows if r and r[0] == "Udp:"]
    if len(udp) < 2:
        return {}
    values = dict(zip(udp[0], udp[1], strict=True))
    return {f"udp {k}": int(values[k]) for k in UDP_FIELDS if k in values}


def _raw(ns: Netns) -> dict[str, int]:
    """Drops of raw sockets (gatewayd's plain ESP socket): the last /proc/net/raw column."""
    lines = ns.run(["cat", "/proc/net/raw"]).stdout.splitlines()[1:]
    return {"raw socket drops": sum(int(ln.split()[-1]) for ln in lines if ln.strip())}


def counters(ns: Netns, ifnames: list[str]) -> dict[str, int]:
    out = _udp(ns) | _raw(ns)
    for ifname in ifnames:
        out |= _link(ns, ifname) | _qdisc(ns, ifname)
    return out
