"""One strongSwan (charon-systemd + kernel-libipsec) peer running inside a lab namespace.

Each instance owns a directory with its own strongswan.conf, swanctl tree, vici socket and
log file, so any number of them run side by side on one machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from .netns import Netns
from .requires import CHARON
from .sas import IkeSa, parse_list_sas
from .swanctl_conf import Connection, Secret, render

LOG_SUBSYSTEMS = (
    "default", "dmn", "mgr", "ike", "chd", "job", "cfg", "knl", "net", "asn", "enc", "tnc",
    "imc", "imv", "pts", "tls", "esp", "lib",
)  # fmt: skip
DEFAULT_LOG_LEVELS: dict[str, int] = {"default": 1, "ike": 2, "cfg": 1, "knl": 1, "enc": 1}
# ike=4 prints g^ir, SKEYSEED and SK_*; chd=4 prints the Child SA seed and ESP keys.
KEYMAT_LOG_LEVELS: dict[str, int] = {
    "default": 1, "ike": 4, "chd": 4, "cfg": 2, "enc": 1, "net": 2, "knl": 1,
}  # fmt: skip

# Plugins with machine-wide side effects: fixed sockets under /var/run shared by every
# instance, /etc/resolv.conf rewrites, iptables rules, hardware probing.
DISABLED_PLUGINS = (
    "resolve", "lookip", "error-notify", "ha", "dhcp", "farp", "forecast", "connmark",
    "led", "tnc-tnccs", "tpm", "eap-radius", "ldap", "curl", "xauth-pam", "bypass-lan",
    "pkcs11",
)  # fmt: skip
SWANCTL_SUBDIRS = (
    "x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private",
    "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12", "conf.d",
)  # fmt: skip
_UNIX_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin


class StrongSwanError(RuntimeError):
    pass


class StrongSwan:
    """A charon-systemd peer in ``ns``; configure, ``start()``, drive it with swanctl.

    >>> sw = StrongSwan(ns, workdir / "a")
    >>> sw.connections.append(Connection(...)); sw.secrets.append(Secret("ike", psk, ids))
    >>> sw.start(); sw.initiate(child="net"); sw.list_sas()
    """

    def __init__(
        self,
        ns: Netns,
        workdir: Path,
        *,
        name: str | None = None,
        log_levels: Mapping[str, int] | None = None,
        charon_settings: Mapping[str, str | int] | None = None,
        connections: Sequence[Connection] = (),
        secrets: Sequence[Secret] = (),
    ) -> None:
        self.ns = ns
        self.name = name or ns.host
        self.dir = Path(workdir).resolve()
        self.log_levels = dict(log_levels or DEFAULT_LOG_LEVELS)
        bad = set(self.log_levels) - set(LOG_SUBSYSTEMS)
        if bad:
            raise ValueError(f"unknown log subsystems {sorted(bad)}; know {LOG_SUBSYSTEMS}")
        self.charon_settings = dict(charon_settings or {})
        self.connections: list[Connection] = list(connections)
        self.secrets: list[Secret] = list(secrets)
        self.conf_path = self.dir / "strongswan.conf"
        self.swanctl_dir = self.dir / "swanctl"
        self.swanctl_conf = self.swanctl_dir / "swanctl.conf"
        self.log_path = self.dir / "charon.log"
        self.stdout_path = self.dir / "charon.stdout"
        sock = self.dir / "charon.vici"
        if len(str(sock)) > _UNIX_PATH_MAX:
            sock = Path("/tmp", f"{ns.name}-{self.name}.vici")
        self.vici_path = sock
        self.uri = f"unix://{sock}"
        self.proc: subprocess.Popen[Any] | None = None
        self._stdout: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"StrongSwan({self.name!r} in {self.ns.name!r})"

    # -- files -----------------------------------------------------------------------
    def add_cert(self, pem: str | Path, kind: str = "x509") -> str:
        """Copy a PEM into swanctl/<kind>/ (x509, x509ca, private, ecdsa, rsa, pkcs8).

        Returns the file name to use in ``Auth(certs=[...])``; keys and CA certificates
        in those directories are loaded by ``--load-all`` without further reference.
        """
        if kind not in SWANCTL_SUBDIRS:
            raise ValueError(f"kind must be one of {SWANCTL_SUBDIRS}")
        dst = self.swanctl_dir / kind / Path(pem).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pem, dst)
        if kind in ("private", "ecdsa", "rsa", "pkcs8"):
            dst.chmod(0o600)
        return dst.name

    def _strongswan_conf(self) -> str:
        levels = "\n".join(f"      {k} = {v}" for k, v in self.log_levels.items())
        disabled = "\n".join(f"    {p} {{ load = no }}" for p in DISABLED_PLUGINS)
        settings = "\n".join(f"  {k} = {v}" for k, v in self.charon_settings.items())
        return f"""# written by tests/lab for peer {self.name} in {self.ns.name}
