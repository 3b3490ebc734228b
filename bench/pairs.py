"""A pair the data-path benchmark compares (``Pair``), and the bare path (``BarePair``).

A pair is started, measured, then stopped completely before the next one starts, so only
the pair under test runs during its measurement. ``pids()`` are the gateway processes
whose CPU time is charged to the pair (none for the bare path: the kernel forwards).
The tunnels: ``gatewayd_pair``, ``strongswan_pair``, ``wireguard_pair``.
"""

from __future__ import annotations

from typing import Any

from tests.lab import Lab, wait_ping
from tests.lab.topology import Topology


class Pair:
    """One column of the table. Subclasses start and stop their gateways."""

    key = ""  # the column key in results.json
    label = ""  # the column header

    def __init__(self, lab: Lab, topo: Topology) -> None:
        self.lab = lab
        self.topo = topo

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        return []

    def tunnel_interface(self, site: str) -> str | None:
        """The device the pair's gateway in ``site`` reads and writes, if any."""
        return None

    def counters(self, site: str) -> dict[str, int]:
        """The gateway's own drop and error counters in ``site`` (while it runs)."""
        return {}

    def snapshot(self) -> None:
        """Read the gateways' own counters (called after the workloads, while they run)."""

    def details(self) -> dict[str, Any]:
        """Facts worth saving after the measurement (counters, versions)."""
        return {}

    def problems(self) -> list[str]:
        """What the gateways logged as going wrong, one line each."""
        return []

    def wait_pings(self, timeout: float = 20) -> None:
        a, b = self.topo["a"], self.topo["b"]
        wait_ping(a.lan, b.lan_host_v4, timeout=timeout)
        wait_ping(b.lan, a.lan_host_v4, timeout=timeout)


class BarePair(Pair):
    """No tunnel: the WAN router routes the LANs directly (the ceiling). The routes exist
    only during this measurement."""

    key, label = "bare", "bare"

    def _routes(self) -> list[tuple[str, str]]:
        return [(s.lan_net_v4, s.public_v4) for s in (self.topo["a"], self.topo["b"])]

    def start(self) -> None:
        assert self.topo.wan is not None
        for net, via in self._routes():
            self.topo.wan.add_route(net, via=via)
        self.wait_pings()

    def stop(self) -> None:
        assert self.topo.wan is not None
        for net, _ in self._routes():
            self.topo.wan.ip("route", "del", net, check=False)
