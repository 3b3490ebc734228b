"""The JSON answers of `gatewayctl status` and `gatewayctl routes`."""

from __future__ import annotations

import os
import time
from typing import Any

from esp.route_table import RouteTable


def gateway_status(daemon: Any) -> dict[str, Any]:
    now = time.time()
    gw = daemon.gateway
    counters = daemon.sadb.counters()
    drops = {reason.value: count for reason, count in counters.drops.items()}
    path = daemon.datapath.counters.as_dict() if daemon.datapath is not None else {}
    drops["no_route"] = path.get("no_route", 0) + path.get("no_sa", 0)
    drops["selector_out"] = counters.out_selector_drops
    ike_drops = (
        daemon.ike_drops
        + sum(daemon.dispatcher.drops.values())
        + sum(sum(s.drops.values()) for s in daemon.sessions)
    )
    return {
        "gateway": {
            "name": gw.name,
            "address": str(gw.address),
            "networks": [str(n) for n in gw.networks],
            "interface": gw.interface,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - daemon.started_mono, 1),
        },
        "sites": [runner.status(now) for runner in daemon.sites.values()],
        "p2s": daemon.p2s.status(now) if getattr(daemon, "p2s", None) is not None else None,
        "datapath": {
            "packets_in": counters.in_packets,
            "packets_out": counters.out_packets,
            "bytes_in": counters.in_bytes,
            "bytes_out": counters.out_bytes,
            "drops": drops,
            "path": path,
            "ike_drops": ike_drops,
            "ike_drops_by_reason": dict(daemon.dispatcher.drops),
            "half_open": daemon.dispatcher.half_open_count,
        },
    }


def routes_status(routes: RouteTable[Any]) -> dict[str, Any]:
    rows = []
    for r in routes.routes():
        row: dict[str, Any] = {
            "prefix": str(r.prefix),
            "site": r.site,
            "child_sa": r.target[1] if r.target is not None else None,
            "state": r.state,
        }
        if r.source is not None:
            row["source"] = str(r.source)
        rows.append(row)
    return {"routes": rows}
