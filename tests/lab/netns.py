"""Network namespaces as lab hosts: create, run commands inside, tear down completely.

A namespace is named ``<prefix>-<pid>-<rand>-<host>``. The pid is the creating process:
``cleanup_stale`` removes only namespaces whose creator is gone, so two concurrent runs
(or pytest-xdist workers) sharing a prefix never delete each other's hosts.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

DEFAULT_PREFIX = "gwd"
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,11}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}$")
_RUN_IDS: dict[int, str] = {}

# Live namespaces of this process: removed at interpreter exit if a caller forgot.
_LIVE: dict[str, Netns] = {}


class NetnsError(RuntimeError):
    """A command inside a namespace failed; carries its output for the test report."""


def _run_id() -> str:
    """``<pid>-<rand>``, recomputed after a fork so a child never reuses its parent's."""
    pid = os.getpid()
    if pid not in _RUN_IDS:
        _RUN_IDS[pid] = f"{pid}-{secrets.token_hex(2)}"
    return _RUN_IDS[pid]


def _check_prefix(prefix: str) -> None:
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"netns prefix {prefix!r} must match {_PREFIX_RE.pattern}")


def _run(argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def _must(argv: Sequence[str], timeout: float = 30) -> str:
    cp = _run(argv, timeout)
    if cp.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} -> rc={cp.returncode}: {cp.stderr.strip()}")
    return cp.stdout


