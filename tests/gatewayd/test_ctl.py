"""gatewayctl against a real ControlServer whose handler returns spec-shaped data.

The handler is a stub (the daemon is not part of this test): what is tested is the
CLI's protocol use, its rendering and its exit codes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd import ctl
from gatewayd.control import ControlError, ControlServer

STATUS: dict[str, Any] = {
    "gateway": {"name": "hub", "address": "192.0.2.1", "uptime_s": 3725.0},
    "sites": [
        {
            "name": "branch1",
            "state": "established",
            "ike_sa": {
                "spi_i": "8f0c1a2b3c4d5e6f",
                "spi_r": "12ab34cd56ef7890",
                "role": "initiator",
                "proposal": "AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384",
                "remote": "198.51.100.2:4500",
                "established_s": 3.1,
            },
            "child_sas": [
                {
                    "spi_in": "c1a2b3c4",
                    "spi_out": "7b3d9e0f",
                    "proposal": "AES_GCM_16_256",
                    "local_ts": ["10.1.0.0/16"],
                    "remote_ts": ["10.2.0.0/16", "10.3.0.0/16"],
                    "bytes_in": 1572864,
                    "bytes_out": 512,
                    "packets_in": 1100,
                    "packets_out": 7,
                    "established_s": 125.0,
                }
            ],
        },
        {"name": "lab-far-away", "state": "down", "ike_sa": None, "child_sas": []},
    ],
}
ROUTES = {
    "routes": [
        {"prefix": "10.2.0.0/16", "site": "branch1", "child_sa": "7b3d9e0f", "state": "up"},
        {"prefix": "2001:db8:2::/48", "site": "lab-far-away", "child_sa": None, "state": "down"},
    ]
}


class StubDaemon:
    """A ControlServer on its own event loop thread, answering like the daemon would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(path, self.handle)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def handle(self, cmd: str, args: dict[str, Any]) -> Any:
        self.calls.append((cmd, args))
        site = args.get("site")
        if site is not None and site not in ("branch1", "lab-far-away"):
            raise ControlError(f"unknown site {site!r}")
        if cmd == "status":
            return STATUS
        if cmd == "routes":
            return ROUTES
        if cmd == "up":
            return f"initiating {site}"
        return None

    def __enter__(self) -> StubDaemon:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="gwctl-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(sockdir: Path) -> Iterator[StubDaemon]:
    with StubDaemon(sockdir / "gatewayd.sock") as d:
        yield d


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = ctl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def columns(header: str, line: str, names: list[str]) -> dict[str, str]:
    """Cut `line` at the header's column starts (checks the alignment at the same time)."""
    starts = [header.index(n) for n in names] + [None]
    return {n: line[a:b].strip() for n, a, b in zip(names, starts, starts[1:], strict=False)}


