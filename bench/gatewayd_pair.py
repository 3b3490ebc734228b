"""The gatewayd pair: two daemons as a VNet-to-VNet pair (tests/lab/gatewayd.py)."""

from __future__ import annotations

import contextlib
from typing import Any

from bench.pairs import Pair
from tests.lab import Lab
from tests.lab.gatewayd import VnetPair, configure_vnet_pair
from tests.lab.topology import Topology


class GatewaydPair(Pair):
    """Two gatewayd in VNet-to-VNet mode on built-in defaults: aes256gcm16, and ESP in UDP
    4500 (``encapsulation = "auto"`` between two gatewayd), as strongSwan's
    kernel-libipsec and wireguard-go always send it."""

    key, label = "gatewayd", "gatewayd"
    ERRORS = ("send_errors", "tun_errors", "recv_errors", "unexpected", "seq_exhausted")

    def __init__(self, lab: Lab, topo: Topology) -> None:
        super().__init__(lab, topo)
        self.pair: VnetPair | None = None
        self._status: dict[str, Any] = {}  # each side's data-path status after the workloads

    SITE_EXTRA: dict[str, Any] = {}

    def start(self) -> None:
        prefix = f"bench-{self.key}-"
        self.pair = configure_vnet_pair(
            self.lab.gatewayd, self.topo, name_prefix=prefix, site_extra=self.SITE_EXTRA
        )
        for gw in self.pair.daemons():
            gw.start()
        self.pair.wait_up(timeout=30)

    def pids(self) -> list[int]:
        return [gw.pid for gw in self.pair.daemons()] if self.pair else []

    def tunnel_interface(self, site: str) -> str | None:
        return self.pair.gw[site].interface if self.pair else None

    def counters(self, site: str) -> dict[str, int]:
        """Its status: drops by reason and the data path's error counters."""
        if self.pair is None:
            return {}
        path = self.pair.gw[site].status()["datapath"]
        out = {f"gatewayd drop {k}": int(v) for k, v in path["drops"].items()}
        out |= {f"gatewayd {k}": int(v) for k, v in path["path"].items() if k in self.ERRORS}
        return out

    def snapshot(self) -> None:
        for site, gw in self.pair.gw.items() if self.pair else ():
            with contextlib.suppress(Exception):
                self._status[site] = gw.status()["datapath"]

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status_after": self._status}
        if self.pair is not None:
            out["log_problems"] = {
                site: _log_problems(gw.events()) for site, gw in self.pair.gw.items()
            }
        return out

    def problems(self) -> list[str]:
        logged = self.details().get("log_problems", {})
        return [f"gatewayd-{site} logged {p}" for site, p in logged.items() if p]

    def stop(self) -> None:
        if self.pair is None:
            return
        if not self._status:
            self.snapshot()
        for gw in self.pair.daemons():
            gw.terminate()
        for gw in self.pair.daemons():
            gw.stop(timeout=10)


class GatewaydEspPair(GatewaydPair):
    """The same pair with ``encapsulation = "esp"``: plain ESP (IP protocol 50), which a
    raw socket carries one packet per kernel pass (no GSO/GRO for it)."""

    key, label = "gatewayd_esp", "gatewayd-esp"
    SITE_EXTRA = {"encapsulation": "esp"}


def _log_problems(events: list[dict[str, Any]]) -> dict[str, int]:
    """Warning-or-worse log records by event text."""
    out: dict[str, int] = {}
    for e in events:
        if str(e.get("level", "")).lower() in ("warning", "error", "critical"):
            out[str(e["event"])] = out.get(str(e["event"]), 0) + 1
    return out