def list_namespaces() -> list[str]:
    """Names of all named namespaces on the machine."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pids_in(name: str) -> list[int]:
    out = _run(["ip", "netns", "pids", name]).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _purge(name: str) -> None:
    """SIGKILL everything in the namespace, wait for it to go, delete the namespace."""
    deadline = time.monotonic() + 5
    while (pids := _pids_in(name)) and time.monotonic() < deadline:
        _kill_pids(pids, signal.SIGKILL)
        time.sleep(0.05)
    # Deleting the namespace drops its veth ends; their peers vanish with them.
    _run(["ip", "netns", "delete", name])


def cleanup_stale(prefix: str = DEFAULT_PREFIX, *, only_dead_owners: bool = True) -> list[str]:
    """Delete leftovers of crashed runs: namespaces named ``<prefix>-<pid>-...``.

    With ``only_dead_owners`` (the default) a namespace whose creating process still
    runs is kept, so this is safe to call while other runs are active.
    """
    _check_prefix(prefix)
    removed = []
    for name in list_namespaces():
        parts = name.split("-", 3)
        if len(parts) < 4 or parts[0] != prefix or not parts[1].isdigit():
            continue
        if only_dead_owners and _owner_alive(int(parts[1])):
            continue
        _purge(name)
        removed.append(name)
    return removed


class Netns:
    """One lab host. ``Netns("gw-a")`` makes ``gwd-<pid>-<rand>-gw-a``; use as context manager."""

    def __init__(self, host: str, prefix: str = DEFAULT_PREFIX, *, create: bool = True) -> None:
        _check_prefix(prefix)
        if not _HOST_RE.match(host):
            raise ValueError(f"host name {host!r} must match {_HOST_RE.pattern}")
        self.host = host
        self.prefix = prefix
        base = f"{prefix}-{_run_id()}-{host}"
        self.name, n = base, 1
        while self.name in _LIVE:  # the same host name twice in one process
            n += 1
            self.name = f"{base}{n}"
        self._procs: list[subprocess.Popen[Any]] = []
        self._created = False
        if create:
            self.create()

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    # -- lifecycle -------------------------------------------------------------------
    def create(self) -> Self:
        if self._created:
            return self
        _must(["ip", "netns", "add", self.name])
        self._created = True
        _LIVE[self.name] = self
        self.ip("link", "set", "dev", "lo", "up")
        return self

    def delete(self) -> None:
        """Stop tracked processes, kill any other process inside, delete the namespace."""
        if not self._created:
            return
        try:
            self.stop_processes()
        finally:
            _purge(self.name)
            self._created = False
            _LIVE.pop(self.name, None)

    close = delete

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.delete()

    @property
    def exists(self) -> bool:
        return Path("/run/netns", self.name).exists()

    # -- processes -------------------------------------------------------------------
    def _argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess[Any]:
        """Run to completion inside the namespace; output is captured."""
        cp = subprocess.run(
            self._argv(argv),
            capture_output=True,
            text=text,
            input=input,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
        )
        if check and cp.returncode != 0:
            raise NetnsError(
                f"[{self.host}] {' '.join(argv)} -> rc={cp.returncode}\n"
                f"stdout: {cp.stdout!s:.2000}\nstderr: {cp.stderr!s:.2000}"
            )
        return cp

    def popen(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.Popen[Any]:
        """Start in the background, in its own session; killed by ``delete``."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(
            self._argv(argv),
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
            **kw,
        )
        self._procs.append(p)
        return p

    def stop_processes(self, grace: float = 2.0) -> None:
        """SIGTERM our process groups, SIGKILL what is left after ``grace`` seconds."""
        live = [p for p in self._procs if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self._procs.clear()

    def pids(self) -> list[int]:
        """Every process whose network namespace is this one (ours or not)."""
        return _pids_in(self.name)

    # -- network configuration ---------------------------------------------------------
    def ip(self, *args: str, check: bool = True) -> str:
        cp = _run(["ip", "-n", self.name, *args])
        if check and cp.returncode != 0:
            raise NetnsError(f"[{self.host}] ip {' '.join(args)}: {cp.stderr.strip()}")
        return cp.stdout

    def sysctl(self, key: str, value: str | int) -> None:
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def add_addr(self, ifname: str, cidr: str) -> None:
        if ipaddress.ip_interface(cidr).version == 6:
            # nodad: the address is usable at once instead of tentative for ~2 s.
            self.ip("-6", "addr", "add", cidr, "dev", ifname, "nodad")
        else:
            self.ip("addr", "add", cidr, "dev", ifname)

    def add_route(
        self,
        dst: str,
        *,
        via: str | None = None,
        dev: str | None = None,
        table: str | None = None,
        v6: bool | None = None,
    ) -> None:
        """``ip route replace``; the family follows ``dst``/``via`` unless ``v6`` says."""
        if v6 is None:
            v6 = ":" in dst or (via is not None and ":" in via)
        args = ["-6" if v6 else "-4", "route", "replace", dst]
        if via:
            args += ["via", via]
        if dev:
            args += ["dev", dev]
        if table:
            args += ["table", table]
        self.ip(*args)

    def enable_forwarding(self, *, v4: bool = True, v6: bool = True) -> None:
        if v4:
            self.sysctl("net.ipv4.ip_forward", 1)
        if v6:
            self.sysctl("net.ipv6.conf.all.forwarding", 1)

    def masquerade(self, out_ifname: str) -> None:
        """Source NAT (IPv4 and IPv6) for everything leaving ``out_ifname``."""
        ruleset = (
            "table inet lab_nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "{out_ifname}" masquerade\n'
            "  }\n"
            "}\n"
        )
        self.run(["nft", "-f", "-"], input=ruleset)

    def addresses(self, ifname: str | None = None) -> list[str]:
        args = ["-br", "addr", "show"] + (["dev", ifname] if ifname else [])
        out = self.ip(*args)
        return [a for line in out.splitlines() for a in line.split()[2:]]


@contextlib.contextmanager
def entered(host: str) -> Iterator[Netns]:
    """A new namespace this thread has entered (pyroute2 pushns), for in-process tests of
    sockets, TUN devices and netlink; left and deleted on exit, also on failure."""
    from pyroute2.netns import popns, pushns

    with Netns(host) as ns:
        pushns(ns.name)
        try:
            yield ns
        finally:
            popns()


def veth(
    a: Netns,
    b: Netns,
    *,
    a_ifname: str,
    b_ifname: str,
    a_addrs: Sequence[str] = (),
    b_addrs: Sequence[str] = (),
    mtu: int | None = None,
) -> None:
    """Join two namespaces with a veth pair made directly inside them.

    Both ends are born in their namespaces (never in the root one), so names only have to
    be unique per host and deleting either namespace removes the pair.
    """
    for n in (a_ifname, b_ifname):
        if not 0 < len(n) <= 15:
            raise ValueError(f"interface name {n!r} must be 1..15 characters")
    # "name"/"dev" keywords: a device called "a" would otherwise parse as "address".
    a.ip("link", "add", "name", a_ifname, "type", "veth", "peer", "name", b_ifname, "netns", b.name)
    for ns, ifname, addrs in ((a, a_ifname, a_addrs), (b, b_ifname, b_addrs)):
        if mtu:
            ns.ip("link", "set", "dev", ifname, "mtu", str(mtu))
        for cidr in addrs:
            ns.add_addr(ifname, cidr)
        ns.ip("link", "set", "dev", ifname, "up")


@atexit.register
def _delete_forgotten() -> None:
    for ns in list(_LIVE.values()):
        with contextlib.suppress(Exception):
            ns.delete()