def test_status_table(daemon: StubDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-s", str(daemon.path), "status")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "gateway hub  address 192.0.2.1  up 1h02m"

    site_header = next(i for i, line in enumerate(lines) if line.startswith("SITE  "))
    names = ["SITE", "STATE", "ROLE", "REMOTE", "IKE PROPOSAL", "ESTABLISHED"]
    header = lines[site_header]
    up = columns(header, lines[site_header + 1], names)
    assert up == {
        "SITE": "branch1",
        "STATE": "established",
        "ROLE": "initiator",
        "REMOTE": "198.51.100.2:4500",
        "IKE PROPOSAL": "AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384",
        "ESTABLISHED": "3s",
    }
    down = columns(header, lines[site_header + 2], names)
    assert down["SITE"] == "lab-far-away" and down["STATE"] == "down"
    assert down["REMOTE"] == "-" and down["IKE PROPOSAL"] == "-"

    child_header = next(i for i, line in enumerate(lines) if "SPI IN" in line)
    names = [
        "SITE",
        "SPI IN",
        "SPI OUT",
        "PROPOSAL",
        "TRAFFIC SELECTORS",
        "BYTES IN",
        "BYTES OUT",
        "PKTS IN",
        "PKTS OUT",
        "ESTABLISHED",
    ]
    child = lines[child_header + 1]
    header = lines[child_header]
    # Counters are right-aligned: their last characters line up with the header's.
    assert len(child) == len(header)
    cells = columns(header, child, names[:6])
    del cells["BYTES IN"]
    assert cells == {
        "SITE": "branch1",
        "SPI IN": "c1a2b3c4",
        "SPI OUT": "7b3d9e0f",
        "PROPOSAL": "AES_GCM_16_256",
        "TRAFFIC SELECTORS": "10.1.0.0/16 === 10.2.0.0/16,10.3.0.0/16",
    }
    assert child.split()[-7:] == ["1.5", "MiB", "512", "B", "1100", "7", "2m05s"]
    assert len(lines) == child_header + 2
    assert daemon.calls == [("status", {})]


def test_status_json_is_the_daemons_json(
    daemon: StubDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "-s", str(daemon.path), "status", "--json")
    assert code == 0
    assert json.loads(out) == STATUS


def test_status_without_sites_or_child_sas(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.render_status({"gateway": {"name": "hub"}, "sites": []}).endswith(
        "no sites configured"
    )
    only_down = {"gateway": {"name": "hub"}, "sites": [STATUS["sites"][1]]}
    assert ctl.render_status(only_down).endswith("no Child SAs")


def test_routes_table_and_json(daemon: StubDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-s", str(daemon.path), "routes")
    assert code == 0
    header, first, second = out.splitlines()
    names = ["PREFIX", "SITE", "CHILD SA", "STATE"]
    assert columns(header, first, names) == {
        "PREFIX": "10.2.0.0/16",
        "SITE": "branch1",
        "CHILD SA": "7b3d9e0f",
        "STATE": "up",
    }
    assert columns(header, second, names) == {
        "PREFIX": "2001:db8:2::/48",
        "SITE": "lab-far-away",
        "CHILD SA": "-",
        "STATE": "down",
    }
    code, out, _ = run(capsys, "-s", str(daemon.path), "routes", "--json")
    assert code == 0 and json.loads(out) == ROUTES


def test_routes_accepts_plain_list_and_spi_pairs() -> None:
    text = ctl.render_routes(
        [
            {
                "prefix": "0.0.0.0/0",
                "site": "s",
                "child_sa": {"spi_in": "aa", "spi_out": "bb"},
                "state": "up",
            }
        ]
    )
    assert text.splitlines()[1].split() == ["0.0.0.0/0", "s", "aa/bb", "up"]
    assert ctl.render_routes({"routes": []}) == "no routes"


def test_up_down_rekey_reload(daemon: StubDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    s = str(daemon.path)
    assert run(capsys, "-s", s, "up", "branch1") == (0, "initiating branch1\n", "")
    assert run(capsys, "-s", s, "down", "branch1") == (0, "down branch1: ok\n", "")
    assert run(capsys, "-s", s, "rekey", "branch1") == (0, "rekey branch1: ok\n", "")
    assert run(capsys, "-s", s, "rekey", "branch1", "--ike") == (0, "rekey --ike branch1: ok\n", "")
    assert run(capsys, "-s", s, "reload") == (0, "reload: ok\n", "")
    assert daemon.calls == [
        ("up", {"site": "branch1"}),
        ("down", {"site": "branch1"}),
        ("rekey", {"site": "branch1", "ike": False}),
        ("rekey", {"site": "branch1", "ike": True}),
        ("reload", {}),
    ]


def test_error_response_exits_1(daemon: StubDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-s", str(daemon.path), "up", "nowhere")
    assert (code, out) == (1, "")
    assert err == "gatewayctl: error: unknown site 'nowhere'\n"


def test_no_daemon_exits_3(sockdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = sockdir / "gatewayd.sock"
    code, out, err = run(capsys, "-s", str(path), "status")
    assert (code, out) == (3, "")
    assert err == f"gatewayctl: cannot connect to {path}: is gatewayd running?\n"


@pytest.mark.parametrize(
    "argv",
    [[], ["up"], ["frobnicate"], ["rekey"], ["status", "--yaml"], ["-t", "soon", "status"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert "usage: gatewayctl" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "status" in out and "rekey" in out


def test_socket_from_config(
    daemon: StubDaemon, sockdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = sockdir / "gatewayd.toml"
    cfg.write_text(
        '[gateway]\nname = "hub"\naddress = "192.0.2.1"\n'
        f'control_socket = "{daemon.path}"\n\n[[site]]\nname = "branch1"\n'
    )
    code, out, _ = run(capsys, "-c", str(cfg), "status", "--json")
    assert code == 0 and json.loads(out) == STATUS
    # -s wins over the config.
    code, _, err = run(capsys, "-c", str(cfg), "-s", str(sockdir / "other.sock"), "status")
    assert code == 3 and "other.sock" in err


def test_config_without_control_socket_uses_default(sockdir: Path) -> None:
    cfg = sockdir / "gatewayd.toml"
    cfg.write_text('[gateway]\nname = "hub"\n')
    assert ctl.resolve_socket(None, str(cfg)) == "/run/gatewayd/gatewayd.sock"


def test_missing_default_config_falls_back(monkeypatch: pytest.MonkeyPatch, sockdir: Path) -> None:
    monkeypatch.setattr(ctl, "DEFAULT_CONFIG", str(sockdir / "absent.toml"))
    assert ctl.resolve_socket(None, None) == "/run/gatewayd/gatewayd.sock"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("[gateway\n", "cannot read config"),
        ("[gateway]\ncontrol_socket = 5\n", "control_socket must be a non-empty string"),
    ],
)
def test_bad_explicit_config_exits_2(
    sockdir: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    cfg = sockdir / "gatewayd.toml"
    if content is not None:
        cfg.write_text(content)
    code, out, err = run(capsys, "-c", str(cfg), "status")
    assert (code, out) == (2, "")
    assert message in err


def test_duration_and_size_formatting() -> None:
    assert [ctl.duration(x) for x in (0, 59.9, 60, 3599, 3600, 86399, 90061, None)] == [
        "0s",
        "59s",
        "1m00s",
        "59m59s",
        "1h00m",
        "23h59m",
        "1d01h",
        "-",
    ]
    assert [ctl.size(x) for x in (0, 1023, 1024, 1536 * 1024, 5 * 2**40, None)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 MiB",
        "5.0 TiB",
        "-",
    ]
