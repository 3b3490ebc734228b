"""Debian's FreeRADIUS 3 as a lab RADIUS server, with its own minimal config directory.

Nothing of /etc/freeradius is used: radiusd.conf, clients, users (Cleartext-Password)
and an eap module whose default method is EAP-MSCHAPv2 are written to ``workdir``, and
the server runs in the foreground (``-f -l stdout``) inside a namespace, listening on
one address. ``-xx`` debug output goes to ``radius.log`` for failure reports.

    radius = FreeRadius(ns, tmp / "radius", address="10.77.0.5", clients={"10.77.0.0/24": "s3cret"},
                        users={"alice": "alice-secret"})
    radius.start()
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from .netns import Netns
from .requires import _missing

FREERADIUS = "/usr/sbin/freeradius"
READY = "Ready to process requests"


def require_freeradius() -> None:
    if shutil.which("freeradius") is None and not Path(FREERADIUS).exists():
        _missing(f"{FREERADIUS} not installed (apt-get install freeradius)")


def _quote(value: str) -> str:
    if any(c in value for c in '"\\\n'):
        raise ValueError(f"unsupported character in FreeRADIUS value {value!r}")
    return f'"{value}"'


class FreeRadius:
    def __init__(
        self,
        ns: Netns,
        workdir: Path,
        *,
        address: str,
        clients: dict[str, str],
        users: dict[str, str],
        port: int = 1812,
        default_eap_type: str = "mschapv2",
    ) -> None:
        self.ns = ns
        self.dir = Path(workdir)
        self.address = address
        self.port = port
        self.clients = clients  # network or address -> shared secret
        self.users = users  # name -> password (Cleartext-Password)
        self.default_eap_type = default_eap_type
        self.log_path = self.dir / "radius.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ config

    def write_config(self) -> None:
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        for sub in ("log", "run", "db"):
            (d / sub).mkdir(exist_ok=True)
        clients = "".join(
            f"client c{i} {{\n  ipaddr = {net}\n  secret = {_quote(secret)}\n"
            "  require_message_authenticator = yes\n  nas_type = other\n}\n"
            for i, (net, secret) in enumerate(self.clients.items())
        )
        users = "".join(
            f"{_quote(name)} Cleartext-Password := {_quote(pw)}\n"
            for name, pw in self.users.items()
        )
        (d / "users").write_text(users)
        (d / "radiusd.conf").write_text(f"""\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {d}/log
raddbdir = {d}
radacctdir = {d}/log
name = freeradius
confdir = {d}
modconfdir = {d}
certdir = {d}
cadir = {d}
run_dir = {d}/run
db_dir = {d}/db
libdir = /usr/lib/freeradius
pidfile = {d}/run/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 4096
hostname_lookups = no
log {{
  destination = stdout
  colourise = no
  auth = yes
}}
security {{
  allow_core_dumps = no
  max_attributes = 200
  reject_delay = 0
  status_server = no
}}
thread pool {{
  start_servers = 2
  max_servers = 4
  min_spare_servers = 1
  max_spare_servers = 3
  max_requests_per_server = 0
}}
{clients}
modules {{
  files {{
    filename = {d}/users
  }}
  mschap {{
    use_mppe = yes
  }}
  eap {{
    default_eap_type = {self.default_eap_type}
    timer_expire = 60
    ignore_unknown_eap_types = no
    max_sessions = 4096
    md5 {{
    }}
    mschapv2 {{
      send_error = no
    }}
  }}
}}
server default {{
  listen {{
    type = auth
    ipaddr = {self.address}
    port = {self.port}
  }}
  authorize {{
    eap {{
      ok = return
    }}
    files
  }}
  authenticate {{
    Auth-Type MSCHAP {{
      mschap
    }}
    eap
  }}
  post-auth {{
  }}
}}
""")

    # ------------------------------------------------------------------ process

    def start(self, timeout: float = 15.0) -> FreeRadius:
        require_freeradius()
        self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = self.ns.popen(
            [FREERADIUS, "-f", "-l", "stdout", "-xx", "-d", str(self.dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY in self.log_path.read_text(errors="replace"):
                return self
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                raise RuntimeError(f"freeradius exited ({rc}):\n{self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"freeradius not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError as e:
            return f"<{e}>"
