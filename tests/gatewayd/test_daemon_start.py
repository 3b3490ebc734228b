"""`gatewayd run` as an operator meets it: start-up failures and a clean stop.

Each test runs ``python -m gatewayd.cli run -c FILE`` inside a private network namespace
(ip netns exec) whose loopback carries the gateway's address, so the TUN device, the
policy rules and the sockets never touch the host. A failure must print exactly one
human line ("gatewayd: ...") besides the structured log, exit non-zero, show no
traceback, and leave nothing behind; SIGTERM must exit 0 and leave nothing behind.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.netns import Netns

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
ADDRESS = "192.0.2.1"
IFNAME = "gwstart0"
FWMARK = 2000  # gatewayd.kernel.DEFAULT_FWMARK: the number operators see in `ip rule`
TABLE = "2000"
PSK = "a pre-shared key long enough for the checker"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")  # console log format


def config_text(control: Path, **gateway: str) -> str:
    gw = {"address": ADDRESS, "interface": IFNAME, **gateway}
    extra = "\n".join(f'{k} = "{v}"' for k, v in gw.items())
    return f"""
[gateway]
name = "hub"
networks = ["10.1.0.0/16"]
control_socket = "{control}"
{extra}

[[site]]
name = "branch"
address = "192.0.2.2"
networks = ["10.2.0.0/16"]
psk = "{PSK}"
ike_proposals = ["aes128gcm16-prfsha256-x25519"]
esp_proposals = ["aes128gcm16"]
"""


@pytest.fixture
def ns(make_netns: Callable[[str], Netns]) -> Netns:
    n = make_netns("start")
    n.ip("addr", "add", f"{ADDRESS}/32", "dev", "lo")
    return n


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    assert len(str(tmp_path / "ctl.sock")) < 100  # a Unix socket path's limit is 107
    return tmp_path


def write_config(workdir: Path, name: str = "gw.toml", **gateway: str) -> Path:
    path = workdir / name
    path.write_text(config_text(workdir / "ctl.sock", **gateway))
    return path


def argv(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gatewayd.cli", "run", "-c", str(config), *extra]


ENV = {"PYTHONPATH": str(REPO)}


def run_gatewayd(ns: Netns, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return ns.run(argv(config, *extra), check=False, timeout=60, env=ENV)


def assert_one_clear_line(cp: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit 1, one 'gatewayd: ...' line naming the problem, no traceback, only logs else."""
    err = cp.stderr
    assert cp.returncode == 1, err
    assert "Traceback" not in err, err
    mine = [line for line in err.splitlines() if line.startswith("gatewayd: ")]
    assert len(mine) == 1, err
    for text in expected:
        assert text in mine[0], err
    others = [line for line in err.splitlines() if not line.startswith("gatewayd: ")]
    for line in others:  # the structured log, one event per line
        assert LOG_LINE.match(line) or line.startswith("{"), f"stray output: {line!r}"
    assert cp.stdout == ""
    return mine[0]


def ip_json(ns: Netns, *args: str) -> list[dict[str, Any]]:
    cp = ns.run(["ip", "-j", *args], check=False)
    if cp.returncode != 0:  # e.g. "FIB table does not exist": nothing there
        assert "does not exist" in cp.stderr or "Cannot find device" in cp.stderr, cp.stderr
        return []
    return json.loads(cp.stdout) if cp.stdout.strip() else []


def our_rules(ns: Netns) -> list[dict[str, Any]]:
    rules = ip_json(ns, "-4", "rule") + ip_json(ns, "-6", "rule")
    return [r for r in rules if r.get("fwmark") == hex(FWMARK) or r.get("table") == TABLE]


def table_routes(ns: Netns) -> list[dict[str, Any]]:
    return ip_json(ns, "-4", "route", "show", "table", TABLE) + ip_json(
        ns, "-6", "route", "show", "table", TABLE
    )


def links(ns: Netns) -> set[str]:
    return {link["ifname"] for link in ip_json(ns, "link", "show")}


def assert_nothing_left(ns: Netns, workdir: Path) -> None:
    assert IFNAME not in links(ns)
    assert our_rules(ns) == []
    assert table_routes(ns) == []
    assert not (workdir / "ctl.sock").exists()


# ------------------------------------------------------------------ failures


def test_invalid_config(ns: Netns, workdir: Path) -> None:
    path = workdir / "gw.toml"
    text = config_text(workdir / "ctl.sock").replace('"10.2.0.0/16"', '"10.2.0.0/33"')
    path.write_text(text.replace('name = "hub"', 'name = "hub"\nbogus = 1'))
    line = assert_one_clear_line(
        run_gatewayd(ns, path),
        "invalid config",
        "gateway.bogus: unknown key",
        "site[0].networks[0]: '10.2.0.0/33' is not an IP prefix",
    )
    assert PSK not in line
    assert_nothing_left(ns, workdir)


def test_missing_config_file(ns: Netns, workdir: Path) -> None:
    missing = workdir / "nowhere.toml"
    assert_one_clear_line(run_gatewayd(ns, missing), str(missing), "No such file")
    assert_nothing_left(ns, workdir)


