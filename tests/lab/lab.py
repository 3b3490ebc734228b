"""``Lab``: one owner for a test's namespaces, topologies, strongSwan peers and logs.

Everything made through a Lab is removed by ``close()`` (also on exceptions when used as
a context manager). Logs registered here are printed by ``tests/lab/plugin.py`` when a
test fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .gatewayd import Gatewayd
from .netns import DEFAULT_PREFIX, Netns
from .requires import require_root, require_root_and_strongswan
from .strongswan import StrongSwan
from .topology import Topology

LOG_LINES = int(os.environ.get("GATEWAYD_LAB_LOG_LINES", "60"))

# Labs alive now, and labs closed since the current test began (their logs are still on
# disk when the failure report is built, after a ``with Lab()`` block has exited).
_active: weakref.WeakSet[Lab] = weakref.WeakSet()
_recent: list[Lab] = []


def labs_for_report() -> list[Lab]:
    return [*_active, *(lab for lab in _recent if lab not in _active)]


def forget_closed_labs() -> None:
    _recent.clear()


class Lab:
    """``workdir`` holds peer configs and logs; by default a new /tmp/gwdlab-* directory,
    kept after ``close()`` so the logs can still be read."""

    def __init__(self, workdir: Path | None = None, prefix: str = DEFAULT_PREFIX) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="gwdlab-")).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.logs: dict[str, Path] = {}
        self._netns: list[Netns] = []
        self._topologies: list[Topology] = []
        self._peers: list[StrongSwan] = []
        self._daemons: list[Gatewayd] = []
        _active.add(self)

    # -- factories -------------------------------------------------------------------
    def netns(self, host: str) -> Netns:
        ns = Netns(host, self.prefix)
        self._netns.append(ns)
        return ns

    def topology(self, *, ipv6: bool = True, mtu: int | None = None) -> Topology:
        """An empty topology: ``add_site(...)`` then ``build()``; removed by ``close()``."""
        topo = Topology(self.prefix, ipv6, mtu)
        self._topologies.append(topo)
        return topo

    def site_to_site(
        self, *, nat_a: bool = False, nat_b: bool = False, ipv6: bool = True
    ) -> Topology:
        return self.topology(ipv6=ipv6).add_site("a", nat=nat_a).add_site("b", nat=nat_b).build()

    def hub_and_spokes(
        self, n: int, *, nat: frozenset[int] = frozenset(), ipv6: bool = True
    ) -> Topology:
        topo = self.topology(ipv6=ipv6).add_site("hub")
        for i in range(1, n + 1):
            topo.add_site(f"s{i}", nat=i in nat)
        return topo.build()

    def strongswan(self, ns: Netns, name: str | None = None, **kw: Any) -> StrongSwan:
        """A (not yet started) peer in ``ns`` whose log is registered for failure reports."""
        require_root_and_strongswan()
        name = name or ns.host
        sw = StrongSwan(ns, self.workdir / name, name=name, **kw)
        self._peers.append(sw)
        self.register_log(f"strongswan {name}", sw.log_path)
        return sw

    def gatewayd(self, ns: Netns, name: str | None = None) -> Gatewayd:
        """A (not yet configured nor started) gatewayd in ``ns``; log registered, stopped
        (SIGTERM, so it can say goodbye to its peers) by ``close()``."""
        require_root()
        name = name or f"gatewayd-{ns.host}"
        gw = Gatewayd(ns, self.workdir / name, name)
        self._daemons.append(gw)
        self.register_log(name, gw.log_path)
        return gw

    # -- logs ------------------------------------------------------------------------
    def register_log(self, name: str, path: str | Path) -> None:
        self.logs[name] = Path(path)

    def log_tails(self, n: int = LOG_LINES) -> dict[str, str]:
        tails = {}
        for name, path in self.logs.items():
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError as e:
                tails[name] = f"<{e}>"
                continue
            tails[name] = "\n".join(lines[-n:]) if lines else "<empty>"
        return tails

    # -- teardown --------------------------------------------------------------------
    def close(self) -> None:
        """Stop daemons and peers, then delete topologies and namespaces; keeps going
        past errors."""
        first: BaseException | None = None
        steps = [
            *(d.terminate for d in self._daemons),  # all at once, then wait for each
            *(lambda d=d: d.stop(timeout=5) for d in self._daemons),
            *(lambda p=p: p.stop(timeout=3) for p in self._peers),
            *(t.close for t in self._topologies),
            *(n.delete for n in self._netns),
        ]
        for step in steps:
            try:
                step()
            except Exception as e:
                first = first or e
        self._peers.clear()
        self._daemons.clear()
        self._topologies.clear()
        self._netns.clear()
        if self in _active:
            _active.discard(self)
            _recent.append(self)
        if first is not None:
            raise first

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            self.close()
        else:  # don't let a teardown error hide the test's own exception
            with contextlib.suppress(Exception):
                self.close()
