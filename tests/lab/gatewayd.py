"""A gatewayd under test inside a lab namespace: config, start/stop, control, logs.

``Gatewayd`` writes a TOML config, runs ``python -m gatewayd.cli run -c FILE --log-format
json --log-level debug`` inside the gateway's namespace (stderr and stdout go to
``gatewayd.log``, one JSON object per line), and drives it through the control socket:
``status()``/``routes()`` use ``gatewayd.control.ControlClient``; ``ctl(...)`` runs the real
``gatewayctl`` command line. ``start_vnet_pair`` makes two of them a VNet-to-VNet pair.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .netns import Netns
from .topology import Site, Topology
from .traffic import wait_ping

REPO = Path(__file__).resolve().parents[2]
ROUTE_TABLE = 2000  # gatewayd.kernel.DEFAULT_TABLE
RUN = (sys.executable, "-m", "gatewayd.cli", "run")
DEFAULT_PSK = "lab-vnet2vnet-psk-3f9a1c77d2"
_SUN_PATH_MAX = 107


class GatewaydError(RuntimeError):
    """The daemon did not do what a helper waited for; the message carries its log tail."""


# -- config ----------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table, e.g. [p2s] radius = { server = ... }
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_table(header: str, table: Mapping[str, Any]) -> str:
    lines = [header]
    lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def toml_text(gateway: Mapping[str, Any], sites: Sequence[Mapping[str, Any]]) -> str:
    """A gatewayd config file from a ``[gateway]`` dict and ``[[site]]`` dicts."""
    parts = [_toml_table("[gateway]", gateway)]
    parts += [_toml_table("[[site]]", s) for s in sites]
    return "\n".join(parts)


def gateway_table(me: Site, **extra: Any) -> dict[str, Any]:
    """``[gateway]`` for the gatewayd in ``me.gw``: its WAN address, its LAN networks."""
    return {"name": me.name, "address": me.gw_wan_v4, "networks": me.lan_nets, **extra}


def site_table(peer: Site, psk: str = DEFAULT_PSK, **extra: Any) -> dict[str, Any]:
    """``[[site]]`` for a peer site reached at its public address."""
    return {
        "name": peer.name,
        "address": peer.public_v4,
        "networks": peer.lan_nets,
        "psk": psk,
        **extra,
    }


# -- status helpers ----------------------------------------------------------------------


def site_status(status: Mapping[str, Any], name: str) -> dict[str, Any]:
    for s in status.get("sites") or []:
        if s.get("name") == name:
            return dict(s)
    raise KeyError(f"site {name!r} not in status: {[s.get('name') for s in status['sites']]}")


def drops_total(status: Mapping[str, Any]) -> int:
    drops = status["datapath"]["drops"]
    return sum(int(v) for v in drops.values())


IkeSpis = tuple[str | None, str | None]
ChildSpis = tuple[str, str]


def spis(status: Mapping[str, Any], name: str) -> tuple[IkeSpis, list[ChildSpis]]:
    """((ike spi_i, spi_r), [(child spi_in, spi_out), ...]) of one site (hex; None
    without an IKE SA)."""
    s = site_status(status, name)
    ike = s["ike_sa"] or {}
    children = [(c["spi_in"], c["spi_out"]) for c in s.get("child_sas") or []]
    return (ike.get("spi_i"), ike.get("spi_r")), children


# -- the daemon --------------------------------------------------------------------------


@dataclass
class Gatewayd:
    """One gatewayd in ``ns``; ``gateway``/``sites`` are the config, written by ``start``."""

    ns: Netns
    workdir: Path
    name: str
    gateway: dict[str, Any] = field(default_factory=dict)
    sites: list[dict[str, Any]] = field(default_factory=list)
    proc: subprocess.Popen[Any] | None = None
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"p2s": {...}}
    env: dict[str, str] = field(default_factory=dict)  # e.g. {"GATEWAYD_OFFLOAD": "off"}

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)  # the control socket's directory must not be open
        self.config_path = self.workdir / "gatewayd.toml"
        self.log_path = self.workdir / "gatewayd.log"
        sock = self.workdir / "ctl.sock"
        if len(str(sock).encode()) > _SUN_PATH_MAX:
            sock = Path(f"/tmp/{self.ns.name}-{self.name}.sock")
        self.socket_path = sock

    # -- config --------------------------------------------------------------------
    def config_text(self) -> str:
        gateway = {"control_socket": str(self.socket_path), **self.gateway}
        text = toml_text(gateway, self.sites)
        return "\n".join([text, *(_toml_table(f"[{k}]", t) for k, t in self.tables.items())])

    def write_config(self) -> Path:
        self.config_path.write_text(self.config_text())
        return self.config_path

    def check(self) -> subprocess.CompletedProcess[str]:
        """``gatewayd check -c`` on the current config (written first)."""
        self.write_config()
        return _python(["-m", "gatewayd.cli", "check", "-c", str(self.config_path)])

    # -- process -------------------------------------------------------------------
    def start(self, *, ready_timeout: float = 20) -> Gatewayd:
        """Write the config, start the daemon, wait for "gateway ready" and the socket."""
        if self.alive:
            raise GatewaydError(f"{self.name}: already running")
        self.write_config()
        log = self.log_path.open("ab")
        try:
            self.proc = self.ns.popen(
                [*RUN, "-c", str(self.config_path), "--log-format", "json", "--log-level", "debug"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**_env(), **self.env},
                cwd=REPO,
            )
        finally:
            log.close()
        self.wait_event("gateway ready", timeout=ready_timeout)
        self.wait_for(lambda: self._answers(), ready_timeout, "control socket answering")
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM without waiting (``stop`` waits)."""
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM and wait; returns the exit code (SIGKILL and None after ``timeout``)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        return self.proc.returncode

    # -- control -------------------------------------------------------------------
    def request(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10) -> Any:
        from gatewayd.control import ControlClient

        return ControlClient.request(self.socket_path, cmd, args or {}, timeout=timeout)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("status")
        return result

    def site(self, name: str) -> dict[str, Any]:
        return site_status(self.status(), name)

    def routes(self) -> list[dict[str, Any]]:
        result = self.request("routes")
        return list(result["routes"] if isinstance(result, dict) else result)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The ``gatewayctl`` command line: ``ctl("rekey", "b", "--ike")``."""
        cp = _python(["-m", "gatewayd.ctl", "-s", str(self.socket_path), *args])
        if check and cp.returncode != 0:
            raise GatewaydError(
                f"{self.name}: gatewayctl {' '.join(args)} -> rc={cp.returncode}\n"
                f"stdout: {cp.stdout}\nstderr: {cp.stderr}\n{self.tail()}"
            )
        return cp

    def _answers(self) -> bool:
        try:
            self.status()
        except Exception:
            return False
        return True

    # -- waiting -------------------------------------------------------------------
    def wait_for(self, ok: Callable[[], Any], timeout: float, what: str) -> Any:
        """``ok()``'s first truthy result; fails early (with the log) if the daemon exits."""
        deadline = time.monotonic() + timeout
        while True:
            if result := ok():
                return result
            if self.proc is not None and self.proc.poll() is not None:
                raise GatewaydError(
                    f"{self.name}: exited rc={self.proc.returncode} waiting for {what}\n"
                    + self.tail()
                )
            if time.monotonic() > deadline:
                raise GatewaydError(f"{self.name}: no {what} within {timeout}s\n{self.tail()}")
            time.sleep(0.1)

    def wait_state(self, site: str, state: str, timeout: float = 30) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            with contextlib.suppress(Exception):
                s = self.site(site)
                if s["state"] == state:
                    return s
            return None

        result: dict[str, Any] = self.wait_for(ok, timeout, f"site {site!r} {state}")
        return result

    def wait_established(self, site: str, timeout: float = 30) -> dict[str, Any]:
        """The site's status once it is established with at least one Child SA."""

        def ok() -> dict[str, Any] | None:
            with contextlib.suppress(Exception):
                s = self.site(site)
                if s["state"] == "established" and s["ike_sa"] and s["child_sas"]:
                    return s
            return None

        result: dict[str, Any] = self.wait_for(ok, timeout, f"site {site!r} established")
        return result

    # -- logs ----------------------------------------------------------------------
    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """Every JSON log record (``since``: skip that many), in order."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if isinstance(rec, dict) and "event" in rec:
                        out.append(rec)
        return out[since:]

    def mark(self) -> int:
        """A position in the log: pass it as ``since`` to see only later events."""
        return len(self.events())

    def find_events(self, event: str, since: int = 0, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events(since)
            if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
        ]

    def wait_event(
        self, event: str, *, since: int = 0, timeout: float = 15, **fields: Any
    ) -> dict[str, Any]:
        """The first ``event`` record after ``since`` whose fields match ``fields``."""
        what = f"log event {event!r} {fields or ''}"
        found: dict[str, Any] = self.wait_for(
            lambda: next(iter(self.find_events(event, since, **fields)), None), timeout, what
        )
        return found

    def tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as e:
            return f"<{self.name} log: {e}>"
        return f"--- {self.name} log (last {n} lines) ---\n" + "\n".join(lines[-n:])

    # -- kernel state --------------------------------------------------------------
    @property
    def interface(self) -> str:
        return str(self.gateway.get("interface", "vpngw0"))

    def tun_exists(self) -> bool:
        return bool(self.ns.ip("-br", "link", "show", "dev", self.interface, check=False))

    def kernel_routes(self) -> list[str]:
        """``ip route`` lines (IPv4 and IPv6) of the tunnel table."""
        out = []
        for fam in ("-4", "-6"):
            text = self.ns.ip(fam, "route", "show", "table", str(ROUTE_TABLE), check=False)
            out += [line.strip() for line in text.splitlines() if line.strip()]
        return out

    def route_prefixes(self) -> set[str]:
        return {line.split()[0] for line in self.kernel_routes()}

    def tunnel_rules(self) -> list[str]:
        """``ip rule`` lines (IPv4 and IPv6) that send packets to the tunnel table."""
        out = []
        for fam in ("-4", "-6"):
            text = self.ns.ip(fam, "rule", "show", check=False)
            out += [ln.strip() for ln in text.splitlines() if f"lookup {ROUTE_TABLE}" in ln]
        return out


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{REPO}:{path}" if path else str(REPO), "PYTHONUNBUFFERED": "1"}


def _python(args: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **_env()},
    )


def prepare_gateway_host(ns: Netns) -> None:
    """What a gatewayd host needs besides the topology's forwarding: loose rp_filter
    (decrypted packets arrive on the TUN device, replies may leave elsewhere)."""
    for conf in ("all", "default"):
        ns.sysctl(f"net.ipv4.conf.{conf}.rp_filter", 2)


# -- a VNet-to-VNet pair -----------------------------------------------------------------


@dataclass
class VnetPair:
    """Sites ``a`` and ``b`` of ``topo``; ``gw["a"]`` runs in a-gw with site "b" and back."""

    topo: Topology
    gw: dict[str, Gatewayd]

    @property
    def a(self) -> Site:
        return self.topo["a"]

    @property
    def b(self) -> Site:
        return self.topo["b"]

    def daemons(self) -> list[Gatewayd]:
        return list(self.gw.values())

    def wait_up(self, timeout: float = 30) -> None:
        """Both sides established and agreeing on one IKE SA and one Child SA (so a
        start-up collision or a rekey is over), and LAN-to-LAN ping answered both ways."""
        self.gw["a"].wait_established("b", timeout)
        self.gw["b"].wait_established("a", timeout)
        self.wait_settled(timeout)
        wait_ping(self.a.lan, self.b.lan_host_v4, timeout=timeout)
        wait_ping(self.b.lan, self.a.lan_host_v4, timeout=timeout)

    def agreed_spis(self) -> tuple[IkeSpis, ChildSpis] | None:
        """((spi_i, spi_r), (a's spi_in, a's spi_out)) when both sides show the same
        single IKE SA and single Child SA pair, else None."""
        ike_a, children_a = spis(self.gw["a"].status(), "b")
        ike_b, children_b = spis(self.gw["b"].status(), "a")
        if len(children_a) != 1 or len(children_b) != 1 or ike_a != ike_b or None in ike_a:
            return None
        (a_in, a_out), (b_in, b_out) = children_a[0], children_b[0]
        return (ike_a, (a_in, a_out)) if (a_in, a_out) == (b_out, b_in) else None

    def wait_settled(self, timeout: float = 30, quiet: float = 2.0) -> None:
        """``agreed_spis`` unchanged for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while True:
            now_spis = self.agreed_spis()
            if now_spis != last:
                last, since = now_spis, time.monotonic()
            elif now_spis is not None and time.monotonic() - since >= quiet:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(gw.tail(20) for gw in self.daemons())
                raise GatewaydError(f"the pair did not settle on one SA pair: {last}\n{tails}")
            time.sleep(0.2)