@pytest.mark.parametrize("port", [500, 4500])
@pytest.mark.parametrize("log_format", ["console", "json"])
def test_port_already_in_use(ns: Netns, workdir: Path, port: int, log_format: str) -> None:
    holder = hold_udp_port(ns, ADDRESS, port)
    try:
        cp = run_gatewayd(ns, write_config(workdir), "--log-format", log_format)
    finally:
        holder.kill()
        holder.wait()
    assert_one_clear_line(cp, f"UDP {ADDRESS} port {port}", "Address already in use")
    assert_nothing_left(ns, workdir)


def hold_udp_port(ns: Netns, address: str, port: int) -> subprocess.Popen[str]:
    """Another program bound to the port, inside the namespace, until killed."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.bind(({address!r}, {port}))\n"
        "print('bound', flush=True)\n"
        "time.sleep(120)\n"
    )
    p = ns.popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "bound"
    return p


def test_address_not_on_this_host(ns: Netns, workdir: Path) -> None:
    cp = run_gatewayd(ns, write_config(workdir, address="192.0.2.99"))
    assert_one_clear_line(cp, "192.0.2.99", "Cannot assign requested address")
    assert_nothing_left(ns, workdir)


def test_interface_name_taken_by_another_device(ns: Netns, workdir: Path) -> None:
    ns.ip("link", "add", "name", IFNAME, "type", "veth", "peer", "name", "gwpeer0")
    cp = run_gatewayd(ns, write_config(workdir))
    assert_one_clear_line(cp, f"cannot open TUN device {IFNAME}", "not a TUN device")
    assert IFNAME in links(ns)  # somebody else's device: left alone
    assert our_rules(ns) == []


def test_control_socket_failure_after_the_rules_went_in(ns: Netns, workdir: Path) -> None:
    """The last start-up step fails: everything done before it must be undone."""
    (workdir / "file").write_text("a file where a directory should be\n")
    path = workdir / "gw.toml"
    path.write_text(config_text(workdir / "file" / "ctl.sock"))
    cp = run_gatewayd(ns, path)
    assert "policy rules installed" in cp.stderr  # it did get that far
    assert_one_clear_line(cp, "cannot open control socket", str(workdir / "file" / "ctl.sock"))
    assert_nothing_left(ns, workdir)


# ------------------------------------------------------------------ a running gateway


class Running:
    """A gatewayd in the background; its stderr goes to a file we can poll."""

    def __init__(self, ns: Netns, config: Path, log: Path) -> None:
        self.log = log
        self._file = log.open("w")
        self.proc = ns.popen(argv(config), stdout=subprocess.DEVNULL, stderr=self._file, env=ENV)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"gatewayd exited early:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text()}"
            time.sleep(0.05)

    def stop(self, timeout: float = 10) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._file.close()
        return rc, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._file.close()


@pytest.fixture
def running(ns: Netns, workdir: Path) -> Iterator[Running]:
    gw = Running(ns, write_config(workdir), workdir / "gatewayd.log")
    try:
        gw.wait_for("gateway ready")
        yield gw
    finally:
        gw.kill()


def test_clean_start_then_sigterm_leaves_nothing(
    ns: Netns, workdir: Path, running: Running
) -> None:
    (link,) = ip_json(ns, "-d", "link", "show", "dev", IFNAME)
    assert link["linkinfo"]["info_kind"] == "tun" and "UP" in link["flags"]
    rules = our_rules(ns)
    assert len(rules) == 2  # IPv4 and IPv6: "not fwmark 2000 lookup 2000"
    assert all("not" in r and r["fwmark"] == hex(FWMARK) and r["table"] == TABLE for r in rules)
    assert (workdir / "ctl.sock").is_socket()
    listening = ns.run(["ss", "-Hnul"]).stdout
    assert f"{ADDRESS}:500 " in listening and f"{ADDRESS}:4500 " in listening
    # A route through the tunnel, as a Child SA would have installed it.
    ns.ip("route", "add", "10.2.0.0/16", "dev", IFNAME, "table", TABLE)
    assert table_routes(ns) != []

    rc, took = running.stop()
    assert rc == 0, running.text()
    assert took < 5, f"SIGTERM took {took:.1f}s"
    log = running.text()
    assert "Traceback" not in log and "gateway stopped" in log
    assert_nothing_left(ns, workdir)


def test_a_second_gatewayd_fails_and_leaves_the_first_alone(
    ns: Netns, workdir: Path, running: Running
) -> None:
    """The same config started twice (say by hand beside systemd), on another TUN name."""
    second = write_config(workdir, "second.toml", interface="gwstart1")
    cp = run_gatewayd(ns, second)
    assert_one_clear_line(cp, f"UDP {ADDRESS} port 500", "Address already in use")
    assert running.proc.poll() is None
    assert len(our_rules(ns)) == 2  # the first one's bypass rules are still in place
    assert IFNAME in links(ns) and "gwstart1" not in links(ns)
    assert (workdir / "ctl.sock").is_socket()
    rc, _took = running.stop()
    assert rc == 0
    assert_nothing_left(ns, workdir)
