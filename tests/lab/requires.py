"""Skip-or-fail policy for lab tests.

Locally a missing prerequisite skips the test. In CI (``GATEWAYD_REQUIRE_INTEROP=1``) it
fails instead, so an interop suite can never pass by silently skipping everything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

STRICT_ENV = "GATEWAYD_REQUIRE_INTEROP"
CHARON = "/usr/sbin/charon-systemd"


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def _missing(reason: str) -> None:
    msg = f"needs root/strongSwan: {reason}"
    if _strict():
        pytest.fail(f"{msg} ({STRICT_ENV} is set)", pytrace=False)
    pytest.skip(msg)


def root_problem() -> str | None:
    """Why namespaces cannot be built here, or None."""
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("ip") is None:
        return "iproute2 'ip' not found"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun missing"
    return None


def strongswan_problem() -> str | None:
    """Why strongSwan peers cannot be started here, or None."""
    if not Path(CHARON).exists():
        return f"{CHARON} not installed (apt-get install charon-systemd)"
    if shutil.which("swanctl") is None:
        return "swanctl not installed (apt-get install strongswan-swanctl)"
    if not Path("/etc/strongswan.d/charon/kernel-libipsec.conf").exists():
        return "kernel-libipsec plugin missing (apt-get install libcharon-extra-plugins)"
    return None


def require_root() -> None:
    if (why := root_problem()) is not None:
        _missing(why)


def require_tools(*names: str) -> None:
    """Each name must be on PATH (e.g. ``iperf3``, ``tcpdump``, ``nft``)."""
    if missing := [n for n in names if shutil.which(n) is None]:
        _missing(f"missing tools: {', '.join(missing)}")


def require_root_and_strongswan() -> None:
    require_root()
    if (why := strongswan_problem()) is not None:
        _missing(why)