def configure_vnet_pair(
    make: Callable[[Netns, str], Gatewayd],
    topo: Topology,
    *,
    psk: Mapping[str, str] | None = None,
    site_extra: Mapping[str, Any] | None = None,
    name_prefix: str = "",
) -> VnetPair:
    """Two configured (not started) daemons named ``{name_prefix}gatewayd-a`` / ``-b``;
    ``psk`` per side, e.g. {"a": ..., "b": ...}; ``site_extra``: more [[site]] keys."""
    gws = {}
    for me, peer in (("a", "b"), ("b", "a")):
        ns = topo[me].gw
        prepare_gateway_host(ns)
        gw = make(ns, f"{name_prefix}gatewayd-{me}")
        gw.gateway = gateway_table(topo[me])
        key = (psk or {}).get(me, DEFAULT_PSK)
        gw.sites = [site_table(topo[peer], key, **(site_extra or {}))]
        gws[me] = gw
    return VnetPair(topo, gws)


def start_vnet_pair(
    make: Callable[[Netns, str], Gatewayd],
    topo: Topology,
    *,
    psk: Mapping[str, str] | None = None,
    site_extra: Mapping[str, Any] | None = None,
    name_prefix: str = "",
    wait: bool = True,
) -> VnetPair:
    """``configure_vnet_pair``, both started; with ``wait`` also settled and pinging."""
    pair = configure_vnet_pair(make, topo, psk=psk, site_extra=site_extra, name_prefix=name_prefix)
    for gw in pair.daemons():
        gw.start()
    if wait:
        pair.wait_up()
    return pair