charon-systemd {{
  load_modular = yes
{settings}
  plugins {{
    include /etc/strongswan.d/charon/*.conf
    kernel-libipsec {{ load = yes }}
{disabled}
    vici {{ socket = {self.uri} }}
  }}
  journal {{ default = -1 }}
  filelog {{
    lab {{
      path = {self.log_path}
      append = no
      flush_line = yes
      time_format = %H:%M:%S
      time_add_ms = yes
      ike_name = yes
{levels}
    }}
  }}
}}
swanctl {{ socket = {self.uri} }}
"""

    def write_config(self) -> None:
        """(Re)write strongswan.conf and swanctl.conf from the Python description."""
        for sub in SWANCTL_SUBDIRS:
            (self.swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self._strongswan_conf())
        self.swanctl_conf.write_text(render(self.connections, self.secrets))
        self.swanctl_conf.chmod(0o600)  # it holds PSKs

    # -- process -----------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return {"STRONGSWAN_CONF": str(self.conf_path), "SWANCTL_DIR": str(self.swanctl_dir)}

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, timeout: float = 15, load: bool = True) -> Self:
        """Write configs, start charon, wait for its vici socket, load everything."""
        if self.running:
            raise StrongSwanError(f"{self.name}: already running")
        self.write_config()
        with contextlib.suppress(FileNotFoundError):
            self.vici_path.unlink()
        self._stdout = open(self.stdout_path, "ab")  # noqa: SIM115 - lives with the process
        self.proc = self.ns.popen(
            [CHARON], env=self.env, stdout=self._stdout, stderr=subprocess.STDOUT
        )
        self._wait_vici(timeout)
        if load:
            self.load_all()
        return self

    def _wait_vici(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise StrongSwanError(f"{self.name}: charon exited early\n{self.log_tail(30)}")
            if self.vici_path.exists():
                cp = self.swanctl("--stats", check=False, timeout=5)
                if cp.returncode == 0:
                    return
            time.sleep(0.05)
        raise StrongSwanError(f"{self.name}: no vici socket after {timeout}s\n{self.log_tail(30)}")

    def kill(self) -> None:
        """SIGKILL: the peer vanishes without a DELETE (dead-peer tests)."""
        self._signal(signal.SIGKILL, wait=5)

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM (charon deletes its SAs politely), SIGKILL after ``timeout``."""
        if not self._signal(signal.SIGTERM, wait=timeout):
            self.kill()

    def _signal(self, sig: int, wait: float) -> bool:
        p = self.proc
        if p is None:
            return True
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                return False
        self.proc = None
        if self._stdout:
            self._stdout.close()
            self._stdout = None
        with contextlib.suppress(FileNotFoundError):
            if self.vici_path.parent == Path("/tmp"):
                self.vici_path.unlink()
        return True

    def __enter__(self) -> Self:
        return self.start() if not self.running else self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- swanctl -------------------------------------------------------------------------
    def swanctl(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run ``swanctl ARGS --uri <ours>``; vici is a unix socket, so no netns needed."""
        cp = subprocess.run(
            ["swanctl", *args, "--uri", self.uri],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env},
        )
        if check and cp.returncode != 0:
            raise StrongSwanError(
                f"{self.name}: swanctl {' '.join(args)} -> rc={cp.returncode}\n"
                f"{cp.stdout}{cp.stderr}\n--- charon log tail ---\n{self.log_tail(20)}"
            )
        return cp

    def load_all(self) -> str:
        self.write_config()
        cp = self.swanctl("--load-all", "--noprompt", "--file", str(self.swanctl_conf))
        return cp.stdout

    def initiate(
        self, child: str | None = None, *, ike: str | None = None, timeout: int = 20
    ) -> str:
        """Initiate and wait for the result; raises with the log tail when it fails."""
        args = ["--initiate", "--timeout", str(timeout)]
        if child:
            args += ["--child", child]
        if ike:
            args += ["--ike", ike]
        return self.swanctl(*args, timeout=timeout + 10).stdout

    def terminate(
        self,
        *,
        ike: str | None = None,
        child: str | None = None,
        force: bool = False,
        timeout: int = 10,
    ) -> str:
        args = ["--terminate", "--timeout", str(timeout)]
        if ike:
            args += ["--ike", ike]
        if child:
            args += ["--child", child]
        if force:
            args.append("--force")
        return self.swanctl(*args, timeout=timeout + 10).stdout

    def rekey(self, *, child: str | None = None, ike: str | None = None) -> str:
        args = ["--rekey"]
        if child:
            args += ["--child", child]
        if ike:
            args += ["--ike", ike]
        return self.swanctl(*args).stdout

    def list_sas(self, ike: str | None = None) -> list[IkeSa]:
        args = ["--list-sas", "--pretty", "--noblock"]
        if ike:
            args += ["--ike", ike]
        return parse_list_sas(self.swanctl(*args).stdout)

    def wait_established(self, ike: str, child: str | None = None, *, timeout: float = 20) -> IkeSa:
        """Poll until IKE SA ``ike`` is ESTABLISHED (and ``child`` INSTALLED)."""
        deadline = time.monotonic() + timeout
        while True:
            for sa in self.list_sas(ike):
                installed = child is None or any(
                    c.name == child and c.state == "INSTALLED" for c in sa.children
                )
                if sa.state == "ESTABLISHED" and installed:
                    return sa
            if time.monotonic() > deadline:
                raise StrongSwanError(
                    f"{self.name}: {ike}/{child} not up after {timeout}s\n{self.log_tail(40)}"
                )
            time.sleep(0.1)

    def wait_no_sa(self, ike: str, *, timeout: float = 60) -> None:
        """Poll until no IKE SA named ``ike`` is left (DPD, delete, expiry)."""
        deadline = time.monotonic() + timeout
        while self.list_sas(ike):
            if time.monotonic() > deadline:
                raise StrongSwanError(f"{self.name}: {ike} still present after {timeout}s")
            time.sleep(0.2)

    # -- logs ------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 50) -> str:
        lines = self.log_text().splitlines()
        return "\n".join(lines[-n:])

    def wait_for_log(self, pattern: str, *, timeout: float = 20) -> re.Match[str]:
        """Wait until the log has a line matching the regex ``pattern``; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            if m := rx.search(self.log_text()):
                return m
            if time.monotonic() > deadline:
                raise StrongSwanError(f"{self.name}: no log line /{pattern}/ in {timeout}s")
            time.sleep(0.1)
