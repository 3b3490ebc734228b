"""A wireguard-go pair: one userspace WireGuard interface in each gateway namespace.

Keys from ``wg genkey``; each side's peer is the other at its WAN address, port 51820,
AllowedIPs the peer's LAN; a route sends the peer's LAN into the interface. wireguard-go
runs in the foreground (``-f``) so its pid is the process charged with the CPU time.
Its control socket lives in /var/run/wireguard/<interface>.sock, shared by every
namespace: the interface names carry our pid so concurrent runs cannot collide.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from bench.machine import package_version
from bench.pairs import Pair
from tests.lab import Lab
from tests.lab.topology import Topology

PORT = 51820
SOCKET_DIR = Path("/var/run/wireguard")
ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}


def _wg(*args: str, input: str | None = None) -> str:
    cp = subprocess.run(["wg", *args], input=input, capture_output=True, text=True, timeout=10)
    if cp.returncode != 0:
        raise RuntimeError(f"wg {args[0]}: {cp.stderr.strip()}")
    return cp.stdout.strip()


class WireguardPair(Pair):
    key, label = "wireguard_go", "wireguard-go"

    def __init__(self, lab: Lab, topo: Topology) -> None:
        super().__init__(lab, topo)
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self._logs: list[IO[bytes]] = []
        tag = os.getpid() % 100000
        self.ifname = {site: f"wgb{tag}{site}" for site in ("a", "b")}

    def start(self) -> None:
        for tool in ("wg", "wireguard-go"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} not installed (tools/install-deps.sh)")
        keys = {}
        for site in ("a", "b"):
            private = _wg("genkey")
            keys[site] = (private, _wg("pubkey", input=private + "\n"))
        for me, peer in (("a", "b"), ("b", "a")):
            self._start_side(me, peer, keys[me][0], keys[peer][1])
        self.wait_pings()

    def _start_side(self, me: str, peer: str, private: str, peer_public: str) -> None:
        site, other, ifname = self.topo[me], self.topo[peer], self.ifname[me]
        workdir = self.lab.workdir / f"wireguard-{me}"
        workdir.mkdir(parents=True, exist_ok=True)
        key_file = workdir / "private.key"
        key_file.touch(mode=0o600)
        key_file.write_text(private + "\n")
        log_path = workdir / "wireguard-go.log"
        self.lab.register_log(f"wireguard-go {me}", log_path)
        log = log_path.open("ab")
        self._logs.append(log)
        self.procs[me] = site.gw.popen(
            ["wireguard-go", "-f", ifname], env=ENV, stdout=log, stderr=subprocess.STDOUT
        )
        self._wait_socket(me)
        site.gw.run([
            "wg", "set", ifname, "listen-port", str(PORT), "private-key", str(key_file),
            "peer", peer_public, "endpoint", f"{other.public_v4}:{PORT}",
            "allowed-ips", other.lan_net_v4,
        ])  # fmt: skip
        site.gw.ip("link", "set", "dev", ifname, "up")
        site.gw.add_route(other.lan_net_v4, dev=ifname)

    def _wait_socket(self, me: str, timeout: float = 10) -> None:
        sock = SOCKET_DIR / f"{self.ifname[me]}.sock"
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if self.procs[me].poll() is not None:
                raise RuntimeError(f"wireguard-go exited rc={self.procs[me].returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {sock} after {timeout}s")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def tunnel_interface(self, site: str) -> str | None:
        return self.ifname[site]

    def details(self) -> dict[str, Any]:
        return {"version": package_version("wireguard-go"), "mtu": 1420}

    def stop(self) -> None:
        """SIGTERM (wireguard-go removes its interface and socket), SIGKILL after 5 s."""
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for me, p in self.procs.items():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            with contextlib.suppress(FileNotFoundError):
                (SOCKET_DIR / f"{self.ifname[me]}.sock").unlink()
        for log in self._logs:
            log.close()
        self._logs.clear()
