"""config/gatewayd.service: the directives, `systemd-analyze verify`, and that the
hardening (MemoryDenyWriteExecute) does not break the Python stack it runs.

`systemd-analyze verify` insists that ExecStart's binary exists. The test copies the
unit and points ExecStart at a stub executable, so every other check still applies;
a second test runs verify on the file as shipped and accepts only the complaint about
/usr/local/bin/gatewayd being absent (it passes cleanly where gatewayd is installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "config" / "gatewayd.service"
BINARY = "/usr/local/bin/gatewayd"
STRICT_ENV = "GATEWAYD_REQUIRE_INTEROP"


def require_systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get(STRICT_ENV, "") not in ("", "0"):
            pytest.fail(f"systemd-analyze not installed ({STRICT_ENV} is set)", pytrace=False)
        pytest.skip("needs systemd-analyze")
    return tool


def directives() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def stub_unit(tmp_path: Path) -> Path:
    stub = tmp_path / "gatewayd-stub"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / "gatewayd.service"
    unit.write_text(UNIT.read_text().replace(BINARY, str(stub)))
    return unit


def test_directives() -> None:
    d = directives()
    service = {k: v[-1] for k, v in d["Service"].items()}
    assert service["Type"] == "notify"
    assert service["ExecStart"] == f"{BINARY} run -c /etc/gatewayd/gatewayd.toml"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["WatchdogSec"] == "30"
    assert service["Restart"] == "on-failure"
    assert service["RestartSec"] == "5"
    caps = {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}
    assert set(service["CapabilityBoundingSet"].split()) == caps
    assert set(service["AmbientCapabilities"].split()) == caps
    assert service["RuntimeDirectory"] == "gatewayd"
    assert service["RuntimeDirectoryMode"] == "0700"
    assert service["ReadWritePaths"] == "/run/gatewayd"
    assert service["DeviceAllow"] == "/dev/net/tun rw"
    assert set(service["RestrictAddressFamilies"].split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    }
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictRealtime",
    ):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    assert service["SystemCallArchitectures"] == "native"
    assert "PrivateDevices" not in service  # would hide /dev/net/tun
    assert d["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    tool = require_systemd_analyze()
    cp = subprocess.run(
        [tool, "verify", str(stub_unit(tmp_path))], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 even for unknown keys or bad values; those only show on stderr.
    assert (cp.returncode, _ours(cp.stderr)) == (0, [])


def test_shipped_unit_only_lacks_the_installed_binary() -> None:
    tool = require_systemd_analyze()
    cp = subprocess.run([tool, "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    if Path(BINARY).exists():
        assert (cp.returncode, _ours(cp.stderr)) == (0, [])
    else:
        problems = _ours(cp.stderr)
        assert problems and all(BINARY in line for line in problems), cp.stderr


def _ours(stderr: str) -> list[str]:
    """verify's complaints, less those about other units installed on the machine (it
    loads the dependency graph, e.g. Debian's freeradius.service)."""
    out = []
    for line in stderr.splitlines():
        path = line.split(":", 1)[0]
        if not line.strip() or (path.endswith(".service") and "gatewayd" not in path):
            continue
        out.append(line)
    return out


def test_security_exposure_stays_low(tmp_path: Path) -> None:
    tool = require_systemd_analyze()
    cp = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=30", str(stub_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cp.returncode == 0, cp.stdout[-2000:]


MDWE_PROBE = r"""
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(77)  # kernel older than 6.3
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X memory still allowed: the probe proves nothing")
except OSError:
    pass

# What gatewayd runs: its own modules, the IKE/ESP crypto, netlink, asyncio.
import asyncio, ssl
import gatewayd.control, gatewayd.ctl, gatewayd.kernel, gatewayd.logging, gatewayd.systemd
import esp.tun
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from pyroute2 import IPRoute

AESGCM(AESGCM.generate_key(256)).encrypt(os.urandom(12), b"x" * 1400, b"aad")
ChaCha20Poly1305(ChaCha20Poly1305.generate_key()).encrypt(os.urandom(12), b"x", None)
enc = Cipher(algorithms.AES(os.urandom(32)), modes.CBC(os.urandom(16))).encryptor()
enc.update(b"a" * 32) + enc.finalize()
h = hmac.HMAC(b"k", hashes.SHA384()); h.update(b"d"); h.finalize()
x25519.X25519PrivateKey.generate().exchange(x25519.X25519PrivateKey.generate().public_key())
k = ec.generate_private_key(ec.SECP384R1())
k.exchange(ec.ECDH(), ec.generate_private_key(ec.SECP384R1()).public_key())
k.public_key().verify(k.sign(b"m", ec.ECDSA(hashes.SHA384())), b"m", ec.ECDSA(hashes.SHA384()))
rsa.generate_private_key(65537, 2048).sign(b"m", padding.PKCS1v15(), hashes.SHA256())
ed25519.Ed25519PrivateKey.generate().sign(b"m")
with IPRoute() as ipr:
    ipr.link("dump")
asyncio.run(asyncio.sleep(0))
print("ok")
"""


def test_memory_deny_write_execute_does_not_break_the_stack() -> None:
    # PR_SET_MDWE (Linux 6.3) refuses W+X mappings like systemd's MemoryDenyWriteExecute.
    root = str(UNIT.parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cp = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, timeout=120, env=env
    )
    if cp.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE")
    assert (cp.returncode, cp.stdout.strip()) == (0, "ok"), cp.stderr[-3000:]
